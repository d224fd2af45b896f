/* fuzz_model.c - model files from memory (dl_load's parser), built with
   DLCORE_FUZZ_NO_CRC so mutations reach past the checksum. A model that loads is
   then used as a user would: summary, predict, evaluate and one epoch of fit on a
   few samples, within DLCORE_MAX_ARENA (64 MiB here). Seeds: models of every layer
   kind, activation, loss, optimizer and schedule, trained briefly and saved with
   dl_save, and compressed ones (pruned, int8 dynamic and static, int8 conv kernels, fp16, and their
   combinations), so every tensor encoding has a seed. */
#include "fuzz.h"

static FILE *fuzz_null(void)
{
    static FILE *f;
    if (!f) f = fopen("/dev/null", "w");
    return f;
}

static void fuzz_use(dl_model *m)
{
    int in = dl_input_size(m), out = dl_output_size(m), i, shape[1];
    int ys = m->loss_kind == DL_LOSS_SPARSE_CE ? 1 : out;
    dl_dataset d;
    dl_fit_opts o;
    dl_metrics mt;
    float *x, *y;
    FILE *devnull = fuzz_null();
    if (devnull) dl_summary(m, devnull);
    if (in > (1 << 16) || out > (1 << 16)) return;   /* the fuzzer's own buffers stay small */
    x = (float *)calloc((size_t)3 * in, sizeof(float));
    y = (float *)calloc((size_t)3 * out, sizeof(float));
    if (x && y) {
        for (i = 0; i < 3 * in; i++) x[i] = (float)(i % 7) * 0.25f - 0.5f;
        (void)dl_predict(m, x, 3, y);
    }
    free(x);
    free(y);
    /* Targets valid for every loss: class 0, or zeros. */
    shape[0] = in;
    if (dl_dataset_alloc(&d, 4, 1, shape, ys) != DL_OK) return;
    for (i = 0; i < 4 * in; i++) d.x[i] = (float)(i % 5) * 0.5f - 1.0f;
    d.n_classes = m->loss_kind == DL_LOSS_SPARSE_CE ? out : 0;
    (void)dl_evaluate(m, &d, &mt);
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = 2;
    o.progress = DL_PROGRESS_NONE;
    o.out = devnull;
    (void)dl_fit(m, &d, &o);
    dl_dataset_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dl_model *m = dl__load_mem(data, size, "fuzz.dlc");
    if (!m) return 0;
    fuzz_use(m);
    dl_model_free(m);
    return 0;
}

#ifdef FUZZ_SEEDS
enum { FUZZ_PLAIN, FUZZ_FP16, FUZZ_PRUNED, FUZZ_PRUNED_INT8, FUZZ_INT8_STATIC, FUZZ_PRUNED_FP16 };

/* Trains briefly, compresses as asked, saves: every tensor encoding gets a seed. */
static void fuzz_model_seed(const char *name, dl_model *m, int loss, dl_optimizer opt, int compress)
{
    char path[1024];
    unsigned char *bytes;
    size_t n;
    dl_dataset d;
    dl_fit_opts o;
    int i, shape[1], out, ys;
    dl_model_seed(m, 7);
    if (dl_compile(m, loss, opt) != DL_OK) { fprintf(stderr, "fuzz seeds %s: %s\n", name, dl_last_error()); fuzz__failed = 1; dl_model_free(m); return; }
    out = dl_output_size(m);
    ys = loss == DL_LOSS_SPARSE_CE ? 1 : out;
    shape[0] = dl_input_size(m);
    dl_dataset_alloc(&d, 8, 1, shape, ys);
    for (i = 0; i < 8 * shape[0]; i++) d.x[i] = (float)((i * 7) % 11) / 11.0f;
    for (i = 0; i < 8 * ys; i++) d.y[i] = loss == DL_LOSS_SPARSE_CE ? (float)(i % out) : (float)(i % 2);
    memset(&o, 0, sizeof o);
    o.epochs = 2; o.batch = 4; o.progress = DL_PROGRESS_NONE;
    snprintf(path, sizeof path, "%s/%s", fuzz__dir, name);
    if (dl_fit(m, &d, &o) != DL_OK
        || ((compress == FUZZ_PRUNED || compress == FUZZ_PRUNED_INT8 || compress == FUZZ_PRUNED_FP16)
            && dl_prune(m, &(dl_prune_opts){ .sparsity = 0.6f }, NULL, NULL) != DL_OK)
        || ((compress == FUZZ_FP16 || compress == FUZZ_PRUNED_FP16) && dl_model_to_fp16(m) != DL_OK)
        || (compress == FUZZ_PRUNED_INT8 && dl_quantize_int8(m, NULL) != DL_OK)
        || (compress == FUZZ_INT8_STATIC && dl_quantize_int8(m, &(dl_quant_opts){ .calib = &d, .calib_batches = 2 }) != DL_OK)
        || dl_save(m, path) != DL_OK || dl_read_file(path, &bytes, &n) != DL_OK) {
        fprintf(stderr, "fuzz seeds %s: %s\n", name, dl_last_error());
        fuzz__failed = 1;
    } else {
        fuzz__written++;
        dl_free(bytes);
    }
    dl_dataset_free(&d);
    dl_model_free(m);
}

