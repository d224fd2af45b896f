/* Bad data, bad files and bad arguments, tried for real: each is refused with a
   message that says what and where, before it can do harm. Built with a small
   DLCORE_MAX_ARENA (8 MiB) so the arena bound is reached with small models. */
#define DLCORE_MAX_ARENA ((size_t)8 << 20)
#include "dltest_alloc.h"
#include "dltest.h"

#define TMP "build/test_harden.tmp"

static dl_model *mlp(uint64_t seed, dl_optimizer opt)
{
    dl_model *m = dl_sequential(DL_SHAPE(8));
    dl_model_seed(m, seed);
    dl_add(m, dl_dense(16, DL_RELU));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, opt) != DL_OK) fprintf(stderr, "%s\n", dl_last_error());
    return m;
}

static dl_fit_opts quiet(int epochs, int batch)
{
    dl_fit_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = epochs;
    o.batch = batch;
    o.progress = DL_PROGRESS_NONE;
    return o;
}

/* Three Gaussian blobs in 8 dimensions, labelled 0..2. */
static void blobs(dl_dataset *d, int n, uint64_t seed)
{
    dl_rng r;
    int i, j, shape[1] = { 8 };
    dl_dataset_alloc(d, n, 1, shape, 1);
    dl_rng_seed(&r, seed);
    for (i = 0; i < n; i++) {
        int c = (int)dl_rng_below(&r, 3);
        for (j = 0; j < 8; j++) d->x[i * 8 + j] = (j % 3 == c ? 1.5f : 0.0f) + 0.7f * dl_rng_normal(&r);
        d->y[i] = (float)c;
    }
    d->n_classes = 3;
}

/* Every weight of a and b, bit for bit. */
static int same_weights(dl_model *a, dl_model *b)
{
    dl_graph *ga = dl_model_graph(a), *gb = dl_model_graph(b);
    int i;
    if (dl_graph_param_count(ga) != dl_graph_param_count(gb) || dl_graph_param_count(ga) < 1) return 0;
    for (i = 0; i < dl_graph_param_count(ga); i++) {
        dl_tensor ta = dl_node_value(ga, dl_graph_param(ga, i)), tb = dl_node_value(gb, dl_graph_param(gb, i));
        if (dl_shape_numel(ta.shape) != dl_shape_numel(tb.shape) ||
            memcmp(ta.data, tb.data, dl_shape_numel(ta.shape) * sizeof(float)) != 0) return 0;
    }
    return 1;
}

static float *weight(dl_model *m, int i) { return dl_node_value(dl_model_graph(m), dl_graph_param(dl_model_graph(m), i)).data; }

/* ---- non-finite values ------------------------------------------------------------ */

DL_TEST(nonfinite_scan_of_every_isa_matches_the_scalar_loop)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    static float x[300];
    const float bad[3] = { NAN, INFINITY, -INFINITY };
    int k, ran = 0;
    size_t n, at, b;
    for (k = 0; k < 4; k++) {
        int ok = 1;
        if (dl_set_isa(isas[k]) != DL_OK) continue;
        ran++;
        for (n = 0; n < 300; n += n < 70 ? 1 : 29) {
            for (at = 0; at < 300; at++) x[at] = (float)at * 1e30f;   /* large but finite, FLT_MAX too */
            x[299] = 3.4028235e38f;
            if (dl__find_nonfinite(x, n) != n) ok = 0;
            for (at = 0; at < n; at++)
                for (b = 0; b < 3; b++) {
                    x[at] = bad[b];
                    if (at + 1 < n) x[n - 1] = NAN;   /* a later hit must not win */
                    if (dl__find_nonfinite(x, n) != at || dl__nonfinite_scalar(x, 0, n) != at) ok = 0;
                    x[at] = 1.0f;
                    if (at + 1 < n) x[n - 1] = 1.0f;
                }
        }
        if (!ok) DL_FAILF("%s: wrong index", isas[k]);
        DL_CHECK(ok);
    }
    dl_set_isa(NULL);
    DL_CHECK(ran >= 1);
}

DL_TEST(a_nan_or_inf_in_the_data_is_refused_naming_sample_and_feature)
{
    dl_dataset d;
    dl_model *m = mlp(1, dl_adam(1e-2f)), *ref = mlp(1, dl_adam(1e-2f));
    dl_fit_opts o = quiet(1, 32);
    dl_metrics mt;
    float out[3 * 3];
    blobs(&d, 1000, 1);
    d.x[517 * 8 + 5] = NAN;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_fit: sample 517, feature 5 is nan");
    DL_CHECK(same_weights(m, ref));                          /* refused before any step */
    DL_CHECK_EQ_INT(dl_evaluate(m, &d, &mt), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_evaluate: sample 517, feature 5");
    DL_CHECK_EQ_INT(dl_predict(m, d.x + 516 * 8, 3, out), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_predict: sample 1, feature 5 is nan");
    /* an int8 model checks its input while it quantizes it: the same message, on every
       ISA, past the first chunk of rows too */
    {
        static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
        dl_model *q = mlp(1, dl_adam(1e-2f));
        float *big = (float *)malloc(sizeof(float) * 300 * 3);
        int t;
        DL_CHECK_EQ_INT(dl_quantize_int8(q, NULL), DL_OK);
        for (t = 0; t < 4; t++) {
            if (dl_set_isa(isas[t]) != DL_OK) continue;
            DL_CHECK_EQ_INT(dl_predict(q, d.x + 516 * 8, 3, out), DL_ERR);
            DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_predict: sample 1, feature 5 is nan");
            d.x[800 * 8 + 2] = INFINITY;
            DL_CHECK_EQ_INT(dl_predict(q, d.x + 420 * 8, 300, big), DL_ERR);   /* chunks: rows 0-255, 256-299 */
            DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_predict: sample 97, feature 5 is nan");
            DL_CHECK_EQ_INT(dl_predict(q, d.x + 518 * 8, 300, big), DL_ERR);   /* found in the second chunk */
            DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_predict: sample 282, feature 2 is inf");
            d.x[800 * 8 + 2] = 0.0f;
            DL_CHECK_EQ_INT(dl_predict(q, d.x + 518 * 8, 300, big), DL_OK);
        }
        dl_set_isa(NULL);
        free(big);
        dl_model_free(q);
    }
    d.x[517 * 8 + 5] = 0.0f;
    d.x[999 * 8 + 7] = -INFINITY;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "sample 999, feature 7 is -inf");
    d.x[999 * 8 + 7] = 0.0f;
    /* in a validation set too */
    {
        dl_dataset v;
        blobs(&v, 50, 2);
        v.x[3] = INFINITY;
        o.validation = &v;
        DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "validation set): sample 0, feature 3 is inf");
        o.validation = NULL;
        dl_dataset_free(&v);
    }
    DL_CHECK(same_weights(m, ref));
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);                /* clean data trains */
    dl_model_free(m); dl_model_free(ref);
    dl_dataset_free(&d);
}

