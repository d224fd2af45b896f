/* dlc - one command for dlcore model files.
     dlc inspect FILE [--eval DIR]   architecture, each tensor's shape, range, encoding, bytes
     dlc eval FILE --data DIR        evaluates on DIR's t10k split; the last line is
                                     "test_accuracy <f> test_loss <f>"
     dlc compress IN OUT [--int8 [--calib DIR]] [--prune SPARSITY --data DIR --epochs N
                  [--batch N]] [--fp16] [--data DIR]
                                     sizes before/after, ratio, accuracy before/after
     dlc export IN OUT.onnx          ONNX (opset 13); int8 models as QDQ
     dlc bench FILE [--batch N]      microseconds per sample through dl_predict, fp32 and int8
   Exit status: 0 ok, 1 bad file or data, 2 bad arguments. One line on stderr on error. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const usage =
    "usage: dlc inspect FILE [--eval DIR]\n"
    "       dlc eval FILE --data DIR\n"
    "       dlc compress IN OUT [--int8 [--calib DIR]] [--prune SPARSITY --data DIR --epochs N [--batch N]] [--fp16] [--data DIR]\n"
    "       dlc export IN OUT.onnx\n"
    "       dlc bench FILE [--batch N]\n";

static int fail_usage(const char *msg)
{
    fprintf(stderr, "dlc: %s\n%s", msg, usage);
    return 2;
}

static int fail_data(const char *what)
{
    fprintf(stderr, "dlc: %s\n", what);
    return 1;
}

/* A whole decimal number in [lo, hi], or -1. */
static long parse_int(const char *s, long lo, long hi)
{
    char *end;
    long v;
    if (!s || !*s) return -1;
    v = strtol(s, &end, 10);
    return *end || v < lo || v > hi ? -1 : v;
}

static size_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n > 0 ? (size_t)n : 0;
}

/* ---- inspect ---- */

