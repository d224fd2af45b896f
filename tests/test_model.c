/* Sequential models end to end on small synthetic data: training reaches a
   known accuracy, runs are reproducible, fit allocates nothing per step,
   models survive save/load bit for bit, and bad model files are refused. */
#include "dltest_alloc.h"
#include "dltest.h"

#define TMP "build/test_model.tmp.dlc"

/* cmd.exe's mkdir knows no -p, and Windows' remove() leaves directories alone. */
#ifdef _WIN32
#include <direct.h>
#include <errno.h>
#define TEST_MKDIR_P(p) ((_mkdir(p) == 0 || errno == EEXIST) ? 0 : -1)
#define TEST_RMDIR(p) _rmdir(p)
#else
#define TEST_MKDIR_P(p) system("mkdir -p " p)
#define TEST_RMDIR(p) remove(p)
#endif

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

static dl_model *mlp(uint64_t seed, dl_optimizer opt)
{
    dl_model *m = dl_sequential(DL_SHAPE(8));
    dl_model_seed(m, seed);
    dl_add(m, dl_dense(16, DL_RELU));
    dl_add(m, dl_dropout(0.1f));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, opt) != DL_OK) fprintf(stderr, "%s\n", dl_last_error());
    return m;
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

static dl_fit_opts quiet(int epochs, int batch)
{
    dl_fit_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = epochs;
    o.batch = batch;
    o.progress = DL_PROGRESS_NONE;
    return o;
}

DL_TEST(fit_learns_blobs_and_evaluate_reports_metrics)
{
    dl_dataset train, test;
    dl_model *m = mlp(1, dl_adam(1e-2f));
    dl_fit_opts o = quiet(10, 32);
    dl_metrics mt;
    int i, j, total = 0, diag = 0;
    blobs(&train, 1000, 1);
    blobs(&test, 300, 2);
    DL_CHECK_EQ_INT(dl_fit(m, &train, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_evaluate(m, &test, &mt), DL_OK);
    DL_CHECK(mt.accuracy > 0.9f);
    DL_CHECK_EQ_INT(mt.n, 300);
    DL_CHECK_EQ_INT(mt.n_classes, 3);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++) { total += mt.confusion[i][j]; if (i == j) diag += mt.confusion[i][j]; }
    DL_CHECK_EQ_INT(total, 300);
    DL_CHECK_NEAR(mt.accuracy, (double)diag / 300.0, 1e-6);
    for (i = 0; i < 3; i++) {
        int col = 0;
        for (j = 0; j < 3; j++) col += mt.confusion[j][i];
        DL_CHECK_NEAR(mt.precision[i], (double)mt.confusion[i][i] / col, 1e-6);
        DL_CHECK(mt.f1[i] > 0.8f);
    }
    {
        const dl_history_row *h;
        DL_CHECK_EQ_INT(dl_history(m, &h), 10);
        DL_CHECK(h[9].loss < h[0].loss);
    }
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
}

DL_TEST(same_seed_gives_bit_identical_weights)
{
    dl_dataset d;
    dl_model *a = mlp(7, dl_adam(1e-2f)), *b = mlp(7, dl_adam(1e-2f)), *c = mlp(8, dl_adam(1e-2f));
    dl_fit_opts o = quiet(2, 16);
    dl_tensor ta, tb, tc;
    blobs(&d, 200, 3);
    dl_fit(a, &d, &o); dl_fit(b, &d, &o); dl_fit(c, &d, &o);
    DL_CHECK(same_weights(a, b));
    DL_CHECK(!same_weights(a, c));
    ta = dl_node_value(dl_model_graph(a), dl_graph_param(dl_model_graph(a), 0));
    tb = dl_node_value(dl_model_graph(b), dl_graph_param(dl_model_graph(b), 0));
    tc = dl_node_value(dl_model_graph(c), dl_graph_param(dl_model_graph(c), 0));
    DL_CHECK(memcmp(ta.data, tb.data, 8 * 16 * sizeof(float)) == 0);
    DL_CHECK(memcmp(ta.data, tc.data, 8 * 16 * sizeof(float)) != 0);
    dl_model_free(a); dl_model_free(b); dl_model_free(c);
    dl_dataset_free(&d);
}