DL_TEST(labels_and_targets_are_range_checked_before_use)
{
    dl_dataset d;
    dl_model *m = mlp(2, dl_adam(1e-2f)), *b;
    dl_fit_opts o = quiet(1, 32);
    dl_metrics mt;
    int i;
    blobs(&d, 100, 3);
    d.y[40] = NAN;       /* (int)NaN would be undefined behaviour */
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "label nan of sample 40 is not a class in [0, 3)");
    d.y[40] = 1e10f;
    DL_CHECK_EQ_INT(dl_evaluate(m, &d, &mt), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "sample 40");
    d.y[40] = 1.5f;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "label 1.5 of sample 40");
    d.y[40] = -1.0f;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    d.y[40] = 2.0f;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    /* Binary cross-entropy takes targets in [0, 1] only: 0..6 gave a negative loss. */
    b = dl_sequential(DL_SHAPE(8));
    dl_add(b, dl_dense(1, DL_SIGMOID));
    DL_CHECK_EQ_INT(dl_compile(b, DL_LOSS_BCE, dl_adam(1e-2f)), DL_OK);
    for (i = 0; i < 100; i++) d.y[i] = (float)(i % 7);
    DL_CHECK_EQ_INT(dl_fit(b, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "target 0 of sample 2 is 2; binary cross-entropy needs targets in [0, 1]");
    DL_CHECK_EQ_INT(dl_evaluate(b, &d, &mt), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_evaluate: target 0 of sample 2");
    for (i = 0; i < 100; i++) d.y[i] = (float)(i % 3 == 0) * 0.75f;   /* soft targets are fine */
    DL_CHECK_EQ_INT(dl_fit(b, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_evaluate(b, &d, &mt), DL_OK);
    DL_CHECK(mt.loss > 0.0f);
    dl_model_free(m); dl_model_free(b);
    dl_dataset_free(&d);
}

DL_TEST(a_nonfinite_weight_stops_fit_naming_the_parameter)
{
    /* A weight of -inf on an input that is always positive: its ReLU unit sees -inf
       and outputs 0 (on every ISA; a NaN would pass NEON's max), so the loss stays
       finite, the unit's gradient is 0 and the weight stays -inf. Only the weight
       check can see it. */
    dl_dataset d;
    dl_model *m = mlp(3, dl_adam(1e-2f));
    dl_fit_opts o = quiet(3, 32);
    const dl_history_row *h;
    int i;
    blobs(&d, 200, 4);
    for (i = 0; i < 200; i++) d.x[i * 8 + 5] = 1.0f + fabsf(d.x[i * 8 + 5]);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    weight(m, 0)[5 * 16 + 9] = -INFINITY;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "parameter 'dense_1.w' holds -inf at element 89");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "after epoch 1");
    DL_CHECK_EQ_INT(dl_history(m, &h), 0);   /* the failed epoch left no row */
    dl_model_free(m);
    dl_dataset_free(&d);
}

/* ---- dl_fit's arguments and history ------------------------------------------------ */

DL_TEST(history_stays_consistent_after_a_failed_fit)
{
    dl_dataset d;
    dl_model *m = mlp(4, dl_adam(1e-2f));
    dl_fit_opts o = quiet(10, 32);
    const dl_history_row *h;
    dl_history_row first[10];
    blobs(&d, 100, 5);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_history(m, &h), 10);
    memcpy(first, h, sizeof first);
    /* A 1-epoch fit that cannot open its log: the history may not shrink under its count. */
    o.epochs = 1;
    o.csv_log = "build/no/such/dir/log.csv";
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/no/such/dir/log.csv");
    /* The previous fit's rows, readable in full (ASan sees a read past them). */
    DL_CHECK_EQ_INT(dl_history(m, &h), 10);
    DL_CHECK(memcmp(h, first, sizeof first) == 0);
    o.csv_log = NULL;
    o.epochs = 3;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_history(m, &h), 3);
    DL_CHECK(h[2].loss > 0.0f && h[2].loss == h[2].loss);
    dl_model_free(m);
    dl_dataset_free(&d);
}

