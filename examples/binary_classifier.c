/* binary_classifier - the seed tutorial's 10-input MLP: Dense(128, relu) ->
   Dense(128, relu) -> Dense(1, sigmoid), Adam, binary cross-entropy, on a
   seeded synthetic set whose label is whether a fixed random hyperplane and a
   quadratic term put the point on the positive side. Prints test accuracy. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"

static void make_data(dl_dataset *d, int n, dl_rng *r, const float *plane)
{
    int shape[1] = { 10 }, i, j;
    dl_dataset_alloc(d, n, 1, shape, 1);
    for (i = 0; i < n; i++) {
        float s = 0.0f;
        for (j = 0; j < 10; j++) {
            float v = dl_rng_normal(r);
            d->x[i * 10 + j] = v;
            s += plane[j] * v;
        }
        s += 0.5f * d->x[i * 10] * d->x[i * 10 + 1];   /* not linearly separable */
        d->y[i] = s > 0.0f ? 1.0f : 0.0f;
    }
    d->n_classes = 2;
}

int main(void)
{
    float plane[10];
    int i;
    dl_rng r;
    dl_dataset train, test;
    dl_model *m;
    dl_fit_opts fo;
    dl_metrics mt;
    dl_rng_seed(&r, 7);
    for (i = 0; i < 10; i++) plane[i] = dl_rng_normal(&r);
    make_data(&train, 4000, &r, plane);
    make_data(&test, 1000, &r, plane);
    printf("dlcore isa %s\n", dl_isa_name());
    m = dl_sequential(DL_SHAPE(10));
    dl_model_seed(m, 1);
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dense(1, DL_SIGMOID));
    if (dl_compile(m, DL_LOSS_BCE, dl_adam(1e-3f)) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); return 1; }
    memset(&fo, 0, sizeof fo);
    fo.epochs = 10;
    fo.batch = 32;
    fo.validation_split = 0.1f;
    fo.progress = DL_PROGRESS_LINES;
    if (dl_fit(m, &train, &fo) != DL_OK || dl_evaluate(m, &test, &mt) != DL_OK) {
        fprintf(stderr, "%s\n", dl_last_error());
        return 1;
    }
    dl_metrics_print(&mt, stdout);
    printf("test_accuracy %.4f\n", (double)mt.accuracy);
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
    return mt.accuracy > 0.9f ? 0 : 1;
}