/* The same data as floats and as bytes (dl_dataset_pack_u8) train to the same bits:
   shuffled batches, a validation split and a partial last batch, then evaluation. */
DL_TEST(fit_on_packed_bytes_gives_the_same_weights_as_on_floats)
{
    dl_dataset f, b;
    dl_model *mf = mlp(5, dl_adam(1e-2f)), *mb = mlp(5, dl_adam(1e-2f));
    dl_fit_opts o = quiet(3, 32);
    dl_metrics tf, tb;
    const dl_history_row *hf, *hb;
    int i, p;
    blobs(&f, 430, 6);
    blobs(&b, 430, 6);
    for (i = 0; i < 430 * 8; i++) {  /* inputs squashed to k/255, the same in both */
        float v = 0.5f + 0.25f * f.x[i];
        int k = (int)(255.0f * (v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v) + 0.5f);
        f.x[i] = b.x[i] = (float)k * (1.0f / 255.0f);
    }
    DL_CHECK_EQ_INT(dl_dataset_pack_u8(&b), DL_OK);
    o.validation_split = 0.2f;
    DL_CHECK_EQ_INT(dl_fit(mf, &f, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_fit(mb, &b, &o), DL_OK);
    for (p = 0; p < 4; p++) {
        dl_tensor wf = dl_node_value(dl_model_graph(mf), dl_graph_param(dl_model_graph(mf), p));
        dl_tensor wb = dl_node_value(dl_model_graph(mb), dl_graph_param(dl_model_graph(mb), p));
        if (memcmp(wf.data, wb.data, dl_shape_numel(wf.shape) * sizeof(float)) != 0) DL_FAILF("parameter %d differs", p);
    }
    DL_CHECK_EQ_INT(dl_history(mf, &hf), 3);
    DL_CHECK_EQ_INT(dl_history(mb, &hb), 3);
    if (!(hf[2].loss == hb[2].loss && hf[2].val_loss == hb[2].val_loss && hf[2].accuracy > 0.5f))
        DL_FAILF("last epoch: loss %g / %g, val_loss %g / %g, accuracy %g", (double)hf[2].loss, (double)hb[2].loss,
                 (double)hf[2].val_loss, (double)hb[2].val_loss, (double)hf[2].accuracy);
    DL_CHECK_EQ_INT(dl_evaluate(mf, &f, &tf), DL_OK);
    DL_CHECK_EQ_INT(dl_evaluate(mb, &b, &tb), DL_OK);
    DL_CHECK(tf.loss == tb.loss && tf.accuracy == tb.accuracy);
    dl_model_free(mf); dl_model_free(mb);
    dl_dataset_free(&f); dl_dataset_free(&b);
}

DL_TEST(fit_allocates_nothing_per_step_or_epoch)
{
    /* Same data, 1 epoch vs 4 epochs with a validation split and a partial last
       batch: the allocation count may not grow with the number of steps. */
    dl_dataset d;
    dl_model *m = mlp(1, dl_adam(1e-3f));
    dl_fit_opts o = quiet(1, 32);
    long one, four;
    blobs(&d, 1000, 4);
    o.validation_split = 0.1f;
    dl_fit(m, &d, &o);                 /* warm-up: GEMM workspaces */
    g_allocs = 0; dl_fit(m, &d, &o); one = g_allocs;
    o.epochs = 4;
    g_allocs = 0; dl_fit(m, &d, &o); four = g_allocs;
    DL_CHECK_EQ_INT(four, one);
    DL_CHECK(one <= 4);
    dl_model_free(m);
    dl_dataset_free(&d);
}

DL_TEST(save_load_predict_identical)
{
    dl_dataset d;
    dl_model *m = mlp(3, dl_sgd(0.05f, 0.9f)), *l;
    dl_fit_opts o = quiet(2, 32);
    float *p1, *p2;
    dl_metrics a, b;
    blobs(&d, 300, 5);
    dl_fit(m, &d, &o);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    l = dl_load(TMP);
    DL_CHECK(l != NULL);
    if (!l) { fprintf(stderr, "%s\n", dl_last_error()); return; }
    p1 = (float *)malloc(300 * 3 * sizeof(float));
    p2 = (float *)malloc(300 * 3 * sizeof(float));
    DL_CHECK_EQ_INT(dl_predict(m, d.x, 300, p1), DL_OK);
    DL_CHECK_EQ_INT(dl_predict(l, d.x, 300, p2), DL_OK);
    DL_CHECK(memcmp(p1, p2, 300 * 3 * sizeof(float)) == 0);
    DL_CHECK(same_weights(m, l));
    DL_CHECK_NEAR(p1[0] + p1[1] + p1[2], 1.0, 1e-5);
    dl_evaluate(m, &d, &a); dl_evaluate(l, &d, &b);
    DL_CHECK(a.loss == b.loss && a.accuracy == b.accuracy);
    DL_CHECK_EQ_INT(dl_model_param_count(l), 8 * 16 + 16 + 16 * 3 + 3);
    /* Saving over an existing file replaces it (Windows' rename() would refuse). */
    DL_CHECK_EQ_INT(dl_save(l, TMP), DL_OK);
    free(p1); free(p2);
    dl_model_free(m); dl_model_free(l);
    dl_dataset_free(&d);
    remove(TMP);
}

/* The server batches unrelated requests into one dl_predict call: a row's outputs
   must not depend on which rows share its call, nor on where the planned batch
   splits a long call. 70 rows cross two 32-row splits of the MNIST MLP's shape. */
DL_TEST(predict_rows_are_independent_of_the_batch_and_input_shape_is_kept)
{
    enum { N = 70, N_IN = 28 * 28, N_OUT = 10 };
    dl_model *m = dl_sequential(DL_SHAPE(28, 28)), *l;
    float *x = (float *)malloc(N * N_IN * sizeof(float)), *all = (float *)malloc(N * N_OUT * sizeof(float));
    float *part = (float *)malloc(N * N_OUT * sizeof(float)), one[N_OUT];
    dl_shape s;
    dl_rng r;
    int i, alone_same = 1, chunks_same = 1, first;
    dl_model_seed(m, 11);
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dense(N_OUT, DL_SOFTMAX));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)), DL_OK);
    dl_rng_seed(&r, 5);
    for (i = 0; i < N * N_IN; i++) x[i] = dl_rng_uniform(&r);
    DL_CHECK_EQ_INT(dl_predict(m, x, N, all), DL_OK);
    for (i = 0; i < N; i++) {
        dl_predict(m, x + (size_t)i * N_IN, 1, one);
        if (memcmp(one, all + i * N_OUT, sizeof one) != 0) alone_same = 0;
    }
    for (first = 0; first < N; first += 3 + first % 7) {
        int n = first + 3 + first % 7 > N ? N - first : 3 + first % 7;
        dl_predict(m, x + (size_t)first * N_IN, n, part + first * N_OUT);
    }
    chunks_same = memcmp(part, all, N * N_OUT * sizeof(float)) == 0;
    DL_CHECK(alone_same);
    DL_CHECK(chunks_same);
    s = dl_input_shape(m);
    DL_CHECK(s.ndim == 2 && s.d[0] == 28 && s.d[1] == 28 && s.d[2] == 0);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    l = dl_load(TMP);
    DL_CHECK(l != NULL);
    if (l) {
        s = dl_input_shape(l);
        DL_CHECK(s.ndim == 2 && s.d[0] == 28 && s.d[1] == 28);
        dl_predict(l, x, N, part);
        DL_CHECK(memcmp(part, all, N * N_OUT * sizeof(float)) == 0);
    }
    DL_CHECK_EQ_INT(dl_input_shape(NULL).ndim, 0);
    dl_model_free(m); dl_model_free(l);
    free(x); free(all); free(part);
    remove(TMP);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    p = (unsigned char *)malloc((size_t)n);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static void spit(const char *path, const unsigned char *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, len, f);
    fclose(f);
}