DL_TEST(negative_epochs_or_batch_and_bad_optimizers_are_errors)
{
    dl_dataset d;
    dl_model *m = mlp(5, dl_adam(1e-2f)), *u;
    dl_fit_opts o = quiet(-1, 32);
    dl_optimizer bad;
    const dl_history_row *h;
    blobs(&d, 64, 6);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "epochs -1");
    o = quiet(1, -5);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "batch -5");
    DL_CHECK_EQ_INT(dl_history(m, &h), 0);
    o = quiet(0, 0);                                  /* 0 still means the defaults */
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_history(m, &h), 1);
    {
        struct { dl_optimizer o; const char *msg; } cases[8];
        int i;
        cases[0].o = dl_adam(NAN);            cases[0].msg = "optimizer lr is nan";
        cases[1].o = dl_adam(-1.0f);          cases[1].msg = "optimizer lr is -1";
        cases[2].o = dl_adam(1e-3f);          cases[2].o.beta1 = 5.0f; cases[2].msg = "optimizer beta1 is 5; it must be in [0, 1)";
        cases[3].o = dl_adam(1e-3f);          cases[3].o.beta2 = 1.0f; cases[3].msg = "beta2 is 1";
        cases[4].o = dl_sgd(0.1f, -0.5f);     cases[4].msg = "momentum is -0.5";
        cases[5].o = dl_sgd(0.1f, 0.9f);      cases[5].o.nesterov = 3; cases[5].msg = "nesterov is 3";
        cases[6].o = dl_adam(1e-3f);          cases[6].o.schedule = 9; cases[6].msg = "unknown optimizer schedule 9";
        cases[7].o = dl_adamw(1e-3f, INFINITY); cases[7].msg = "weight_decay is inf";
        for (i = 0; i < 8; i++) {
            u = dl_sequential(DL_SHAPE(8));
            dl_add(u, dl_dense(2, DL_LINEAR));
            DL_CHECK_EQ_INT(dl_compile(u, DL_LOSS_MSE, cases[i].o), DL_ERR);
            DL_CHECK_STR_CONTAINS(dl_last_error(), cases[i].msg);
            DL_CHECK_STR_CONTAINS(dl_last_error(), "dl_compile: ");
            dl_model_free(u);
        }
    }
    bad = dl_adam(0.0f);   /* lr 0 is allowed: a frozen model */
    u = dl_sequential(DL_SHAPE(8));
    dl_add(u, dl_dense(2, DL_LINEAR));
    DL_CHECK_EQ_INT(dl_compile(u, DL_LOSS_MSE, bad), DL_OK);
    dl_model_free(u);
    /* A dense layer of 0 units, on a model not yet compiled (so the units are what is checked). */
    u = dl_sequential(DL_SHAPE(8));
    DL_CHECK_EQ_INT(dl_add(u, dl_dense(0, DL_RELU)), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dense layer with 0 units");
    {
        dl_layer l = dl_dense(4, DL_LEAKY_RELU);
        l.alpha = NAN;
        DL_CHECK_EQ_INT(dl_add(u, l), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "leaky ReLU slope nan");
    }
    dl_model_free(u);
    dl_model_free(m);
    dl_dataset_free(&d);
}

/* ---- the activation arena ------------------------------------------------------------ */

DL_TEST(the_arena_is_planned_at_first_use_within_the_bound)
{
    /* 4096 x 3 inputs: ~0.16 MB of activations per sample, so batch 256 passes the
       8 MiB bound of this build while small batches fit. */
    dl_model *m = dl_sequential(DL_SHAPE(4096, 3));
    dl_dataset d;
    dl_fit_opts o = quiet(1, 256);
    dl_metrics mt;
    int shape[2] = { 4096, 3 }, i;
    float *out;
    dl_add(m, dl_dense(4, DL_RELU));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(2, DL_SOFTMAX));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)), DL_OK);
    DL_CHECK_EQ_INT((long long)dl_graph_arena_bytes(dl_model_graph(m)), 0);   /* nothing planned yet */
    dl_dataset_alloc(&d, 40, 2, shape, 1);
    for (i = 0; i < 40 * 4096 * 3; i++) d.x[i] = (float)(i % 13) / 13.0f;
    for (i = 0; i < 40; i++) d.y[i] = (float)(i % 2);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "batch 256 needs a");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "DLCORE_MAX_ARENA limit of 8388608 bytes");
    o.batch = 8;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK(dl_graph_arena_bytes(dl_model_graph(m)) > 0);
    DL_CHECK(dl_graph_arena_bytes(dl_model_graph(m)) <= ((size_t)8 << 20));
    /* Evaluation and prediction pick a batch that fits. */
    DL_CHECK_EQ_INT(dl_evaluate(m, &d, &mt), DL_OK);
    DL_CHECK_EQ_INT(mt.n, 40);
    out = (float *)malloc(40 * 2 * sizeof(float));
    DL_CHECK_EQ_INT(dl_predict(m, d.x, 40, out), DL_OK);
    DL_CHECK_NEAR(out[78] + out[79], 1.0, 1e-5);
    free(out);
    DL_CHECK(dl_graph_arena_bytes(dl_model_graph(m)) <= ((size_t)8 << 20));
    dl_dataset_free(&d);
    dl_model_free(m);
    /* A graph whose claimed size would wrap a size_t sum is refused too, allocating nothing. */
    {
        dl_graph *g = dl_graph_new(1);
        int x = dl_input(g, "x", DL_SHAPE(1 << 24, 1 << 6)), w = dl_param(g, "w", DL_SHAPE(1 << 6, 1 << 8), DL_INIT_ZEROS);
        int y = dl_op_sum(g, dl_op_matmul(g, x, w));
        long before = g_allocs;
        DL_CHECK(y >= 0);
        DL_CHECK_EQ_INT(dl_graph_plan(g, 1 << 30), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "batch 1073741824 needs a more than");
        DL_CHECK_EQ_INT(g_allocs - before, 0);
        DL_CHECK_EQ_INT(dl_forward(g, y), DL_ERR);   /* still unplanned */
        dl_graph_free(g);
    }
}