static void fuzz_seeds(void)
{
    dl_model *m;
    dl_optimizer o;
    m = dl_sequential(DL_SHAPE(4));
    dl_add(m, dl_dense(5, DL_RELU)); dl_add(m, dl_dense(3, DL_SOFTMAX));
    fuzz_model_seed("mlp-softmax-adam.dlc", m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f), FUZZ_PLAIN);
    m = dl_sequential(DL_SHAPE(2, 3));
    dl_add(m, dl_flatten()); dl_add(m, dl_dense(4, DL_TANH)); dl_add(m, dl_dropout(0.25f));
    dl_add(m, dl_dense(2, DL_SIGMOID));
    o = dl_sgd(0.1f, 0.9f); o.nesterov = 1; o.schedule = DL_SCHED_STEP; o.step_size = 1; o.gamma = 0.5f;
    fuzz_model_seed("flatten-dropout-bce-sgd.dlc", m, DL_LOSS_BCE, o, FUZZ_PLAIN);
    m = dl_sequential(DL_SHAPE(3));
    {
        dl_layer l = dl_dense(4, DL_LEAKY_RELU);
        l.alpha = 0.2f;
        dl_add(m, l);
    }
    dl_add(m, dl_activation(DL_RELU)); dl_add(m, dl_dense(2, DL_LINEAR));
    o = dl_adamw(1e-3f, 1e-2f); o.schedule = DL_SCHED_COSINE; o.t_max = 4; o.lr_min = 1e-5f;
    o.clip_norm = 1.0f; o.l2 = 1e-4f; o.l1 = 1e-5f;
    fuzz_model_seed("leaky-mse-adamw-cosine.dlc", m, DL_LOSS_MSE, o, FUZZ_FP16);
    m = dl_sequential(DL_SHAPE(2, 2, 2));
    dl_add(m, dl_dense(3, DL_SIGMOID)); dl_add(m, dl_flatten()); dl_add(m, dl_dense(2, DL_SOFTMAX));
    fuzz_model_seed("rank3-dense-softmax.dlc", m, DL_LOSS_SPARSE_CE, dl_sgd(0.05f, 0.0f), FUZZ_PLAIN);
    {
        static const int kinds[] = { FUZZ_PRUNED, FUZZ_PRUNED_INT8, FUZZ_INT8_STATIC, FUZZ_PRUNED_FP16 };
        static const char *const names[] = { "mlp-pruned.dlc", "mlp-pruned-int8.dlc", "mlp-int8-static.dlc", "mlp-pruned-fp16.dlc" };
        int k;
        for (k = 0; k < 4; k++) {
            m = dl_sequential(DL_SHAPE(12));
            dl_add(m, dl_dense(16, DL_RELU)); dl_add(m, dl_dense(3, DL_SOFTMAX));
            fuzz_model_seed(names[k], m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f), kinds[k]);
        }
    }
    /* Every convolutional layer kind, with batch norm's moving statistics. */
    m = dl_sequential(DL_SHAPE(8, 8));
    dl_add(m, dl_conv2d(4, 3, 3, DL_RELU, &(dl_conv2d_opts){ .padding = DL_PAD_SAME }));
    dl_add(m, dl_batch_norm(NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_conv2d(4, 3, 3, DL_LINEAR, &(dl_conv2d_opts){ .groups = 4, .dil_h = 1, .padding = DL_PAD_EXPLICIT,
                                                               .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1, .no_bias = 1 }));
    dl_add(m, dl_avg_pool2d(2, 2, &(dl_pool2d_opts){ .stride_h = 1, .stride_w = 1 }));
    dl_add(m, dl_conv2d(6, 1, 1, DL_RELU, &(dl_conv2d_opts){ .stride_h = 2, .stride_w = 2 }));
    dl_add(m, dl_global_avg_pool2d());
    dl_add(m, dl_reshape(DL_SHAPE(2, 3)));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    fuzz_model_seed("cnn-bn-pools.dlc", m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f), FUZZ_PLAIN);
    /* int8 conv kernels (4-D int8 tensors) beside a depthwise one that stays f32 */
    m = dl_sequential(DL_SHAPE(8, 8));
    dl_add(m, dl_conv2d(4, 3, 3, DL_RELU, &(dl_conv2d_opts){ .padding = DL_PAD_SAME }));
    dl_add(m, dl_conv2d(4, 3, 3, DL_RELU, &(dl_conv2d_opts){ .groups = 4 }));
    dl_add(m, dl_batch_norm(NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    fuzz_model_seed("cnn-int8-static.dlc", m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f), FUZZ_INT8_STATIC);
}
#endif