static void put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24); }

/* Recomputes the trailing CRC so a test can reach the checks behind it. */
static void reseal(unsigned char *p, size_t len) { put32(p + len - 4, dl_crc32(0, p, len - 4)); }

static void expect_refused(const unsigned char *p, size_t len, const char *needle)
{
    dl_model *m;
    spit(TMP, p, len);
    m = dl_load(TMP);
    DL_CHECK(m == NULL);
    if (m) dl_model_free(m);
    else {
        DL_CHECK_STR_CONTAINS(dl_last_error(), TMP);
        DL_CHECK_STR_CONTAINS(dl_last_error(), needle);
    }
}

/* A layer record in a format-2 file: 5 fields of version 1, then 29 more. */
#define LAYER_BYTES (20 + 29 * 4)

DL_TEST(bad_model_files_are_refused_with_clear_messages)
{
    dl_model *m = mlp(1, dl_adam(1e-3f));
    unsigned char *good, *bad;
    size_t len = 0, cut, w1;
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    good = slurp(TMP, &len);
    DL_CHECK(good != NULL && len > 100);
    bad = (unsigned char *)malloc(len + 8);
    /* Every truncation, including the empty file: a model file is small. */
    for (cut = 0; cut < len; cut++) {
        memcpy(bad, good, len);
        expect_refused(bad, cut, cut < 24 ? "too short" : "truncated");
    }
    memcpy(bad, good, len); bad[0] = 'X'; expect_refused(bad, len, "not a dlcore model");
    memcpy(bad, good, len); bad[4] = 9; expect_refused(bad, len, "version 9 is not supported");
    memcpy(bad, good, len); bad[len / 2] ^= 0x40; expect_refused(bad, len, "checksum mismatch");
    memcpy(bad, good, len); bad[len] = 0; expect_refused(bad, len + 1, "trailing bytes");
    /* The first tensor header sits right after the fixed part: find "dense_1.w". */
    for (w1 = 0; w1 + 9 < len && memcmp(good + w1, "dense_1.w", 9) != 0; w1++) {}
    DL_CHECK(w1 + 9 < len);
    /* Absurd size: dims claim 10^6 x 10^6 elements; the CRC is made valid so
       only the size check stands between the file and a huge allocation. */
    memcpy(bad, good, len); put32(bad + w1 + 9 + 8, 1000000); put32(bad + w1 + 9 + 12, 1000000); reseal(bad, len);
    expect_refused(bad, len, "claims 1000000000000 elements");
    /* A name that does not match the architecture. */
    memcpy(bad, good, len); bad[w1 + 6] = '7'; reseal(bad, len); expect_refused(bad, len, "dense_7.w");
    /* A forged layer width: refused before any weight is allocated. */
    memcpy(bad, good, len); put32(bad + w1 - 4 - 4 - 3 * LAYER_BYTES + 4, 1 << 24); reseal(bad, len);
    g_allocs = 0;
    expect_refused(bad, len, "the layers need");
    DL_CHECK(g_allocs < 10);
    /* An impossible layer count and an unknown layer kind. */
    memcpy(bad, good, len); put32(bad + w1 - 4 - 4 - 3 * LAYER_BYTES - 4, 100000); reseal(bad, len); expect_refused(bad, len, "layers cannot fit");
    memcpy(bad, good, len); put32(bad + w1 - 4 - 4 - 3 * LAYER_BYTES, 77); reseal(bad, len); expect_refused(bad, len, "unknown layer kind 77");
    {
        dl_model *x = dl_load("build/no/such/model.dlc");
        DL_CHECK(x == NULL);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "build/no/such/model.dlc");
    }
    free(good); free(bad);
    dl_model_free(m);
    remove(TMP);
}

