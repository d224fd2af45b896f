/* linear_regression - the seed tutorial's 2-input linear model: y = 3 x0 - 2 x1 + 0.5
   plus noise, fitted by gradient descent on the mean squared error. Prints the
   recovered weights next to the true ones; exits non-zero if they are off. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"

int main(void)
{
    const float true_w[2] = { 3.0f, -2.0f }, true_b = 0.5f;
    int shape[1] = { 2 }, i, ok;
    dl_dataset d;
    dl_rng r;
    dl_model *m;
    dl_fit_opts fo;
    dl_tensor w, b;
    dl_graph *g;
    if (dl_dataset_alloc(&d, 1000, 1, shape, 1) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); return 1; }
    dl_rng_seed(&r, 42);
    for (i = 0; i < d.n; i++) {
        float x0 = 2.0f * dl_rng_uniform(&r) - 1.0f, x1 = 2.0f * dl_rng_uniform(&r) - 1.0f;
        d.x[2 * i] = x0;
        d.x[2 * i + 1] = x1;
        d.y[i] = true_w[0] * x0 + true_w[1] * x1 + true_b + 0.01f * dl_rng_normal(&r);
    }
    printf("dlcore isa %s\n", dl_isa_name());
    m = dl_sequential(DL_SHAPE(2));
    dl_add(m, dl_dense(1, DL_LINEAR));
    if (dl_compile(m, DL_LOSS_MSE, dl_sgd(0.1f, 0.0f)) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); return 1; }
    memset(&fo, 0, sizeof fo);
    fo.epochs = 20;
    fo.batch = 32;
    fo.progress = DL_PROGRESS_LINES;
    if (dl_fit(m, &d, &fo) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); return 1; }
    g = dl_model_graph(m);
    w = dl_node_value(g, dl_graph_param(g, 0));
    b = dl_node_value(g, dl_graph_param(g, 1));
    printf("          learned   true\n");
    printf("w0      %9.4f %6.2f\n", (double)w.data[0], (double)true_w[0]);
    printf("w1      %9.4f %6.2f\n", (double)w.data[1], (double)true_w[1]);
    printf("bias    %9.4f %6.2f\n", (double)b.data[0], (double)true_b);
    ok = fabsf(w.data[0] - true_w[0]) < 0.02f && fabsf(w.data[1] - true_w[1]) < 0.02f && fabsf(b.data[0] - true_b) < 0.02f;
    printf("%s\n", ok ? "recovered the true weights" : "FAILED to recover the true weights");
    dl_model_free(m);
    dl_dataset_free(&d);
    return ok ? 0 : 1;
}