/* ---- model files --------------------------------------------------------------------- */

static unsigned char *save_bytes(dl_model *m, size_t *len)
{
    unsigned char *p = NULL;
    if (dl_save(m, TMP) != DL_OK || dl_read_file(TMP, &p, len) != DL_OK) return NULL;
    remove(TMP);
    return p;
}

static void put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24); }
static void putf(unsigned char *p, float f) { uint32_t u; memcpy(&u, &f, 4); put32(p, u); }
static void reseal(unsigned char *p, size_t len) { put32(p + len - 4, dl_crc32(0, p, len - 4)); }

/* Loads bytes from memory under the name "m.dlc"; it must be refused naming `needle`. */
static void refused(const unsigned char *p, size_t len, const char *needle)
{
    dl_model *m = dl__load_mem(p, len, "m.dlc");
    DL_CHECK(m == NULL);
    if (m) { fprintf(stderr, "  loaded a file that should say \"%s\"\n", needle); dl_model_free(m); return; }
    DL_CHECK_STR_CONTAINS(dl_last_error(), "m.dlc: ");
    DL_CHECK_STR_CONTAINS(dl_last_error(), needle);
}

/* Offsets of the fixed header (see the format in dlcore.h). */
enum { AT_NESTEROV = 44, AT_SCHEDULE = 48, AT_STEP_SIZE = 52, AT_T_MAX = 56, AT_LR = 60, AT_MOMENTUM = 64,
       AT_BETA1 = 68, AT_EPS = 76, AT_CLIP = 92, AT_EPOCHS = 104 };

DL_TEST(model_file_fields_are_range_checked_naming_the_field)
{
    dl_model *m = mlp(6, dl_sgd(0.05f, 0.9f)), *l;
    unsigned char *good, *bad;
    size_t len = 0, w;
    good = save_bytes(m, &len);
    DL_CHECK(good != NULL);
    if (!good) return;
    bad = (unsigned char *)malloc(len);
#define MUTATE(stmt, needle) do { memcpy(bad, good, len); stmt; reseal(bad, len); refused(bad, len, needle); } while (0)
    MUTATE(put32(bad + AT_EPOCHS, 0x7FFFFFFFu), "epoch count 2147483647 is over");
    MUTATE(put32(bad + AT_EPOCHS, 0x80000000u), "epoch count 2147483648 is over");
    MUTATE(put32(bad + AT_NESTEROV, 2), "nesterov is 2");
    MUTATE(put32(bad + AT_SCHEDULE, 3), "unknown optimizer schedule 3");
    MUTATE(put32(bad + AT_STEP_SIZE, 0x80000000u), "step_size 2147483648");
    MUTATE(put32(bad + AT_T_MAX, 0xFFFFFFFFu), "t_max 4294967295");
    MUTATE(putf(bad + AT_LR, NAN), "optimizer lr is nan");
    MUTATE(putf(bad + AT_MOMENTUM, -1.0f), "optimizer momentum is -1");
    MUTATE(putf(bad + AT_BETA1, 5.0f), "optimizer beta1 is 5");
    MUTATE(putf(bad + AT_EPS, INFINITY), "optimizer eps is inf");
    MUTATE(putf(bad + AT_CLIP, -2.0f), "optimizer clip_norm is -2");
    MUTATE(put32(bad + 36, 9), "unknown loss 9");
    /* A non-finite weight. */
    for (w = 0; w + 9 < len && memcmp(good + w, "dense_1.b", 9) != 0; w++) {}
    DL_CHECK(w + 9 < len);
    MUTATE(putf(bad + w + 9 + 12 + 4 * 3, NAN), "tensor 'dense_1.b' holds nan at element 3");
    /* The largest accepted epoch count still trains: no overflow in the schedule. */
    memcpy(bad, good, len); put32(bad + AT_EPOCHS, 1u << 30); reseal(bad, len);
    l = dl__load_mem(bad, len, "m.dlc");
    DL_CHECK(l != NULL);
    if (l) {
        dl_dataset d;
        dl_fit_opts o = quiet(1, 32);
        blobs(&d, 64, 7);
        DL_CHECK_EQ_INT(dl_fit(l, &d, &o), DL_OK);
        dl_dataset_free(&d);
        dl_model_free(l);
    }
#undef MUTATE
    free(bad);
    dl_free(good);
    dl_model_free(m);
}

DL_TEST(model_file_truncated_at_every_length_is_refused)
{
    dl_model *m = mlp(7, dl_adam(1e-3f));
    unsigned char *good;
    size_t len = 0, cut;
    int wrong = 0;
    good = save_bytes(m, &len);
    DL_CHECK(good != NULL && len > 100);
    if (!good) return;
    for (cut = 0; cut < len; cut++) {
        dl_model *x = dl__load_mem(good, cut, "m.dlc");
        if (x || !strstr(dl_last_error(), cut < 24 ? "too short" : "truncated")) {
            if (!wrong++) fprintf(stderr, "  cut at %zu: %s\n", cut, x ? "loaded" : dl_last_error());
            dl_model_free(x);
        }
    }
    DL_CHECK_EQ_INT(wrong, 0);
    dl_free(good);
    dl_model_free(m);
}