DL_TEST(mutated_model_files_never_crash_the_loader)
{
    /* Random byte changes with a valid CRC, so the parser itself is exercised
       (under ASan+UBSan in the sanitizer build): every load either succeeds or
       fails with a message naming the file. */
    dl_model *m = mlp(1, dl_adam(1e-3f));
    unsigned char *good, *bad;
    size_t len = 0;
    int trial, loaded = 0, refused = 0;
    dl_rng r;
    dl_save(m, TMP);
    good = slurp(TMP, &len);
    bad = (unsigned char *)malloc(len);
    dl_rng_seed(&r, 99);
    for (trial = 0; trial < 400; trial++) {
        dl_model *x;
        int k, flips = 1 + (int)dl_rng_below(&r, 4);
        memcpy(bad, good, len);
        /* Mostly the header and layer table, where the structure lives. */
        for (k = 0; k < flips; k++) {
            size_t at = 16 + dl_rng_below(&r, (uint32_t)(trial % 2 ? 200 : len - 20));
            bad[at] = (unsigned char)dl_rng_u32(&r);
        }
        reseal(bad, len);
        spit(TMP, bad, len);
        x = dl_load(TMP);
        if (x) { loaded++; dl_model_free(x); }
        else { refused++; if (!strstr(dl_last_error(), TMP)) DL_FAILF("message without the path: %s", dl_last_error()); }
    }
    DL_CHECK_EQ_INT(loaded + refused, 400);
    DL_CHECK(refused > 50);
    free(good); free(bad);
    dl_model_free(m);
    remove(TMP);
}

