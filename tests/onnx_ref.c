/* onnx_ref MODEL.dlc DIR N X.bin Y.bin - the first N samples of DIR's t10k split and
   what dl_predict returns for them, as raw little-endian float32, for tests/test_onnx.py
   to compare an exported ONNX graph against.
   onnx_ref --zoo OUT.dlc DIR - a CNN with every layer kind and option dlc export maps
   (same, explicit and valid pads, stride, dilation, depthwise groups, no bias, max and
   average pooling with padding, batch norm on images and on rows, global average
   pooling, reshape, dense on a 2-D sample, dropout), trained one epoch on DIR. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include <stdlib.h>

static int write_f32(const char *path, const float *v, size_t n)
{
    FILE *f = fopen(path, "wb");
    size_t i;
    int ok = f != NULL;
    for (i = 0; ok && i < n; i++) {
        uint32_t u;
        unsigned char c[4];
        memcpy(&u, &v[i], 4);
        c[0] = (unsigned char)u; c[1] = (unsigned char)(u >> 8); c[2] = (unsigned char)(u >> 16); c[3] = (unsigned char)(u >> 24);
        ok = fwrite(c, 1, 4, f) == 4;
    }
    if (f) ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

static int zoo(const char *out, const char *dir)
{
    dl_model *m = dl_sequential(dl_shape_make(28, 28, 0, 0));
    dl_dataset d;
    dl_conv2d_opts same = { 0 }, depthwise = { 0 }, strided = { 0 };
    dl_pool2d_opts pool_same = { 0 };
    dl_batch_norm_opts bn = { 0 };
    int rc;
    same.padding = DL_PAD_SAME;
    depthwise.groups = 8; depthwise.dil_h = depthwise.dil_w = 2; depthwise.no_bias = 1;
    depthwise.padding = DL_PAD_EXPLICIT;
    depthwise.pad_top = 1; depthwise.pad_bottom = 2; depthwise.pad_left = 2; depthwise.pad_right = 1;
    strided.stride_h = 2;
    pool_same.padding = DL_PAD_SAME;
    pool_same.stride_h = pool_same.stride_w = 2;
    bn.momentum = 0.5f;   /* the moving statistics move far from 0 and 1 in one epoch */
    dl_add(m, dl_conv2d(8, 3, 3, DL_RELU, &same));              /* 28x28x8 */
    dl_add(m, dl_batch_norm(&bn));
    dl_add(m, dl_conv2d(8, 3, 3, DL_LINEAR, &depthwise));       /* 27x27x8 */
    dl_add(m, dl_activation(DL_TANH));
    dl_add(m, dl_max_pool2d(3, 3, &pool_same));                 /* 14x14x8 */
    dl_add(m, dl_avg_pool2d(3, 3, &pool_same));                 /* 7x7x8, edge windows partial */
    dl_add(m, dl_conv2d(16, 3, 2, DL_LEAKY_RELU, &strided));    /* 3x6x16 */
    dl_add(m, dl_batch_norm(&bn));
    dl_add(m, dl_global_avg_pool2d());                          /* 16 */
    dl_add(m, dl_reshape(dl_shape_make(4, 4, 0, 0)));
    dl_add(m, dl_dense(6, DL_SIGMOID));                         /* 4x6, on the last axis */
    dl_add(m, dl_batch_norm(&bn));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dropout(0.1f));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    rc = dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f));
    if (rc == DL_OK) rc = dl_idx_load(&d, dir, "train");
    if (rc == DL_OK) {
        dl_fit_opts fo = { 0 };
        fo.epochs = 1; fo.batch = 16; fo.progress = DL_PROGRESS_NONE;
        rc = dl_fit(m, &d, &fo);
        dl_dataset_free(&d);
    }
    if (rc == DL_OK) rc = dl_save(m, out);
    if (rc != DL_OK) fprintf(stderr, "onnx_ref: %s\n", dl_last_error());
    dl_model_free(m);
    return rc == DL_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    dl_model *m;
    dl_dataset d;
    float *x, *y;
    int n;
    if (argc == 4 && !strcmp(argv[1], "--zoo")) return zoo(argv[2], argv[3]);
    if (argc != 6 || (n = atoi(argv[3])) < 1) { fprintf(stderr, "usage: onnx_ref MODEL.dlc DIR N X.bin Y.bin | onnx_ref --zoo OUT.dlc DIR\n"); return 2; }
    m = dl_load(argv[1]);
    if (!m || dl_idx_load(&d, argv[2], "t10k") != DL_OK) { fprintf(stderr, "onnx_ref: %s\n", dl_last_error()); return 1; }
    if (n > d.n) n = d.n;
    x = (float *)malloc((size_t)n * dl_input_size(m) * sizeof(float));
    y = (float *)malloc((size_t)n * dl_output_size(m) * sizeof(float));
    if (!x || !y || dl_dataset_get_x(&d, 0, n, x) != DL_OK || dl_predict(m, x, n, y) != DL_OK ||
        write_f32(argv[4], x, (size_t)n * dl_input_size(m)) || write_f32(argv[5], y, (size_t)n * dl_output_size(m))) {
        fprintf(stderr, "onnx_ref: %s\n", dl_last_error());
        return 1;
    }
    printf("%d samples, %d inputs, %d outputs\n", n, dl_input_size(m), dl_output_size(m));
    free(x); free(y);
    dl_dataset_free(&d);
    dl_model_free(m);
    return 0;
}