DL_TEST(a_claimed_input_shape_allocates_no_arena_on_load)
{
    /* Weights that do not depend on the first input dim: the file is tiny whatever it
       claims. Loading allocates the weights and little else; the arena comes at first
       use and is bounded. */
    dl_model *m = dl_sequential(DL_SHAPE(2, 3)), *l;
    unsigned char *bytes;
    size_t len = 0;
    float x[2 * 3] = { 0 }, y[2 * 2];
    dl_add(m, dl_dense(2, DL_LINEAR));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_MSE, dl_adam(1e-3f)), DL_OK);
    bytes = save_bytes(m, &len);
    DL_CHECK(bytes != NULL);
    if (!bytes) return;
    put32(bytes + 20, 1u << 20);   /* input dims[0]: [1048576, 3] */
    reseal(bytes, len);
    g_alloc_bytes = 0;
    l = dl__load_mem(bytes, len, "big.dlc");
    DL_CHECK(l != NULL);
    DL_CHECK(g_alloc_bytes < 16384);
    if (l) {
        DL_CHECK_EQ_INT((long long)dl_graph_arena_bytes(dl_model_graph(l)), 0);
        DL_CHECK_EQ_INT(dl_input_size(l), 3 << 20);
        /* One sample needs 12 MiB of input alone: over this build's 8 MiB bound. */
        {
            float *big = (float *)calloc((size_t)3 << 20, sizeof(float)), *o2 = (float *)malloc(sizeof(float) * (2u << 20));
            if (big && o2) {
                g_alloc_bytes = 0;
                DL_CHECK_EQ_INT(dl_predict(l, big, 1, o2), DL_ERR);
                DL_CHECK_STR_CONTAINS(dl_last_error(), "DLCORE_MAX_ARENA");
                DL_CHECK(g_alloc_bytes < 16384);
            }
            free(big); free(o2);
        }
        dl_model_free(l);
    }
    dl_free(bytes);
    /* The original shape still works. */
    DL_CHECK_EQ_INT(dl_predict(m, x, 1, y), DL_OK);
    dl_model_free(m);
}

/* Found by fuzz_model: a claimed input shape whose flattened size passes INT_MAX
   made the layer-shape walk index d[-1]. */
DL_TEST(a_claimed_shape_too_large_to_flatten_is_refused)
{
    dl_model *m = dl_sequential(DL_SHAPE(2, 2, 2));
    unsigned char *bytes;
    size_t len = 0;
    dl_add(m, dl_dense(515, DL_RELU));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)), DL_OK);
    bytes = save_bytes(m, &len);
    DL_CHECK(bytes != NULL);
    if (bytes) {
        put32(bytes + 20, 0x230002);   /* 2293762 x 2 x 515 values per sample at the flatten */
        reseal(bytes, len);
        refused(bytes, len, "layer 2: dl_add: flatten of 2362574860 values per sample");
        dl_free(bytes);
    }
    dl_model_free(m);
    {   /* the graph op says so too */
        dl_graph *g = dl_graph_new(1);
        int x = dl_input(g, "x", DL_SHAPE(1 << 16, 1 << 16));
        DL_CHECK(dl_op_flatten(g, x) < 0);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "4294967296 values per sample");
        dl_graph_free(g);
    }
}

DL_TEST(save_load_round_trip_keeps_every_field_and_weight)
{
    dl_dataset d;
    dl_optimizer o = dl_sgd(0.05f, 0.9f);
    dl_model *m = dl_sequential(DL_SHAPE(8)), *l;
    dl_fit_opts fo = quiet(3, 16);
    dl_layer lr = dl_dense(6, DL_LEAKY_RELU);
    lr.alpha = 0.3f;
    o.nesterov = 1; o.schedule = DL_SCHED_STEP; o.step_size = 2; o.gamma = 0.5f; o.l2 = 1e-4f; o.clip_norm = 2.0f;
    dl_model_seed(m, 8);
    dl_add(m, dl_dense(12, DL_TANH));
    dl_add(m, dl_dropout(0.2f));
    dl_add(m, lr);
    dl_add(m, dl_activation(DL_SIGMOID));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, o), DL_OK);
    blobs(&d, 128, 9);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &fo), DL_OK);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    l = dl_load(TMP);
    DL_CHECK(l != NULL);
    if (l) {
        int i;
        DL_CHECK(same_weights(m, l));
        DL_CHECK_EQ_INT(dl_graph_param_count(dl_model_graph(l)), 6);
        DL_CHECK(memcmp(&l->opt, &m->opt, sizeof o) == 0);
        DL_CHECK_EQ_INT(l->epochs_done, 3);
        DL_CHECK_EQ_INT(l->n_layers, 5);
        for (i = 0; i < 5; i++) DL_CHECK(memcmp(&l->layers[i], &m->layers[i], sizeof(dl_layer)) == 0);
        DL_CHECK_EQ_INT(l->loss_kind, DL_LOSS_SPARSE_CE);
        /* The two continue identically (same schedule position, same epoch). */
        DL_CHECK_EQ_INT(dl_fit(m, &d, &fo), DL_OK);
        DL_CHECK_EQ_INT(dl_fit(l, &d, &fo), DL_OK);
        DL_CHECK(dl_lr_at(&l->opt, l->epochs_done) == dl_lr_at(&m->opt, m->epochs_done));
        dl_model_free(l);
    }
    remove(TMP);
    dl_model_free(m);
    dl_dataset_free(&d);
}

/* ---- IDX files ------------------------------------------------------------------------ */

static void write_file(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(p, 1, n, f); fclose(f); }
}