static int cmd_inspect(int argc, char **argv)
{
    dl_model *m;
    dl_graph *g;
    const char *eval_dir = NULL;
    int i, np, ns, wname = 14;
    if (argc == 4 && !strcmp(argv[2], "--eval")) eval_dir = argv[3];
    else if (argc != 2) return fail_usage("inspect takes FILE [--eval DIR]");
    m = dl_load(argv[1]);
    if (!m) return fail_data(dl_last_error());
    printf("%s\n", argv[1]);
    dl_summary(m, stdout);
    g = dl_model_graph(m);
    /* the parameters, then the state tensors (batch norm's moving statistics), which
       the file holds too: always f32, 4 bytes a value */
    np = dl_graph_param_count(g);
    ns = dl_graph_state_count(g);
    for (i = 0; i < np + ns; i++) {
        int len = (int)strlen(dl_node_name(g, i < np ? dl_graph_param(g, i) : dl_graph_state(g, i - np)));
        if (len > wname) wname = len;
    }
    printf("%-*s %-12s %12s %12s %12s %-12s %10s\n", wname, "tensor", "shape", "min", "max", "mean |w|", "encoding", "bytes");
    for (i = 0; i < np + ns; i++) {
        int id = i < np ? dl_graph_param(g, i) : dl_graph_state(g, i - np);
        dl_tensor t = dl_node_value(g, id);
        dl_tensor_info info;
        size_t k, n = dl_shape_numel(t.shape);
        float lo = t.data[0], hi = t.data[0];
        double abs_sum = 0.0;
        char s[32];
        for (k = 0; k < n; k++) {
            if (t.data[k] < lo) lo = t.data[k];
            if (t.data[k] > hi) hi = t.data[k];
            abs_sum += fabs((double)t.data[k]);
        }
        if (i < np) {
            if (dl_model_tensor_info(m, i, &info) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
        } else {
            info.encoding = DL_ENC_F32;
            info.bytes = n * sizeof(float);
        }
        printf("%-*s %-12s %12.5f %12.5f %12.6f %-12s %10zu\n", wname, dl_node_name(g, id), dl_shape_str(t.shape, s, sizeof s),
               (double)lo, (double)hi, abs_sum / (double)n, i < np ? dl_encoding_name(info.encoding) : "f32 state", info.bytes);
    }
    printf("file %zu bytes%s\n", file_size(argv[1]), dl_model_is_int8(m) ? ", int8 inference" : "");
    if (eval_dir) {
        dl_dataset test;
        dl_metrics mt;
        if (dl_idx_load(&test, eval_dir, "t10k") != DL_OK || dl_evaluate(m, &test, &mt) != DL_OK) {
            dl_model_free(m);
            return fail_data(dl_last_error());
        }
        printf("loaded model on %s/t10k: ", eval_dir);
        dl_metrics_print(&mt, stdout);
        dl_dataset_free(&test);
    }
    dl_model_free(m);
    return 0;
}

/* ---- eval ---- */

static int evaluate(dl_model *m, const char *dir, dl_metrics *mt)
{
    dl_dataset test;
    int rc;
    if (dl_idx_load(&test, dir, "t10k") != DL_OK) return DL_ERR;
    rc = dl_evaluate(m, &test, mt);
    dl_dataset_free(&test);
    return rc;
}

static int cmd_eval(int argc, char **argv)
{
    dl_model *m;
    dl_metrics mt;
    if (argc != 4 || strcmp(argv[2], "--data")) return fail_usage("eval takes FILE --data DIR");
    m = dl_load(argv[1]);
    if (!m) return fail_data(dl_last_error());
    if (evaluate(m, argv[3], &mt) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    printf("%s (%s) on %s/t10k: ", argv[1], dl_model_is_int8(m) ? "int8" : "float", argv[3]);
    dl_metrics_print(&mt, stdout);
    printf("test_accuracy %.4f test_loss %.4f\n", (double)mt.accuracy, (double)mt.loss);
    dl_model_free(m);
    return 0;
}

/* ---- compress ---- */

static int cmd_compress(int argc, char **argv)
{
    const char *in, *out, *data = NULL, *calib = NULL;
    int int8 = 0, fp16 = 0, i, rc = 0;
    long epochs = -1, batch = 32;
    double sparsity = -1.0;
    dl_model *m;
    dl_metrics before, after;
    size_t size_in, size_out;
    if (argc < 3) return fail_usage("compress takes IN OUT and options");
    in = argv[1];
    out = argv[2];
    for (i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--int8")) int8 = 1;
        else if (!strcmp(a, "--fp16")) fp16 = 1;
        else if (!strcmp(a, "--calib") && v) { calib = v; i++; }
        else if (!strcmp(a, "--data") && v) { data = v; i++; }
        else if (!strcmp(a, "--epochs") && v) {
            if ((epochs = parse_int(v, 0, 1000)) < 0) return fail_usage("--epochs needs a whole number in 0..1000");
            i++;
        } else if (!strcmp(a, "--batch") && v) {
            if ((batch = parse_int(v, 1, 65536)) < 0) return fail_usage("--batch needs a whole number in 1..65536");
            i++;
        } else if (!strcmp(a, "--prune") && v) {
            char *end;
            sparsity = strtod(v, &end);
            if (*end || !(sparsity >= 0.0 && sparsity < 1.0)) return fail_usage("--prune needs a sparsity in [0, 1)");
            i++;
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "compress: unknown or incomplete option '%s'", a);
            return fail_usage(msg);
        }
    }
    if (calib && !int8) return fail_usage("--calib goes with --int8");
    if (sparsity >= 0.0 && (!data || epochs < 0)) return fail_usage("--prune needs --data DIR and --epochs N");
    if (!int8 && !fp16 && sparsity < 0.0) return fail_usage("compress needs --int8, --prune or --fp16");
    m = dl_load(in);
    if (!m) return fail_data(dl_last_error());
    size_in = file_size(in);
    if (data && evaluate(m, data, &before) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    if (sparsity >= 0.0) {
        dl_dataset train;
        dl_prune_opts po;
        dl_fit_opts fo;
        if (dl_model_is_int8(m)) { dl_model_free(m); return fail_data("compress: --prune needs a float model (this one is int8)"); }
        if (dl_idx_load(&train, data, "train") != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
        memset(&po, 0, sizeof po);
        memset(&fo, 0, sizeof fo);
        po.sparsity = (float)sparsity;
        fo.epochs = (int)epochs;
        fo.batch = (int)batch;
        fo.progress = DL_PROGRESS_LINES;
        printf("pruning to %.0f%% with %ld epochs of fine-tuning\n", 100.0 * sparsity, epochs);
        rc = dl_prune(m, &po, epochs > 0 ? &train : NULL, &fo);
        dl_dataset_free(&train);
        if (rc != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    }
    if (int8) {
        dl_quant_opts qo;
        dl_dataset cal;
        memset(&qo, 0, sizeof qo);
        if (calib) {
            if (dl_idx_load(&cal, calib, "train") != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
            qo.calib = &cal;
        }
        rc = dl_quantize_int8(m, &qo);
        if (calib) dl_dataset_free(&cal);
        if (rc != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    }
    if (fp16 && dl_model_to_fp16(m) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    if (dl_save(m, out) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
    size_out = file_size(out);
    printf("size_before %zu size_after %zu ratio %.2f\n", size_in, size_out, size_out ? (double)size_in / (double)size_out : 0.0);
    if (data) {
        if (evaluate(m, data, &after) != DL_OK) { dl_model_free(m); return fail_data(dl_last_error()); }
        printf("accuracy_before %.4f accuracy_after %.4f loss_before %.4f loss_after %.4f\n", (double)before.accuracy,
               (double)after.accuracy, (double)before.loss, (double)after.loss);
    }
    dl_model_free(m);
    return 0;
}

/* ---- bench ---- */

static double now_s(void)
{
#if defined(_WIN32)
    return (double)clock() / CLOCKS_PER_SEC;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Microseconds per sample of one round: calls repeated for ~50 ms. */
static double time_round(dl_model *m, const float *x, int batch, float *out)
{
    double t0 = now_s(), t;
    long calls = 0;
    do {
        dl_predict(m, x, batch, out);
        calls++;
        t = now_s() - t0;
    } while (t < 0.05);
    return 1e6 * t / ((double)calls * batch);
}

static int cmd_bench(int argc, char **argv)
{
    long batch = 256;
    dl_model *f32, *i8;
    float *x, *out;
    double tf[9], ti[9];
    int r, n, rounds = 9;
    dl_rng rng;
    if (argc == 4 && !strcmp(argv[2], "--batch")) {
        if ((batch = parse_int(argv[3], 1, 65536)) < 0) return fail_usage("--batch needs a whole number in 1..65536");
    } else if (argc != 2) return fail_usage("bench takes FILE [--batch N]");
    f32 = dl_load(argv[1]);
    i8 = f32 ? dl_load(argv[1]) : NULL;
    if (!f32 || !i8) { dl_model_free(f32); return fail_data(dl_last_error()); }
    if (dl_model_is_int8(f32)) dl_model_dequantize(f32);
    if (!dl_model_is_int8(i8) && dl_quantize_int8(i8, NULL) != DL_OK) {
        dl_model_free(f32); dl_model_free(i8);
        return fail_data(dl_last_error());
    }
    n = dl_input_size(f32);
    x = (float *)malloc((size_t)batch * n * sizeof(float));
    out = (float *)malloc((size_t)batch * dl_output_size(f32) * sizeof(float));
    if (!x || !out) { free(x); free(out); dl_model_free(f32); dl_model_free(i8); return fail_data("out of memory"); }
    dl_rng_seed(&rng, 1);
    for (r = 0; r < (int)batch * n; r++) x[r] = dl_rng_uniform(&rng);
    time_round(f32, x, (int)batch, out);   /* warm-up: plans, workspaces, caches */
    time_round(i8, x, (int)batch, out);
    for (r = 0; r < rounds; r++) {   /* interleaved rounds; medians */
        tf[r] = time_round(f32, x, (int)batch, out);
        ti[r] = time_round(i8, x, (int)batch, out);
    }
    qsort(tf, (size_t)rounds, sizeof(double), cmp_double);
    qsort(ti, (size_t)rounds, sizeof(double), cmp_double);
    printf("%s batch %ld threads %d isa %s int8 kernel %s\n", argv[1], batch, dl_get_threads(), dl_isa_name(),
           dl_int8_kernel_name());
    printf("fp32_us_per_sample %.3f int8_us_per_sample %.3f speedup %.2f\n", tf[rounds / 2], ti[rounds / 2],
           tf[rounds / 2] / ti[rounds / 2]);
    free(x); free(out);
    dl_model_free(f32); dl_model_free(i8);
    return 0;
}

/* ---- export: ONNX through a small protobuf writer ----
   Only what an ONNX model needs: varints, 32-bit floats, length-delimited fields;
   a nested message is written to its own buffer and then appended with its length. */

typedef struct pb { unsigned char *p; size_t len, cap; int failed; } pb;

static void pb_bytes(pb *b, const void *d, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        unsigned char *np;
        while (cap < b->len + n) cap *= 2;
        np = (unsigned char *)realloc(b->p, cap);
        if (!np) { b->failed = 1; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void pb_varint(pb *b, uint64_t v)
{
    unsigned char c[10];
    int n = 0;
    do { c[n] = (unsigned char)(v & 0x7f); v >>= 7; if (v) c[n] |= 0x80; n++; } while (v);
    pb_bytes(b, c, (size_t)n);
}

static void pb_tag(pb *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }
static void pb_int(pb *b, int field, int64_t v) { pb_tag(b, field, 0); pb_varint(b, (uint64_t)v); }
static void pb_float(pb *b, int field, float f)
{
    uint32_t u;
    unsigned char c[4];
    memcpy(&u, &f, 4);
    c[0] = (unsigned char)u; c[1] = (unsigned char)(u >> 8); c[2] = (unsigned char)(u >> 16); c[3] = (unsigned char)(u >> 24);
    pb_tag(b, field, 5);
    pb_bytes(b, c, 4);
}
static void pb_blob(pb *b, int field, const void *d, size_t n) { pb_tag(b, field, 2); pb_varint(b, n); pb_bytes(b, d, n); }
static void pb_str(pb *b, int field, const char *s) { pb_blob(b, field, s, strlen(s)); }
/* Appends sub as field `field` and frees it. */
static void pb_msg(pb *b, int field, pb *sub)
{
    if (sub->failed) b->failed = 1;
    pb_blob(b, field, sub->p, sub->len);
    free(sub->p);
    memset(sub, 0, sizeof *sub);
}

enum { ONNX_FLOAT = 1, ONNX_UINT8 = 2, ONNX_INT8 = 3 };

/* TensorProto: dims, data_type, name, raw_data (little-endian, as ONNX wants). */
static void onnx_initializer(pb *graph, const char *name, int dtype, int ndim, const int64_t *dims, const void *raw, size_t bytes)
{
    pb t = { 0 };
    int i;
    for (i = 0; i < ndim; i++) pb_int(&t, 1, dims[i]);
    pb_int(&t, 2, dtype);
    pb_str(&t, 8, name);
    pb_blob(&t, 9, raw, bytes);
    pb_msg(graph, 5, &t);
}

/* raw float32 bytes in little-endian order whatever the host */
static void onnx_float_init(pb *graph, const char *name, int ndim, const int64_t *dims, const float *v, size_t n)
{
    unsigned char *raw = (unsigned char *)malloc(n * 4 + 1);
    size_t i;
    if (!raw) { graph->failed = 1; return; }
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        raw[4 * i] = (unsigned char)u; raw[4 * i + 1] = (unsigned char)(u >> 8);
        raw[4 * i + 2] = (unsigned char)(u >> 16); raw[4 * i + 3] = (unsigned char)(u >> 24);
    }
    onnx_initializer(graph, name, ONNX_FLOAT, ndim, dims, raw, n * 4);
    free(raw);
}

/* NodeProto with up to 3 inputs, one output, and optional int / float attributes. */
static void onnx_node(pb *graph, const char *op, const char *in0, const char *in1, const char *in2, const char *out,
                      const char *iattr, int64_t ival, const char *fattr, float fval)
{
    pb n = { 0 };
    pb_str(&n, 1, in0);
    if (in1) pb_str(&n, 1, in1);
    if (in2) pb_str(&n, 1, in2);
    pb_str(&n, 2, out);
    pb_str(&n, 3, out);
    pb_str(&n, 4, op);
    if (iattr) { pb a = { 0 }; pb_str(&a, 1, iattr); pb_int(&a, 3, ival); pb_int(&a, 20, 2); pb_msg(&n, 5, &a); }
    if (fattr) { pb a = { 0 }; pb_str(&a, 1, fattr); pb_float(&a, 2, fval); pb_int(&a, 20, 1); pb_msg(&n, 5, &a); }
    pb_msg(graph, 1, &n);
}

/* ValueInfoProto of a float tensor [batch, d...]; the batch dim is symbolic "N". */
static void onnx_value_info(pb *graph, int field, const char *name, int ndim, const int *dims)
{
    pb vi = { 0 }, type = { 0 }, tensor = { 0 }, shape = { 0 };
    int i;
    pb_str(&vi, 1, name);
    pb_int(&tensor, 1, ONNX_FLOAT);
    { pb d = { 0 }; pb_str(&d, 2, "N"); pb_msg(&shape, 1, &d); }
    for (i = 0; i < ndim; i++) { pb d = { 0 }; pb_int(&d, 1, dims[i]); pb_msg(&shape, 1, &d); }
    pb_msg(&tensor, 2, &shape);
    pb_msg(&type, 1, &tensor);
    pb_msg(&vi, 2, &type);
    pb_msg(graph, field, &vi);
}

static const char *onnx_activation(pb *graph, int act, float alpha, const char *in, char *out, size_t outsz, int li)
{
    snprintf(out, outsz, "act_%d", li);
    switch (act) {
    case DL_RELU: onnx_node(graph, "Relu", in, NULL, NULL, out, NULL, 0, NULL, 0.0f); return out;
    case DL_SIGMOID: onnx_node(graph, "Sigmoid", in, NULL, NULL, out, NULL, 0, NULL, 0.0f); return out;
    case DL_TANH: onnx_node(graph, "Tanh", in, NULL, NULL, out, NULL, 0, NULL, 0.0f); return out;
    case DL_SOFTMAX: onnx_node(graph, "Softmax", in, NULL, NULL, out, "axis", -1, NULL, 0.0f); return out;
    case DL_LEAKY_RELU: onnx_node(graph, "LeakyRelu", in, NULL, NULL, out, NULL, 0, "alpha", alpha > 0.0f ? alpha : 0.01f); return out;
    default: return in;
    }
}

/* NodeProto with any number of inputs (NULL-terminated), one output and attributes
   added by the onnx_attr_* calls between onnx_begin and onnx_end. */
static void onnx_begin(pb *n, const char *op, const char *const *in, const char *out)
{
    memset(n, 0, sizeof *n);
    for (; *in; in++) pb_str(n, 1, *in);
    pb_str(n, 2, out);
    pb_str(n, 3, out);
    pb_str(n, 4, op);
}
static void onnx_attr_int(pb *n, const char *name, int64_t v)
{
    pb a = { 0 };
    pb_str(&a, 1, name); pb_int(&a, 3, v); pb_int(&a, 20, 2);
    pb_msg(n, 5, &a);
}
static void onnx_attr_float(pb *n, const char *name, float v)
{
    pb a = { 0 };
    pb_str(&a, 1, name); pb_float(&a, 2, v); pb_int(&a, 20, 1);
    pb_msg(n, 5, &a);
}
static void onnx_attr_ints(pb *n, const char *name, const int64_t *v, int count)
{
    pb a = { 0 };
    int i;
    pb_str(&a, 1, name);
    for (i = 0; i < count; i++) pb_int(&a, 8, v[i]);
    pb_int(&a, 20, 7);
    pb_msg(n, 5, &a);
}
static void onnx_end(pb *graph, pb *n) { pb_msg(graph, 1, n); }

/* The tensor being built while the layers are walked. dlcore keeps a sample as
   [h, w, c] (channels last); ONNX's Conv, pooling and BatchNormalization want the
   channels first, so the graph switches to [N, c, h, w] before those and back
   before anything that reads dlcore's order (Flatten, Reshape, Gemm, Softmax). */
typedef struct onnx_cursor {
    pb *graph;
    dl_model *m;
    dl_graph *g;
    char cur[64];
    int nd, d[DL_MAX_DIMS];   /* the dlcore sample shape */
    int cf;                   /* the ONNX tensor holds it channels-first */
    int seq;
} onnx_cursor;

static const char *onnx_next(onnx_cursor *c, const char *what)
{
    static char name[64];   /* copied by every caller before the next call */
    snprintf(name, sizeof name, "%s_%d", what, ++c->seq);
    return name;
}

static void onnx_set(onnx_cursor *c, const char *name) { snprintf(c->cur, sizeof c->cur, "%s", name); }

static void onnx_transpose(onnx_cursor *c, int to_cf)
{
    int64_t perm[DL_MAX_DIMS + 1];
    const char *in[2];
    char out[64];
    pb n;
    int i;
    perm[0] = 0;
    for (i = 1; i <= c->nd; i++)   /* to_cf: [0, nd, 1 .. nd-1]; back: [0, 2 .. nd, 1] */
        perm[i] = to_cf ? (i == 1 ? c->nd : i - 1) : (i == c->nd ? 1 : i + 1);
    snprintf(out, sizeof out, "%s", onnx_next(c, to_cf ? "to_nchw" : "to_nhwc"));
    in[0] = c->cur; in[1] = NULL;
    onnx_begin(&n, "Transpose", in, out);
    onnx_attr_ints(&n, "perm", perm, c->nd + 1);
    onnx_end(c->graph, &n);
    onnx_set(c, out);
    c->cf = to_cf;
}

static void onnx_channels_last(onnx_cursor *c) { if (c->cf && c->nd > 1) onnx_transpose(c, 0); c->cf = 0; }
static void onnx_channels_first(onnx_cursor *c) { if (!c->cf && c->nd > 1) onnx_transpose(c, 1); c->cf = 1; }

/* Reshape to [N, dims...] ("0" keeps the batch size). */
static void onnx_reshape(onnx_cursor *c, int nd, const int *dims)
{
    int64_t sh[DL_MAX_DIMS + 1], len = nd + 1;
    const char *in[3];
    char sn[64], out[64];
    pb n;
    int i;
    sh[0] = 0;
    for (i = 0; i < nd; i++) sh[i + 1] = dims[i];
    snprintf(sn, sizeof sn, "%s", onnx_next(c, "shape"));
    snprintf(out, sizeof out, "%s", onnx_next(c, "reshape"));
    {   /* int64 little-endian */
        unsigned char raw[8 * (DL_MAX_DIMS + 1)];
        int b;
        for (i = 0; i <= nd; i++)
            for (b = 0; b < 8; b++) raw[8 * i + b] = (unsigned char)((uint64_t)sh[i] >> (8 * b));
        onnx_initializer(c->graph, sn, 7, 1, &len, raw, (size_t)8 * (nd + 1));
    }
    in[0] = c->cur; in[1] = sn; in[2] = NULL;
    onnx_begin(&n, "Reshape", in, out);
    onnx_end(c->graph, &n);
    onnx_set(c, out);
}

static void onnx_apply_activation(onnx_cursor *c, int act, float alpha, int li)
{
    char tmp[64];
    if (act == DL_SOFTMAX) onnx_channels_last(c);   /* over dlcore's last axis */
    if (onnx_activation(c->graph, act, alpha, c->cur, tmp, sizeof tmp, li) != c->cur) onnx_set(c, tmp);
}

static int onnx_find(dl_graph *g, const char *name)
{
    int k;
    for (k = 0; k < dl_graph_param_count(g); k++)
        if (!strcmp(dl_node_name(g, dl_graph_param(g, k)), name)) return dl_graph_param(g, k);
    for (k = 0; k < dl_graph_state_count(g); k++)
        if (!strcmp(dl_node_name(g, dl_graph_state(g, k)), name)) return dl_graph_state(g, k);
    return -1;
}

/* Leading pad and output size of one spatial dim, as dlcore computes them. */
static int onnx_pad(int in, int k, int stride, int dil, int mode, int pb_, int pe, int *pad_begin, int *pad_end)
{
    int ke = (k - 1) * dil + 1;
    if (mode == DL_PAD_SAME) {
        int o = (in + stride - 1) / stride, total = (o - 1) * stride + ke - in;
        if (total < 0) total = 0;
        pb_ = total / 2;
        pe = total - pb_;
    } else if (mode == DL_PAD_VALID) {
        pb_ = pe = 0;
    }
    *pad_begin = pb_;
    *pad_end = pe;
    return (in + pb_ + pe - ke) / stride + 1;
}

/* A calibrated activation range as QuantizeLinear/DequantizeLinear on the current
   tensor: x ~ s (q - z), q in 0..127 as the int8 kernels see it. */
static void onnx_qdq_input(onnx_cursor *c, const float *range, const char *tag)
{
    float s = (range[1] - range[0]) / 127.0f;
    long z;
    unsigned char zb;
    char xs[64], xz[64], xq[64], xd[64];
    if (!(s > 0.0f)) s = 1.0f;
    z = lrintf(-range[0] / s);
    zb = (unsigned char)(z < 0 ? 0 : z > 127 ? 127 : z);
    snprintf(xs, sizeof xs, "%.40s.x.scale", tag);
    snprintf(xz, sizeof xz, "%.40s.x.zero", tag);
    snprintf(xq, sizeof xq, "%.40s.x.q", tag);
    snprintf(xd, sizeof xd, "%.40s.x.dq", tag);
    onnx_float_init(c->graph, xs, 0, NULL, &s, 1);
    onnx_initializer(c->graph, xz, ONNX_UINT8, 0, NULL, &zb, 1);
    onnx_node(c->graph, "QuantizeLinear", c->cur, xs, xz, xq, NULL, 0, NULL, 0.0f);
    onnx_node(c->graph, "DequantizeLinear", xq, xs, xz, xd, NULL, 0, NULL, 0.0f);
    onnx_set(c, xd);
}

/* Conv: the HWIO kernel as OIHW (an int8 one through DequantizeLinear with a scale per
   output channel, axis 0), the bias, then the layer's activation. */
static int onnx_conv(onnx_cursor *c, const dl_layer *l, int conv_no, int li)
{
    const int8_t *w8 = NULL;
    const float *sc = NULL, *range = NULL;
    const dl_conv2d_opts *o = &l->conv;
    int groups = o->groups ? o->groups : 1, sh = o->stride_h ? o->stride_h : 1, sw = o->stride_w ? o->stride_w : 1;
    int dh = o->dil_h ? o->dil_h : 1, dw = o->dil_w ? o->dil_w : 1, cg = c->d[2] / groups, oc = l->units;
    int pt, pbot, pl, pr, oh, ow, wn, bn = -1, y, x, ci, co;
    int64_t wd[4], bd[1], ks[2], st[2], dil[2], pads[4];
    char wname[64], bname[64], out[64];
    const char *in[4];
    const float *w;
    float *t;
    pb n;
    oh = onnx_pad(c->d[0], l->kh, sh, dh, o->padding, o->pad_top, o->pad_bottom, &pt, &pbot);
    ow = onnx_pad(c->d[1], l->kw, sw, dw, o->padding, o->pad_left, o->pad_right, &pl, &pr);
    snprintf(wname, sizeof wname, "conv2d_%d.w", conv_no);
    snprintf(bname, sizeof bname, "conv2d_%d.b", conv_no);
    wn = onnx_find(c->g, wname);
    if (!o->no_bias) bn = onnx_find(c->g, bname);
    if (wn < 0 || (!o->no_bias && bn < 0)) return -1;
    w = dl_node_value(c->g, wn).data;
    if (dl_model_is_int8(c->m) && dl_model_int8_weights(c->m, li, &w8, &sc, &range) != DL_OK) w8 = NULL;
    t = (float *)malloc((size_t)oc * cg * l->kh * l->kw * sizeof(float));
    if (!t) return -1;
    for (co = 0; co < oc; co++)
        for (ci = 0; ci < cg; ci++)
            for (y = 0; y < l->kh; y++)
                for (x = 0; x < l->kw; x++) {
                    size_t from = (((size_t)y * l->kw + x) * cg + ci) * oc + co, to = (((size_t)co * cg + ci) * l->kh + y) * l->kw + x;
                    if (w8) ((int8_t *)(void *)t)[to] = w8[from];
                    else t[to] = w[from];
                }
    wd[0] = oc; wd[1] = cg; wd[2] = l->kh; wd[3] = l->kw;
    if (w8) {
        int64_t sd[1];
        unsigned char *zeros = (unsigned char *)calloc((size_t)oc, 1);
        char qn[80], sn[80], zn[80];
        sd[0] = oc;
        snprintf(qn, sizeof qn, "%s.int8", wname);
        snprintf(sn, sizeof sn, "%s.scale", wname);
        snprintf(zn, sizeof zn, "%s.zero", wname);
        onnx_initializer(c->graph, qn, ONNX_INT8, 4, wd, t, (size_t)oc * cg * l->kh * l->kw);
        onnx_float_init(c->graph, sn, 1, sd, sc, (size_t)oc);
        if (zeros) onnx_initializer(c->graph, zn, ONNX_INT8, 1, sd, zeros, (size_t)oc);
        else c->graph->failed = 1;
        free(zeros);
        onnx_node(c->graph, "DequantizeLinear", qn, sn, zn, wname, "axis", 0, NULL, 0.0f);
    } else {
        onnx_float_init(c->graph, wname, 4, wd, t, (size_t)oc * cg * l->kh * l->kw);
    }
    free(t);
    if (bn >= 0) { bd[0] = oc; onnx_float_init(c->graph, bname, 1, bd, dl_node_value(c->g, bn).data, (size_t)oc); }
    onnx_channels_first(c);
    if (range) onnx_qdq_input(c, range, wname);
    snprintf(out, sizeof out, "conv2d_%d", conv_no);
    in[0] = c->cur; in[1] = wname; in[2] = bn >= 0 ? bname : NULL; in[3] = NULL;
    onnx_begin(&n, "Conv", in, out);
    ks[0] = l->kh; ks[1] = l->kw; st[0] = sh; st[1] = sw; dil[0] = dh; dil[1] = dw;
    pads[0] = pt; pads[1] = pl; pads[2] = pbot; pads[3] = pr;
    onnx_attr_ints(&n, "kernel_shape", ks, 2);
    onnx_attr_ints(&n, "strides", st, 2);
    onnx_attr_ints(&n, "dilations", dil, 2);
    onnx_attr_ints(&n, "pads", pads, 4);
    onnx_attr_int(&n, "group", groups);
    onnx_end(c->graph, &n);
    onnx_set(c, out);
    c->d[0] = oh; c->d[1] = ow; c->d[2] = oc;
    onnx_apply_activation(c, l->activation, l->alpha, li);
    return 0;
}

static void onnx_pool(onnx_cursor *c, const dl_layer *l)
{
    const dl_pool2d_opts *o = &l->pool;
    int sh = o->stride_h ? o->stride_h : l->kh, sw = o->stride_w ? o->stride_w : l->kw, pt, pbot, pl, pr, oh, ow;
    int64_t ks[2], st[2], pads[4];
    const char *in[2];
    char out[64];
    pb n;
    oh = onnx_pad(c->d[0], l->kh, sh, 1, o->padding, o->pad_top, o->pad_bottom, &pt, &pbot);
    ow = onnx_pad(c->d[1], l->kw, sw, 1, o->padding, o->pad_left, o->pad_right, &pl, &pr);
    onnx_channels_first(c);
    snprintf(out, sizeof out, "%s", onnx_next(c, l->kind == DL_LAYER_MAX_POOL2D ? "max_pool" : "avg_pool"));
    in[0] = c->cur; in[1] = NULL;
    onnx_begin(&n, l->kind == DL_LAYER_MAX_POOL2D ? "MaxPool" : "AveragePool", in, out);
    ks[0] = l->kh; ks[1] = l->kw; st[0] = sh; st[1] = sw;
    pads[0] = pt; pads[1] = pl; pads[2] = pbot; pads[3] = pr;
    onnx_attr_ints(&n, "kernel_shape", ks, 2);
    onnx_attr_ints(&n, "strides", st, 2);
    onnx_attr_ints(&n, "pads", pads, 4);
    if (l->kind == DL_LAYER_AVG_POOL2D) onnx_attr_int(&n, "count_include_pad", 0);   /* as dlcore and Keras */
    onnx_end(c->graph, &n);
    onnx_set(c, out);
    c->d[0] = oh; c->d[1] = ow;
}

static int onnx_batch_norm(onnx_cursor *c, const dl_layer *l, int bn_no)
{
    static const char *const part[4] = { "gamma", "beta", "moving_mean", "moving_var" };
    char names[4][64], out[64];
    const char *in[6];
    int64_t dims[1];
    int k, ch = c->d[c->nd - 1];
    pb n;
    dims[0] = ch;
    for (k = 0; k < 4; k++) {
        int id;
        snprintf(names[k], sizeof names[k], "batch_norm_%d.%s", bn_no, part[k]);
        if ((id = onnx_find(c->g, names[k])) < 0) return -1;
        onnx_float_init(c->graph, names[k], 1, dims, dl_node_value(c->g, id).data, (size_t)ch);
    }
    onnx_channels_first(c);
    snprintf(out, sizeof out, "batch_norm_%d", bn_no);
    in[0] = c->cur;
    for (k = 0; k < 4; k++) in[k + 1] = names[k];
    in[5] = NULL;
    onnx_begin(&n, "BatchNormalization", in, out);
    onnx_attr_float(&n, "epsilon", l->bn.eps > 0.0f ? l->bn.eps : 1e-3f);
    onnx_end(c->graph, &n);
    onnx_set(c, out);
    return 0;
}

/* The sequential model as an ONNX graph: Gemm (or MatMul + Add on a sample of several
   dims) per dense layer, Conv, MaxPool / AveragePool / GlobalAveragePool,
   BatchNormalization with the moving statistics, Flatten and Reshape, and the
   activations. int8 dense kernels go through DequantizeLinear with per-output scales;
   a calibrated activation range through QuantizeLinear/DequantizeLinear. Dropout is
   the identity at inference and is left out; the output is what dl_predict returns. */
static int cmd_export(int argc, char **argv)
{
    dl_model *m;
    pb model = { 0 }, graph = { 0 };
    onnx_cursor c;
    dl_shape in;
    char nm[64], wname[64], bname[64], msg[160];
    int i, dense = 0, conv = 0, bn = 0;
    FILE *f;
    if (argc != 3) return fail_usage("export takes IN OUT.onnx");
    m = dl_load(argv[1]);
    if (!m) return fail_data(dl_last_error());
    memset(&c, 0, sizeof c);
    c.graph = &graph;
    c.m = m;
    c.g = dl_model_graph(m);
    in = dl_model_input_shape(m);
    onnx_set(&c, "input");
    c.nd = in.ndim;
    for (i = 0; i < in.ndim; i++) c.d[i] = (int)in.d[i];
    pb_str(&graph, 2, "dlcore");
    onnx_value_info(&graph, 11, "input", c.nd, c.d);
    msg[0] = 0;
    for (i = 0; i < dl_model_layer_count(m); i++) {
        dl_layer l = dl_model_layer(m, i);
        if (l.kind == DL_LAYER_DENSE) {
            int wi, bi, width = c.d[c.nd - 1];
            int64_t wd[2], bd[1];
            const int8_t *w8;
            const float *sc, *range;
            dense++;
            snprintf(wname, sizeof wname, "dense_%d.w", dense);
            snprintf(bname, sizeof bname, "dense_%d.b", dense);
            wi = onnx_find(c.g, wname);
            bi = onnx_find(c.g, bname);
            if (wi < 0 || bi < 0) { snprintf(msg, sizeof msg, "export: dense layer %d's tensors are missing", i + 1); break; }
            onnx_channels_last(&c);
            wd[0] = width; wd[1] = l.units; bd[0] = l.units;
            onnx_float_init(&graph, bname, 1, bd, dl_node_value(c.g, bi).data, (size_t)l.units);
            if (dl_model_is_int8(m) && dl_model_int8_weights(m, i, &w8, &sc, &range) == DL_OK) {
                int64_t sd[1];
                unsigned char *zeros = (unsigned char *)calloc((size_t)l.units, 1);
                char qn[80], sn[80], zn[80];
                sd[0] = l.units;
                snprintf(qn, sizeof qn, "%s.int8", wname);
                snprintf(sn, sizeof sn, "%s.scale", wname);
                snprintf(zn, sizeof zn, "%s.zero", wname);
                onnx_initializer(&graph, qn, ONNX_INT8, 2, wd, w8, (size_t)width * l.units);
                onnx_float_init(&graph, sn, 1, sd, sc, (size_t)l.units);
                onnx_initializer(&graph, zn, ONNX_INT8, 1, sd, zeros, (size_t)l.units);
                free(zeros);
                onnx_node(&graph, "DequantizeLinear", qn, sn, zn, wname, "axis", 1, NULL, 0.0f);
                if (range) onnx_qdq_input(&c, range, wname);
            } else {
                onnx_float_init(&graph, wname, 2, wd, dl_node_value(c.g, wi).data, (size_t)width * l.units);
            }
            snprintf(nm, sizeof nm, "dense_%d", dense);
            if (c.nd == 1) {
                onnx_node(&graph, "Gemm", c.cur, wname, bname, nm, NULL, 0, NULL, 0.0f);
            } else {   /* dlcore's dense acts on the last axis of a sample of several dims */
                char mm[80];
                snprintf(mm, sizeof mm, "%.60s.matmul", nm);
                onnx_node(&graph, "MatMul", c.cur, wname, NULL, mm, NULL, 0, NULL, 0.0f);
                onnx_node(&graph, "Add", mm, bname, NULL, nm, NULL, 0, NULL, 0.0f);
            }
            onnx_set(&c, nm);
            c.d[c.nd - 1] = l.units;
            onnx_apply_activation(&c, l.activation, l.alpha, i);
        } else if (l.kind == DL_LAYER_ACTIVATION) {
            onnx_apply_activation(&c, l.activation, l.alpha, i);
        } else if (l.kind == DL_LAYER_FLATTEN) {
            int k, n = 1;
            onnx_channels_last(&c);
            if (c.nd > 1) {
                snprintf(nm, sizeof nm, "%s", onnx_next(&c, "flatten"));
                onnx_node(&graph, "Flatten", c.cur, NULL, NULL, nm, "axis", 1, NULL, 0.0f);
                onnx_set(&c, nm);
            }
            for (k = 0; k < c.nd; k++) n *= c.d[k];
            c.nd = 1; c.d[0] = n;
        } else if (l.kind == DL_LAYER_RESHAPE) {
            int k;
            onnx_channels_last(&c);
            for (k = 0; k < l.shape.ndim; k++) c.d[k] = (int)l.shape.d[k];
            c.nd = l.shape.ndim;
            onnx_reshape(&c, c.nd, c.d);
        } else if (l.kind == DL_LAYER_CONV2D || l.kind == DL_LAYER_MAX_POOL2D || l.kind == DL_LAYER_AVG_POOL2D ||
                   l.kind == DL_LAYER_GLOBAL_AVG_POOL2D) {
            if (c.nd == 2) {   /* (h, w) is taken as (h, w, 1): channels first is a reshape */
                int d3[3];
                d3[0] = 1; d3[1] = c.d[0]; d3[2] = c.d[1];
                onnx_reshape(&c, 3, d3);
                c.nd = 3; c.d[2] = 1; c.cf = 1;
            }
            if (c.nd != 3) { snprintf(msg, sizeof msg, "export: layer %d gets %d-D samples, not (h, w, c)", i + 1, c.nd); break; }
            if (l.kind == DL_LAYER_CONV2D) {
                if (onnx_conv(&c, &l, ++conv, i) != 0) { snprintf(msg, sizeof msg, "export: conv2d layer %d's tensors are missing", i + 1); break; }
            } else if (l.kind == DL_LAYER_GLOBAL_AVG_POOL2D) {
                char out[64];
                onnx_channels_first(&c);
                snprintf(out, sizeof out, "%s", onnx_next(&c, "global_avg_pool"));
                onnx_node(&graph, "GlobalAveragePool", c.cur, NULL, NULL, out, NULL, 0, NULL, 0.0f);
                snprintf(nm, sizeof nm, "%.50s.flat", out);
                onnx_node(&graph, "Flatten", out, NULL, NULL, nm, "axis", 1, NULL, 0.0f);
                onnx_set(&c, nm);
                c.nd = 1; c.d[0] = c.d[2]; c.cf = 0;
            } else {
                onnx_pool(&c, &l);
            }
        } else if (l.kind == DL_LAYER_BATCH_NORM) {
            if (onnx_batch_norm(&c, &l, ++bn) != 0) { snprintf(msg, sizeof msg, "export: batch_norm layer %d's tensors are missing", i + 1); break; }
        } else if (l.kind != DL_LAYER_DROPOUT) {
            snprintf(msg, sizeof msg, "export: layer %d is of a kind ONNX export does not cover", i + 1);
            break;
        }
    }
    if (msg[0]) { dl_model_free(m); free(graph.p); return fail_data(msg); }
    onnx_channels_last(&c);
    onnx_node(&graph, "Identity", c.cur, NULL, NULL, "output", NULL, 0, NULL, 0.0f);
    onnx_value_info(&graph, 12, "output", c.nd, c.d);
    pb_int(&model, 1, 7);                /* ir_version 7 goes with opset 13 */
    pb_str(&model, 2, "dlcore");
    pb_msg(&model, 7, &graph);
    { pb op = { 0 }; pb_str(&op, 1, ""); pb_int(&op, 2, 13); pb_msg(&model, 8, &op); }
    dl_model_free(m);
    if (model.failed) { free(model.p); return fail_data("export: out of memory"); }
    {   /* written next to the target and renamed: never a partial file */
        char tmpname[4096];
        int ok;
        snprintf(tmpname, sizeof tmpname, "%s.tmp", argv[2]);
        f = fopen(tmpname, "wb");
        if (!f) { free(model.p); fprintf(stderr, "dlc: export: cannot create '%s'\n", tmpname); return 1; }
        ok = fwrite(model.p, 1, model.len, f) == model.len;
        ok = fclose(f) == 0 && ok;
        free(model.p);
        if (ok) { remove(argv[2]); ok = rename(tmpname, argv[2]) == 0; }
        if (!ok) { remove(tmpname); fprintf(stderr, "dlc: export: writing '%s' failed\n", argv[2]); return 1; }
    }
    printf("wrote %s (%zu bytes, opset 13)\n", argv[2], file_size(argv[2]));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return fail_usage("no command");
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(argv[1], "compress")) return cmd_compress(argc - 1, argv + 1);
    if (!strcmp(argv[1], "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) { fputs(usage, stdout); return 0; }
    {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown command '%s'", argv[1]);
        return fail_usage(msg);
    }
}