DL_TEST(failed_save_leaves_no_partial_file)
{
    dl_model *m = mlp(1, dl_adam(1e-3f));
    FILE *f;
    /* The target is a directory: the rename must fail, and nothing may remain. */
    DL_CHECK_EQ_INT(TEST_MKDIR_P("build/test_model_dir.dlc"), 0);
    DL_CHECK_EQ_INT(dl_save(m, "build/test_model_dir.dlc"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/test_model_dir.dlc");
    f = fopen("build/test_model_dir.dlc.tmp", "rb");
    DL_CHECK(f == NULL);
    if (f) fclose(f);
    DL_CHECK_EQ_INT(dl_save(m, "build/no/such/dir/m.dlc"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "cannot create");
    TEST_RMDIR("build/test_model_dir.dlc");
    dl_model_free(m);
}

DL_TEST(diverging_training_stops_with_epoch_and_step)
{
    /* Linear regression with a far too large step size blows up. */
    dl_dataset d;
    dl_model *m = dl_sequential(DL_SHAPE(8));
    dl_fit_opts o = quiet(5, 10);
    int i;
    blobs(&d, 100, 6);
    for (i = 0; i < 100; i++) d.y[i] *= 100.0f;
    dl_add(m, dl_dense(1, DL_LINEAR));
    dl_compile(m, DL_LOSS_MSE, dl_sgd(10.0f, 0.0f));
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "loss became");
    DL_CHECK_STR_CONTAINS(dl_last_error(), ", step ");
    dl_model_free(m);
    dl_dataset_free(&d);
}

DL_TEST(wrong_data_shapes_and_arguments_are_errors)
{
    dl_dataset d;
    dl_model *m = mlp(1, dl_adam(1e-3f));
    dl_fit_opts o = quiet(1, 8);
    dl_metrics mt;
    int shape[1] = { 9 };
    dl_dataset_alloc(&d, 10, 1, shape, 1);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "samples have 9 values, the model's input takes 8");
    DL_CHECK_EQ_INT(dl_evaluate(m, &d, &mt), DL_ERR);
    dl_dataset_free(&d);
    shape[0] = 8;
    dl_dataset_alloc(&d, 10, 1, shape, 1);
    d.y[3] = 5;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "label 5");
    o.validation_split = 1.5f;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_ERR);
    {   /* on a model not yet compiled, so the unit count is what is refused */
        dl_model *u = dl_sequential(DL_SHAPE(8));
        DL_CHECK_EQ_INT(dl_add(u, dl_dense(0, DL_RELU)), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "dense layer with 0 units");
        dl_model_free(u);
    }
    DL_CHECK(dl_sequential(DL_SHAPE(0)) == NULL);
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_MSE, dl_adam(1e-3f)), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "already compiled");
    dl_dataset_free(&d);
    dl_model_free(m);
}

DL_TEST(validation_split_and_csv_log)
{
    dl_dataset d;
    dl_model *m = mlp(2, dl_adam(1e-2f));
    dl_fit_opts o = quiet(3, 32);
    char line[256];
    int rows = 0;
    FILE *f;
    const dl_history_row *h;
    blobs(&d, 400, 8);
    o.validation_split = 0.25f;
    o.csv_log = "build/test_model_log.csv";
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_history(m, &h), 3);
    DL_CHECK(h[2].val_accuracy > 0.8f && h[2].val_loss > 0.0f);
    f = fopen("build/test_model_log.csv", "r");
    DL_CHECK(f != NULL);
    if (f) {
        DL_CHECK(fgets(line, sizeof line, f) != NULL);
        DL_CHECK_STR_CONTAINS(line, "epoch,loss,accuracy,val_loss,val_accuracy,seconds");
        while (fgets(line, sizeof line, f)) rows++;
        fclose(f);
    }
    DL_CHECK_EQ_INT(rows, 3);
    remove("build/test_model_log.csv");
    dl_model_free(m);
    dl_dataset_free(&d);
}