static size_t idx_header(unsigned char *p, int type, int ndim, const uint32_t *dims)
{
    int i;
    p[0] = 0; p[1] = 0; p[2] = (unsigned char)type; p[3] = (unsigned char)ndim;
    for (i = 0; i < ndim; i++) {
        p[4 + 4 * i] = (unsigned char)(dims[i] >> 24); p[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        p[6 + 4 * i] = (unsigned char)(dims[i] >> 8); p[7 + 4 * i] = (unsigned char)dims[i];
    }
    return 4 + 4 * (size_t)ndim;
}

DL_TEST(idx_element_types_i8_i16_f64_and_out_of_range_index)
{
    unsigned char buf[64];
    uint32_t dims[1] = { 3 };
    dl_idx idx;
    size_t n;
    /* i8: 0x7F, 0x80, 0xFF */
    n = idx_header(buf, 0x09, 1, dims);
    buf[n++] = 0x7F; buf[n++] = 0x80; buf[n++] = 0xFF;
    write_file(TMP ".i8", buf, n);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP ".i8"), DL_OK);
    DL_CHECK(dl_idx_value(&idx, 0) == 127.0 && dl_idx_value(&idx, 1) == -128.0 && dl_idx_value(&idx, 2) == -1.0);
    DL_CHECK(dl_idx_value(&idx, 3) != dl_idx_value(&idx, 3));   /* NaN past the end, no assert */
    DL_CHECK(dl_idx_value(&idx, (size_t)-1) != dl_idx_value(&idx, (size_t)-1));
    dl_idx_free(&idx);
    /* i16, big-endian: 0x7FFF, 0x8000, 0x0102 */
    n = idx_header(buf, 0x0B, 1, dims);
    buf[n++] = 0x7F; buf[n++] = 0xFF; buf[n++] = 0x80; buf[n++] = 0x00; buf[n++] = 0x01; buf[n++] = 0x02;
    write_file(TMP ".i16", buf, n);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP ".i16"), DL_OK);
    DL_CHECK(dl_idx_value(&idx, 0) == 32767.0 && dl_idx_value(&idx, 1) == -32768.0 && dl_idx_value(&idx, 2) == 258.0);
    dl_idx_free(&idx);
    /* f64, big-endian: 1.5, -2.25, 1e300 */
    {
        const double v[3] = { 1.5, -2.25, 1e300 };
        int i, k;
        n = idx_header(buf, 0x0E, 1, dims);
        for (i = 0; i < 3; i++) {
            uint64_t u;
            memcpy(&u, &v[i], 8);
            for (k = 7; k >= 0; k--) buf[n++] = (unsigned char)(u >> (8 * k));
        }
        write_file(TMP ".f64", buf, n);
        DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP ".f64"), DL_OK);
        DL_CHECK(idx.type == 0x0E && idx.count == 3);
        for (i = 0; i < 3; i++) DL_CHECK(dl_idx_value(&idx, (size_t)i) == v[i]);
        dl_idx_free(&idx);
    }
    DL_CHECK(dl_idx_value(NULL, 0) != dl_idx_value(NULL, 0));
    remove(TMP ".i8"); remove(TMP ".i16"); remove(TMP ".f64");
}

DL_TEST(idx_pairs_with_no_images_or_overflowing_sizes_are_refused)
{
    unsigned char buf[64];
    uint32_t idims[3] = { 0, 28, 28 }, ldims[1] = { 0 };
    dl_dataset ds;
    write_file("build/th_empty-images-idx3-ubyte", buf, idx_header(buf, 0x08, 3, idims));
    write_file("build/th_empty-labels-idx1-ubyte", buf, idx_header(buf, 0x08, 1, ldims));
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "th_empty"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/th_empty-images-idx3-ubyte: the file holds 0 images");
    idims[1] = idims[2] = 65535;
    write_file("build/th_huge-images-idx3-ubyte", buf, idx_header(buf, 0x08, 3, idims));
    write_file("build/th_huge-labels-idx1-ubyte", buf, idx_header(buf, 0x08, 1, ldims));
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "th_huge"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/th_huge-images-idx3-ubyte: images of 65535 x 65535 = 4294836225 pixels overflow");
    remove("build/th_empty-images-idx3-ubyte"); remove("build/th_empty-labels-idx1-ubyte");
    remove("build/th_huge-images-idx3-ubyte"); remove("build/th_huge-labels-idx1-ubyte");
}

/* ---- features that had no assertion ------------------------------------------------ */

/* What the first kernel call chose, before any test can change it: $DLCORE_ISA and
   $DLCORE_THREADS are read then. The plan runs this binary with them set (see
   mk/hardening.mk) as well as without. */
static char startup_isa[16];
static int startup_threads;
__attribute__((constructor)) static void capture_startup(void)
{
    snprintf(startup_isa, sizeof startup_isa, "%s", dl_isa_name());
    startup_threads = dl_get_threads();
}

DL_TEST(env_DLCORE_ISA_and_DLCORE_THREADS_choose_the_defaults)
{
    const char *isa = getenv("DLCORE_ISA"), *th = getenv("DLCORE_THREADS");
    char best[16];
    int all, known = 0, i;
    static const char *const names[] = { "scalar", "avx2", "avx512", "neon" };
    DL_CHECK_EQ_INT(dl_set_isa(NULL), DL_OK);
    snprintf(best, sizeof best, "%s", dl_isa_name());
    DL_CHECK_EQ_INT(dl_set_threads(0), DL_OK);
    all = dl_get_threads();
    for (i = 0; i < 4; i++)
        if (isa && strcmp(isa, names[i]) == 0 && dl_set_isa(isa) == DL_OK) known = 1;
    dl_set_isa(NULL);
    /* A supported name is used; unset, "auto", unknown or unsupported: the best. */
    if (known) DL_CHECK(strcmp(startup_isa, isa) == 0);
    else DL_CHECK(strcmp(startup_isa, best) == 0);
    /* A count is used; unset, 0 or not a count: all cores. */
    if (th && *th && strspn(th, "0123456789") == strlen(th) && atoi(th) > 0 && atoi(th) <= 64) {
#ifdef DLCORE_NO_THREADS
        DL_CHECK_EQ_INT(startup_threads, 1);
#else
        DL_CHECK_EQ_INT(startup_threads, atoi(th));
#endif
    } else {
        DL_CHECK_EQ_INT(startup_threads, all);
    }
    printf("  DLCORE_ISA=%s DLCORE_THREADS=%s -> %s, %d threads\n", isa ? isa : "(unset)", th ? th : "(unset)",
           startup_isa, startup_threads);
    dl_set_threads(1);
}

