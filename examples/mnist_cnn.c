/* mnist_cnn - the seeds' CNN in dlcore, Keras' layers with 'valid' padding:
   Conv2D(32, 3, relu) MaxPool(2) Conv2D(64, 3, relu) MaxPool(2) Conv2D(128, 3, relu)
   MaxPool(2) Flatten Dense(128, relu) Dense(10, softmax), Adam(1e-3), sparse
   categorical cross-entropy. Trains on an MNIST-format directory (28x28 images taken
   as 28x28x1), evaluates on its test split, optionally saves the model and a CSV log.

   usage: mnist_cnn [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]
                    [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet]
                    [--augment N] [--flip] [--train-samples N] [--batch-norm]
   --threads 0 (the default) uses every core. --augment N shifts each training image
   by up to N pixels (zero fill), --flip mirrors half of them; --train-samples N
   trains on the first N samples only (a short demo run); --batch-norm puts a
   BatchNormalization after each convolution (Keras' defaults).
   The last line of standard output is always
   "test_accuracy <f> test_loss <f> train_seconds <f>". */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#endif

/* Peak resident set size in MiB (getrusage's ru_maxrss is KiB on Linux), -1 if unknown. */
static double peak_rss_mib(void)
{
#if defined(__unix__) || defined(__APPLE__)
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
#ifdef __APPLE__
        return (double)ru.ru_maxrss / (1024.0 * 1024.0);
#else
        return (double)ru.ru_maxrss / 1024.0;
#endif
    }
#endif
    return -1.0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(const char *why)
{
    fprintf(stderr, "mnist_cnn: %s\nusage: mnist_cnn [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]"
                    " [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet]"
                    " [--augment N] [--flip] [--train-samples N] [--batch-norm]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *dir = "data/fashion-mnist", *save = NULL, *log = NULL;
    int epochs = 5, batch = 64, threads = 0, quiet = 0, profile = 0, augment = 0, flip = 0, limit = 0, bn = 0, i;
    unsigned long seed = 0;
    float lr = 1e-3f;
    dl_dataset train, test, part;
    dl_model *m;
    dl_fit_opts fo;
    dl_metrics mt;
    double t0, secs;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--flip")) { flip = 1; continue; }
        if (!strcmp(a, "--batch-norm")) { bn = 1; continue; }
        if (!v) return usage("missing value after an option");
        if (!strcmp(a, "--data")) dir = v;
        else if (!strcmp(a, "--save")) save = v;
        else if (!strcmp(a, "--log")) log = v;
        else if (!strcmp(a, "--epochs")) epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch")) batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--threads")) threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed")) seed = strtoul(v, &end, 10);
        else if (!strcmp(a, "--lr")) lr = strtof(v, &end);
        else if (!strcmp(a, "--augment")) augment = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--train-samples")) limit = (int)strtol(v, &end, 10);
        else return usage("unknown option");
        if (end && *end) return usage("option values must be numbers");
        i++;
    }
    if (epochs < 1 || batch < 1 || threads < 0 || !(lr > 0.0f)) return usage("epochs, batch and lr must be positive");
    if (augment < 0 || augment > 27 || limit < 0) return usage("--augment takes 0..27 pixels, --train-samples a count >= 0");
    if (dl_set_threads(threads) != DL_OK) { fprintf(stderr, "mnist_cnn: %s\n", dl_last_error()); return 1; }
    if (dl_idx_load(&train, dir, "train") != DL_OK || dl_idx_load(&test, dir, "t10k") != DL_OK) {
        fprintf(stderr, "mnist_cnn: %s\n(run `make data` to fetch Fashion-MNIST and the MNIST digits)\n", dl_last_error());
        return 1;
    }
    if (train.shape[0] != 28 || train.shape[1] != 28 || test.x_size != train.x_size || train.n_classes > 10) {
        fprintf(stderr, "mnist_cnn: %s holds %dx%d images with %d classes; this example expects 28x28 and 10 classes\n",
                dir, train.shape[0], train.shape[1], train.n_classes);
        return 1;
    }
    /* Pixels are k/255: as bytes they take a quarter of the memory, and the shuffled
       batches are gathered faster; training gives the same weights either way. */
    if (dl_dataset_pack_u8(&train) != DL_OK || dl_dataset_pack_u8(&test) != DL_OK)
        fprintf(stderr, "mnist_cnn: keeping the pixels as floats: %s\n", dl_last_error());
    printf("data %s: %d train, %d test samples%s; isa %s, %d thread%s\n", dir, train.n, test.n,
           train.x8 ? " (pixels as bytes)" : "", dl_isa_name(), dl_get_threads(), dl_get_threads() == 1 ? "" : "s");

    part = train;
    part.owned = 0;
    /* a shortened run: a view of the first `limit` samples */
    if (limit > 0 && limit < train.n && dl_dataset_split(&train, 0, limit, &part) == DL_OK)
        printf("training on the first %d samples\n", part.n);

    m = dl_sequential(DL_SHAPE(28, 28));
    dl_model_seed(m, seed);
    for (i = 0; i < 3; i++) {
        dl_add(m, dl_conv2d(32 << i, 3, 3, DL_RELU, NULL));
        if (bn) dl_add(m, dl_batch_norm(NULL));
        dl_add(m, dl_max_pool2d(2, 2, NULL));
    }
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(lr)) != DL_OK) { fprintf(stderr, "mnist_cnn: %s\n", dl_last_error()); return 1; }
    if (!quiet) dl_summary(m, stdout);

    memset(&fo, 0, sizeof fo);
    fo.epochs = epochs;
    fo.batch = batch;
    fo.csv_log = log;
    fo.progress = quiet ? DL_PROGRESS_NONE : DL_PROGRESS_AUTO;
    fo.profile = profile;
    fo.augment_shift = augment;
    fo.augment_flip = flip;
    t0 = now();
    if (dl_fit(m, &part, &fo) != DL_OK) { fprintf(stderr, "mnist_cnn: %s\n", dl_last_error()); return 1; }
    secs = now() - t0;
    if (dl_evaluate(m, &test, &mt) != DL_OK) { fprintf(stderr, "mnist_cnn: %s\n", dl_last_error()); return 1; }
    if (!quiet) dl_metrics_print(&mt, stdout);
    if (save) {
        if (dl_save(m, save) != DL_OK) { fprintf(stderr, "mnist_cnn: %s\n", dl_last_error()); return 1; }
        printf("saved %s\n", save);
    }
    if (peak_rss_mib() >= 0.0) printf("peak_rss_mib %.1f\n", peak_rss_mib());
    printf("test_accuracy %.4f test_loss %.4f train_seconds %.3f\n", (double)mt.accuracy, (double)mt.loss, secs);
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
    return 0;
}
