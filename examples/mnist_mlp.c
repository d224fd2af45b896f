/* mnist_mlp - the Keras MNIST MLP in dlcore: Flatten(28x28) -> Dense(128, relu)
   -> Dropout(0.2) -> Dense(10, softmax), Adam(1e-3), sparse categorical
   cross-entropy. Trains on an MNIST-format directory, evaluates on its test
   split, optionally saves the model and a CSV log.

   usage: mnist_mlp [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]
                    [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet]
   --threads 0 (the default) uses every core.
   The last line of standard output is always
   "test_accuracy <f> test_loss <f> train_seconds <f>". */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(const char *why)
{
    fprintf(stderr, "mnist_mlp: %s\nusage: mnist_mlp [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]"
                    " [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *dir = "data/fashion-mnist", *save = NULL, *log = NULL;
    int epochs = 5, batch = 32, threads = 0, quiet = 0, profile = 0, i;
    unsigned long seed = 0;
    float lr = 1e-3f;
    dl_dataset train, test;
    dl_model *m;
    dl_fit_opts fo;
    dl_metrics mt;
    double t0, secs;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!v) return usage("missing value after an option");
        if (!strcmp(a, "--data")) dir = v;
        else if (!strcmp(a, "--save")) save = v;
        else if (!strcmp(a, "--log")) log = v;
        else if (!strcmp(a, "--epochs")) epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch")) batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--threads")) threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed")) seed = strtoul(v, &end, 10);
        else if (!strcmp(a, "--lr")) lr = strtof(v, &end);
        else return usage("unknown option");
        if (end && *end) return usage("option values must be numbers");
        i++;
    }
    if (epochs < 1 || batch < 1 || threads < 0 || !(lr > 0.0f)) return usage("epochs, batch and lr must be positive");
    if (dl_set_threads(threads) != DL_OK) { fprintf(stderr, "mnist_mlp: %s\n", dl_last_error()); return 1; }
    if (dl_idx_load(&train, dir, "train") != DL_OK || dl_idx_load(&test, dir, "t10k") != DL_OK) {
        fprintf(stderr, "mnist_mlp: %s\n(run `make data` to fetch Fashion-MNIST and the MNIST digits)\n", dl_last_error());
        return 1;
    }
    if (train.shape[0] != 28 || train.shape[1] != 28 || test.x_size != train.x_size || train.n_classes > 10) {
        fprintf(stderr, "mnist_mlp: %s holds %dx%d images with %d classes; this example expects 28x28 and 10 classes\n",
                dir, train.shape[0], train.shape[1], train.n_classes);
        return 1;
    }
    /* Pixels are k/255: as bytes they take a quarter of the memory, and the shuffled
       batches are gathered faster; training gives the same weights either way. */
    if (dl_dataset_pack_u8(&train) != DL_OK || dl_dataset_pack_u8(&test) != DL_OK)
        fprintf(stderr, "mnist_mlp: keeping the pixels as floats: %s\n", dl_last_error());
    printf("data %s: %d train, %d test samples%s; isa %s, %d thread%s\n", dir, train.n, test.n,
           train.x8 ? " (pixels as bytes)" : "", dl_isa_name(), dl_get_threads(), dl_get_threads() == 1 ? "" : "s");

    m = dl_sequential(DL_SHAPE(28, 28));
    dl_model_seed(m, seed);
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dropout(0.2f));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(lr)) != DL_OK) { fprintf(stderr, "mnist_mlp: %s\n", dl_last_error()); return 1; }
    if (!quiet) dl_summary(m, stdout);

    memset(&fo, 0, sizeof fo);
    fo.epochs = epochs;
    fo.batch = batch;
    fo.csv_log = log;
    fo.progress = quiet ? DL_PROGRESS_NONE : DL_PROGRESS_AUTO;
    fo.profile = profile;
    t0 = now();
    if (dl_fit(m, &train, &fo) != DL_OK) { fprintf(stderr, "mnist_mlp: %s\n", dl_last_error()); return 1; }
    secs = now() - t0;
    if (dl_evaluate(m, &test, &mt) != DL_OK) { fprintf(stderr, "mnist_mlp: %s\n", dl_last_error()); return 1; }
    if (!quiet) dl_metrics_print(&mt, stdout);
    if (save) {
        if (dl_save(m, save) != DL_OK) { fprintf(stderr, "mnist_mlp: %s\n", dl_last_error()); return 1; }
        printf("saved %s\n", save);
    }
    printf("test_accuracy %.4f test_loss %.4f train_seconds %.3f\n", (double)mt.accuracy, (double)mt.loss, secs);
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
    return 0;
}