DL_TEST(dl_shutdown_frees_the_workspace_and_kernels_start_again)
{
    static float a[200 * 150], b[150 * 170], c1[200 * 170], c2[200 * 170];
    long before;
    int i;
    for (i = 0; i < 200 * 150; i++) a[i] = (float)(i % 17) - 8.0f;
    for (i = 0; i < 150 * 170; i++) b[i] = (float)(i % 13) * 0.25f;
    dl_set_threads(2);
    dl_sgemm(0, 0, 200, 170, 150, 1.0f, a, 150, b, 170, 0.0f, c1, 170);
    dl_sgemm(0, 0, 200, 170, 150, 1.0f, a, 150, b, 170, 0.0f, c1, 170);
    dl_shutdown();
    before = g_allocs;
    dl_sgemm(0, 0, 200, 170, 150, 1.0f, a, 150, b, 170, 0.0f, c2, 170);
    DL_CHECK(g_allocs > before);                      /* the workspace was freed: it grows again */
    DL_CHECK(memcmp(c1, c2, sizeof c1) == 0);
    DL_CHECK_EQ_INT(dl_get_threads(), 1);             /* no pool until asked for again */
    DL_CHECK_EQ_INT(dl_set_threads(2), DL_OK);
    memset(c2, 0, sizeof c2);
    dl_sgemm(0, 0, 200, 170, 150, 1.0f, a, 150, b, 170, 0.0f, c2, 170);
    DL_CHECK(memcmp(c1, c2, sizeof c1) == 0);
    dl_shutdown();
    dl_shutdown();                                    /* twice is harmless */
    dl_set_threads(1);
    DL_CHECK_EQ_INT(dl_predict(NULL, a, 1, c2), DL_ERR);
}

DL_TEST(dl_shape_str_formats_and_truncates)
{
    char buf[32], tiny[5];
    DL_CHECK(strcmp(dl_shape_str(DL_SHAPE(32, 784), buf, sizeof buf), "[32,784]") == 0);
    DL_CHECK(strcmp(dl_shape_str(dl_shape_make(0, 0, 0, 0), buf, sizeof buf), "[]") == 0);
    DL_CHECK(strcmp(dl_shape_str(DL_SHAPE(1, 2, 3, 4), buf, sizeof buf), "[1,2,3,4]") == 0);
    DL_CHECK(strcmp(dl_shape_str(DL_SHAPE(12345, 6), tiny, sizeof tiny), "[123") == 0);   /* cut, terminated */
    DL_CHECK(dl_shape_str(DL_SHAPE(1), tiny, 0) == tiny);
}