/* dl_fit's profile: one line per node that ran, a step count that leaves out the
   validation pass, parts that add up to the whole, nothing when not asked for, and
   the same weights either way. */
DL_TEST(fit_profile_reports_where_the_step_time_goes)
{
    dl_dataset d, val;
    dl_model *a = mlp(4, dl_adam(1e-2f)), *b = mlp(4, dl_adam(1e-2f));
    dl_fit_opts o = quiet(2, 32);
    char line[256];
    long steps = -1;
    double total = -1.0, sum = 0.0, rest = -1.0, v1, v2;
    int dense = 0, parts = 0, profiles = 0;
    FILE *f = tmpfile();
    blobs(&d, 264, 9);                  /* 9 steps per epoch */
    blobs(&val, 3000, 10);              /* a validation pass far longer than the steps */
    o.validation = &val;
    o.out = f;
    DL_CHECK(f != NULL);
    if (!f) return;
    o.profile = 1;
    DL_CHECK_EQ_INT(dl_fit(a, &d, &o), DL_OK);
    o.profile = 0;
    DL_CHECK_EQ_INT(dl_fit(b, &d, &o), DL_OK);
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        char name[64];
        if (sscanf(line, "profile: %ld training steps, %lf us each", &steps, &total) == 2) { profiles++; continue; }
        if (sscanf(line, " batch gather %lf", &v1) == 1) { sum += v1; parts++; continue; }
        if (sscanf(line, " updates after the pass %lf", &v1) == 1) { sum += v1; parts++; continue; }
        if (sscanf(line, " the rest %lf", &rest) == 1) { sum += rest; parts++; continue; }
        if (sscanf(line, " %63s %lf %lf", name, &v1, &v2) == 3) {
            DL_CHECK(v1 >= 0.0 && v2 >= 0.0);
            if (!strncmp(name, "dense", 5)) dense++;
            sum += v1 + v2;
            parts++;
        }
    }
    fclose(f);
    DL_CHECK_EQ_INT(profiles, 1);         /* the second fit did not profile */
    DL_CHECK_EQ_INT((int)steps, 2 * 9);
    DL_CHECK(rest >= -0.05);               /* nodes timed outside the steps (validation) make it < 0 */
    DL_CHECK_EQ_INT(dense, 2);
    DL_CHECK(parts >= 7);
    if (!(total > 0.0 && fabs(sum - total) <= 0.01 * total + 0.05 * parts)) /* each printed to 0.1 */
        DL_FAILF("parts add up to %g us, the step took %g", sum, total);
    DL_CHECK(same_weights(a, b));
    dl_model_free(a); dl_model_free(b);
    dl_dataset_free(&d);
    dl_dataset_free(&val);
}

DL_TEST(binary_classifier_with_sigmoid_output)
{
    dl_dataset d;
    dl_model *m = dl_sequential(DL_SHAPE(8));
    dl_fit_opts o = quiet(10, 32);
    dl_metrics mt;
    float p[4];
    int i;
    blobs(&d, 600, 9);
    for (i = 0; i < 600; i++) d.y[i] = d.y[i] == 0.0f ? 1.0f : 0.0f;
    dl_model_seed(m, 3);
    dl_add(m, dl_dense(16, DL_TANH));
    dl_add(m, dl_dense(1, DL_SIGMOID));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_BCE, dl_adam(1e-2f)), DL_OK);
    DL_CHECK_EQ_INT(dl_fit(m, &d, &o), DL_OK);
    DL_CHECK_EQ_INT(dl_evaluate(m, &d, &mt), DL_OK);
    DL_CHECK(mt.accuracy > 0.9f);
    DL_CHECK_EQ_INT(mt.n_classes, 2);
    DL_CHECK_EQ_INT(dl_predict(m, d.x, 4, p), DL_OK);
    for (i = 0; i < 4; i++) DL_CHECK(p[i] > 0.0f && p[i] < 1.0f);
    dl_model_free(m);
    dl_dataset_free(&d);
}

DL_TEST_MAIN()