DL_TEST(no_shuffle_keeps_the_data_order)
{
    /* Same initial weights; a and b differ only in the shuffling stream's seed
       (set after compile). Without shuffling they train to the same bits; with it
       they do not; and without shuffling the order of the data matters. */
    dl_dataset d, r;
    dl_model *a = mlp(11, dl_adam(1e-2f)), *b = mlp(11, dl_adam(1e-2f)), *c = mlp(11, dl_adam(1e-2f));
    dl_model *e = mlp(11, dl_adam(1e-2f)), *f = mlp(11, dl_adam(1e-2f));
    dl_fit_opts o = quiet(2, 16);
    int i, j, shape[1] = { 8 };
    blobs(&d, 96, 12);
    dl_dataset_alloc(&r, 96, 1, shape, 1);
    for (i = 0; i < 96; i++) {   /* d reversed */
        for (j = 0; j < 8; j++) r.x[i * 8 + j] = d.x[(95 - i) * 8 + j];
        r.y[i] = d.y[95 - i];
    }
    dl_model_seed(b, 99);
    dl_model_seed(f, 99);
    o.no_shuffle = 1;
    DL_CHECK_EQ_INT(dl_fit(a, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_fit(b, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_fit(c, &r, &o), DL_OK);
    DL_CHECK(same_weights(a, b));
    DL_CHECK(!same_weights(a, c));
    o.no_shuffle = 0;
    DL_CHECK_EQ_INT(dl_fit(e, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_fit(f, &d, &o), DL_OK);
    DL_CHECK(!same_weights(e, f));
    DL_CHECK(!same_weights(a, e));
    dl_model_free(a); dl_model_free(b); dl_model_free(c); dl_model_free(e); dl_model_free(f);
    dl_dataset_free(&d); dl_dataset_free(&r);
}

DL_TEST(leaky_relu_and_activation_layers_inside_a_model)
{
    /* x -> dense(2, leaky 0.2) -> activation(tanh) -> dense(1) -> MSE, weights set by
       hand; the prediction is worked out here independently, then the gradients of
       the whole model are checked against finite differences. The default slope
       (alpha 0) is 0.01. */
    dl_model *m = dl_sequential(DL_SHAPE(3)), *m0 = dl_sequential(DL_SHAPE(3));
    dl_layer l = dl_dense(2, DL_LEAKY_RELU);
    const float x[2 * 3] = { 1.0f, -2.0f, 0.5f, -1.0f, 0.25f, 3.0f };
    const float w1[3 * 2] = { 0.5f, -1.0f, 0.25f, 0.5f, -0.75f, 0.125f }, b1[2] = { 0.1f, -0.2f };
    const float w2[2] = { 1.5f, -0.5f }, b2[1] = { 0.05f };
    float y[2], want;
    int i, k;
    l.alpha = 0.2f;
    dl_add(m, l); dl_add(m, dl_activation(DL_TANH)); dl_add(m, dl_dense(1, DL_LINEAR));
    l.alpha = 0.0f;
    dl_add(m0, l); dl_add(m0, dl_activation(DL_TANH)); dl_add(m0, dl_dense(1, DL_LINEAR));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_MSE, dl_sgd(0.1f, 0.0f)), DL_OK);
    DL_CHECK_EQ_INT(dl_compile(m0, DL_LOSS_MSE, dl_sgd(0.1f, 0.0f)), DL_OK);
    for (k = 0; k < 2; k++) {
        dl_model *mm = k ? m0 : m;
        float alpha = k ? 0.01f : 0.2f;
        memcpy(weight(mm, 0), w1, sizeof w1); memcpy(weight(mm, 1), b1, sizeof b1);
        memcpy(weight(mm, 2), w2, sizeof w2); memcpy(weight(mm, 3), b2, sizeof b2);
        DL_CHECK_EQ_INT(dl_predict(mm, x, 2, y), DL_OK);
        for (i = 0; i < 2; i++) {
            double h0 = b1[0], h1 = b1[1];
            int j;
            for (j = 0; j < 3; j++) { h0 += x[i * 3 + j] * w1[j * 2]; h1 += x[i * 3 + j] * w1[j * 2 + 1]; }
            h0 = tanh(h0 > 0 ? h0 : alpha * h0);
            h1 = tanh(h1 > 0 ? h1 : alpha * h1);
            want = (float)(h0 * w2[0] + h1 * w2[1] + b2[0]);
            DL_CHECK_NEAR(y[i], want, 1e-5);
        }
    }
    {
        dl_graph *g = dl_model_graph(m);
        float err;
        for (i = 0; i < 2 * 3; i++) dl_node_value(g, m->x).data[i] = x[i];
        dl_node_value(g, m->y).data[0] = 0.3f;
        dl_node_value(g, m->y).data[1] = -0.7f;
        err = dl_gradcheck(g, m->loss, 1e-3f);
        DL_CHECK(err < 2e-2f);
    }
    {
        char buf[1024];
        FILE *f = tmpfile();
        size_t n;
        DL_CHECK(f != NULL);
        if (f) {
            dl_summary(m, f);
            rewind(f);
            n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            DL_CHECK_STR_CONTAINS(buf, "dense 2, leaky_relu");
            DL_CHECK_STR_CONTAINS(buf, "activation tanh");
        }
    }
    dl_model_free(m); dl_model_free(m0);
}

static void read_all(FILE *f, char *buf, size_t size)
{
    size_t n;
    rewind(f);
    n = fread(buf, 1, size - 1, f);
    buf[n] = 0;
    fclose(f);
}

DL_TEST(dl_summary_text)
{
    dl_model *m = dl_sequential(DL_SHAPE(4, 2));
    char buf[2048];
    FILE *f;
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(5, DL_RELU));
    dl_add(m, dl_dropout(0.25f));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    /* Before compile: no total line. 8*5+5 = 45 and 5*3+3 = 18 parameters. */
    f = tmpfile();
    DL_CHECK(f != NULL);
    if (!f) { dl_model_free(m); return; }
    dl_summary(m, f);
    read_all(f, buf, sizeof buf);
    DL_CHECK(strcmp(buf,
        "layer                        output shape         params\n"
        "input                        [4,2]                     0\n"
        "flatten                      [8]                       0\n"
        "dense 5, relu                [5]                      45\n"
        "dropout 0.25                 [5]                       0\n"
        "dense 3, softmax             [3]                      18\n") == 0);
    if (strstr(buf, "total")) DL_FAILF("a total before compile:\n%s", buf);
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)), DL_OK);
    f = tmpfile();
    if (f) {
        dl_summary(m, f);
        read_all(f, buf, sizeof buf);
        DL_CHECK_STR_CONTAINS(buf, "dense 3, softmax             [3]                      18\n"
                                   "total parameters 63 (252 bytes)\n");
    }
    dl_model_free(m);
}

DL_TEST(dl_metrics_print_text)
{
    dl_metrics mt;
    char buf[2048];
    FILE *f;
    memset(&mt, 0, sizeof mt);
    mt.n = 4; mt.loss = 0.5f; mt.accuracy = 0.75f; mt.n_classes = 2;
    mt.confusion[0][0] = 2; mt.confusion[1][0] = 1; mt.confusion[1][1] = 1;
    mt.precision[0] = 2.0f / 3.0f; mt.recall[0] = 1.0f; mt.f1[0] = 0.8f;
    mt.precision[1] = 1.0f; mt.recall[1] = 0.5f; mt.f1[1] = 2.0f / 3.0f;
    f = tmpfile();
    DL_CHECK(f != NULL);
    if (!f) return;
    dl_metrics_print(&mt, f);
    read_all(f, buf, sizeof buf);
    DL_CHECK(strcmp(buf,
        "samples 4  loss 0.5000  accuracy 0.7500\n"
        "confusion (rows: true class, columns: predicted)\n"
        "           0     1\n"
        "     0     2     0\n"
        "     1     1     1\n"
        "class  precision  recall  f1\n"
        "    0     0.6667  1.0000  0.8000\n"
        "    1     1.0000  0.5000  0.6667\n") == 0);
    if (strncmp(buf, "samples 4", 9) != 0) DL_FAILF("got:\n%s", buf);
    /* Regression: no accuracy, no classes. */
    mt.accuracy = NAN; mt.n_classes = 0; mt.loss = 1.25f;
    f = tmpfile();
    if (f) {
        dl_metrics_print(&mt, f);
        read_all(f, buf, sizeof buf);
        DL_CHECK(strcmp(buf, "samples 4  loss 1.2500\n") == 0);
    }
}

DL_TEST_MAIN()
