/* Convolutional networks through the graph and the model API: finite-difference
   gradient checks of conv2d, pooling, global average pooling and batch norm over the
   edge geometries; max pooling's ties; batch norm's statistics; augmentation; a small
   CNN that learns Fashion-MNIST; model files of version 2 (round trip bit for bit,
   bad files refused, version 1 still read); no allocation in a training step. */
#include "dltest_alloc.h"
#include "dltest.h"

#define TMP "build/test_cnn.tmp.dlc"

/* cmd.exe's mkdir knows no -p. */
#ifdef _WIN32
#include <direct.h>
#include <errno.h>
#define TEST_MKDIR_P(p) ((void)(_mkdir(p) == 0 || errno == EEXIST))
#else
#define TEST_MKDIR_P(p) ((void)!system("mkdir -p " p))
#endif

static float uniform(dl_rng *r, float lo, float hi) { return lo + (hi - lo) * dl_rng_uniform(r); }

/* loss = sum(y * r) with r random: every output gets its own O(1) weight, so the
   gradient of each input is O(1) too and an error cannot hide under the check's
   1e-2 floor as it could under a mean. Returns the loss node; r gets filled. */
static int weighted_sum(dl_graph *g, int y, int *r_node)
{
    dl_tensor t = dl_node_value(g, y);
    dl_shape s = t.shape;
    int i;
    for (i = 0; i + 1 < s.ndim; i++) s.d[i] = s.d[i + 1];
    s.d[--s.ndim] = 0;
    *r_node = dl_input(g, "r", s);
    return dl_op_sum(g, dl_op_mul(g, y, *r_node));
}

static void fill_inputs(dl_graph *g, int x, int r, uint64_t seed)
{
    dl_rng rng;
    dl_tensor tx = dl_node_value(g, x), tr = dl_node_value(g, r);
    size_t i;
    dl_rng_seed(&rng, seed);
    for (i = 0; i < dl_shape_numel(tx.shape); i++) tx.data[i] = uniform(&rng, -1.0f, 1.0f);
    for (i = 0; i < dl_shape_numel(tr.shape); i++) tr.data[i] = uniform(&rng, -1.0f, 1.0f);
}

/* Garbage in a gradient buffer before the pass: its first writer must overwrite every
   value (pixels no window covers included), never add to what was there. */
static void poison_grad(dl_graph *g, int node)
{
    dl_tensor t = dl_node_grad(g, node);
    size_t i;
    for (i = 0; i < dl_shape_numel(t.shape); i++) t.data[i] = 1e30f;
}

typedef struct conv_case {
    const char *what;
    int n, h, w, c, oc, kh, kw;
    dl_conv2d_opts o;
    int bias;
} conv_case;

static float conv_gradcheck(const conv_case *cc)
{
    dl_graph *g = dl_graph_new(7);
    int x = dl_input(g, "x", DL_SHAPE(cc->h, cc->w, cc->c)), grp = cc->o.groups ? cc->o.groups : 1, w, b, y, r, loss;
    float err;
    w = dl_param(g, "w", DL_SHAPE(cc->kh, cc->kw, cc->c / grp, cc->oc), DL_INIT_GLOROT_UNIFORM);
    b = cc->bias ? dl_param(g, "b", DL_SHAPE(cc->oc), DL_INIT_HE_NORMAL) : DL_NONE;
    dl_require_grad(g, x);
    y = dl_op_conv2d(g, x, w, b, &cc->o);
    if (y < 0) { fprintf(stderr, "  %s: %s\n", cc->what, dl_last_error()); dl_graph_free(g); return INFINITY; }
    loss = weighted_sum(g, y, &r);
    if (loss < 0 || dl_graph_plan(g, cc->n) != DL_OK || dl_graph_set_batch(g, cc->n) != DL_OK) {
        fprintf(stderr, "  %s: %s\n", cc->what, dl_last_error());
        dl_graph_free(g);
        return INFINITY;
    }
    fill_inputs(g, x, r, 11);
    poison_grad(g, x);
    err = dl_gradcheck(g, loss, 1e-2f);
    if (!(err < 1e-2f)) fprintf(stderr, "  %s: gradient error %g\n", cc->what, (double)err);
    dl_graph_free(g);
    return err;
}

DL_TEST(conv2d_gradients_match_finite_differences)
{
    static const conv_case cases[] = {
        /* what                          n  h  w  c oc kh kw  sh sw dh dw grp padding        pads t b l r  bias */
        { "stride 1 valid",              2, 5, 6, 3, 4, 3, 3, { 0, 0, 0, 0, 0, DL_PAD_VALID,    0, 0, 0, 0, 0, 0 }, 1 },
        { "stride 2 same",               2, 7, 6, 3, 5, 3, 3, { 2, 2, 0, 0, 0, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "stride 2x1 valid 2x3 kernel", 1, 6, 5, 2, 3, 2, 3, { 2, 1, 0, 0, 0, DL_PAD_VALID,    0, 0, 0, 0, 0, 0 }, 1 },
        { "dilation 2",                  1, 7, 7, 2, 3, 3, 3, { 0, 0, 2, 2, 0, DL_PAD_VALID,    0, 0, 0, 0, 0, 0 }, 1 },
        { "dilation 2 same stride 2",    2, 6, 7, 2, 2, 3, 2, { 2, 2, 2, 2, 0, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "groups 2 same",               2, 5, 5, 4, 6, 3, 3, { 0, 0, 0, 0, 2, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "depthwise",                   1, 4, 5, 3, 3, 3, 3, { 0, 0, 0, 0, 3, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "kernel larger than input",    2, 2, 3, 1, 2, 5, 5, { 0, 0, 0, 0, 0, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "1x1 images, 1x1 kernel",      3, 1, 1, 3, 4, 1, 1, { 0, 0, 0, 0, 0, DL_PAD_VALID,    0, 0, 0, 0, 0, 0 }, 1 },
        { "1x1 images, 3x3 same",        2, 1, 1, 2, 3, 3, 3, { 0, 0, 0, 0, 0, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 1 },
        { "batch 1, odd channels",       1, 4, 4, 5, 7, 3, 3, { 0, 0, 0, 0, 0, DL_PAD_VALID,    0, 0, 0, 0, 0, 0 }, 1 },
        { "explicit uneven pads",        2, 4, 5, 2, 3, 3, 3, { 2, 1, 0, 0, 0, DL_PAD_EXPLICIT, 1, 2, 0, 1, 0, 0 }, 1 },
        { "no bias",                     2, 4, 4, 3, 2, 3, 3, { 0, 0, 0, 0, 0, DL_PAD_SAME,     0, 0, 0, 0, 0, 0 }, 0 },
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) DL_CHECK(conv_gradcheck(&cases[i]) < 1e-2f);
}

/* The conv2d op with ReLU inside against conv2d followed by the relu op (checked in
   test_graph): same seed, so the same weights; outputs and every gradient agree. */
static void fused_or_not(int fused, float *y, float *gx, float *gw, float *gb)
{
    dl_conv2d_opts o = { 2, 1, 0, 0, 0, DL_PAD_SAME, 0, 0, 0, 0, 0, 0 };
    dl_graph *g = dl_graph_new(3);
    int x = dl_input(g, "x", DL_SHAPE(5, 5, 3)), w, b, h, r, loss;
    size_t i;
    o.relu = fused;
    w = dl_param(g, "w", DL_SHAPE(3, 3, 3, 4), DL_INIT_GLOROT_UNIFORM);
    b = dl_param(g, "b", DL_SHAPE(4), DL_INIT_HE_NORMAL);
    dl_require_grad(g, x);
    h = dl_op_conv2d(g, x, w, b, &o);
    if (!fused) h = dl_op_relu(g, h);
    loss = weighted_sum(g, h, &r);
    if (dl_graph_plan(g, 2) != DL_OK || dl_graph_set_batch(g, 2) != DL_OK) { DL_FAILF("%s", dl_last_error()); dl_graph_free(g); return; }
    fill_inputs(g, x, r, 5);
    DL_CHECK(dl_forward(g, loss) == DL_OK && dl_backward(g, loss) == DL_OK);
    for (i = 0; i < 2 * 3 * 5 * 4; i++) y[i] = dl_node_value(g, h).data[i];
    memcpy(gx, dl_node_grad(g, x).data, 2 * 5 * 5 * 3 * sizeof(float));
    memcpy(gw, dl_node_grad(g, w).data, 3 * 3 * 3 * 4 * sizeof(float));
    memcpy(gb, dl_node_grad(g, b).data, 4 * sizeof(float));
    dl_graph_free(g);
}

DL_TEST(conv2d_fused_relu_equals_conv2d_then_relu)
{
    float y[2][120], gx[2][150], gw[2][108], gb[2][4];
    int i, zeros = 0;
    fused_or_not(1, y[1], gx[1], gw[1], gb[1]);
    fused_or_not(0, y[0], gx[0], gw[0], gb[0]);
    for (i = 0; i < 120; i++) zeros += y[0][i] == 0.0f;
    DL_CHECK(zeros > 10 && zeros < 110);   /* both sides of the kink are exercised */
    DL_CHECK(memcmp(y[0], y[1], sizeof y[0]) == 0);
    for (i = 0; i < 150; i++) DL_CHECK_NEAR(gx[1][i], gx[0][i], 1e-5);
    for (i = 0; i < 108; i++) DL_CHECK_NEAR(gw[1][i], gw[0][i], 1e-5);
    for (i = 0; i < 4; i++) DL_CHECK_NEAR(gb[1][i], gb[0][i], 1e-5);
}

static float pool_gradcheck(int op, int n, int h, int w, int c, int kh, int kw, const dl_pool2d_opts *o, int *out_h)
{
    dl_graph *g = dl_graph_new(9);
    int x = dl_input(g, "x", DL_SHAPE(h, w, c)), y, r, loss, i, len;
    float err, *xv;
    dl_rng rng;
    dl_require_grad(g, x);
    y = op == 0 ? dl_op_max_pool2d(g, x, kh, kw, o) : op == 1 ? dl_op_avg_pool2d(g, x, kh, kw, o) : dl_op_global_avg_pool2d(g, x);
    if (y < 0) { fprintf(stderr, "  %s\n", dl_last_error()); dl_graph_free(g); return INFINITY; }
    loss = weighted_sum(g, y, &r);
    if (dl_graph_plan(g, n) != DL_OK || dl_graph_set_batch(g, n) != DL_OK) { dl_graph_free(g); return INFINITY; }
    fill_inputs(g, x, r, 13);
    /* distinct values 0.05 apart, shuffled: no two in a window within the step */
    xv = dl_node_value(g, x).data;
    len = n * h * w * c;
    for (i = 0; i < len; i++) xv[i] = 0.05f * (float)i - 1.0f;
    dl_rng_seed(&rng, 3);
    for (i = len - 1; i > 0; i--) { int j = (int)dl_rng_below(&rng, (uint32_t)i + 1); float t = xv[i]; xv[i] = xv[j]; xv[j] = t; }
    if (out_h) *out_h = dl_node_value(g, y).shape.d[1];
    poison_grad(g, x);
    err = dl_gradcheck(g, loss, 1e-2f);   /* values are >= 0.05 apart: no order changes */
    dl_graph_free(g);
    return err;
}

DL_TEST(pooling_gradients_match_finite_differences)
{
    dl_pool2d_opts same = { 0, 0, DL_PAD_SAME, 0, 0, 0, 0 }, s1 = { 1, 1, DL_PAD_VALID, 0, 0, 0, 0 };
    dl_pool2d_opts s2same = { 2, 2, DL_PAD_SAME, 0, 0, 0, 0 }, expl = { 2, 1, DL_PAD_EXPLICIT, 1, 0, 0, 1 };
    int op, oh = 0;
    for (op = 0; op < 2; op++) {
        DL_CHECK(pool_gradcheck(op, 2, 6, 6, 3, 2, 2, NULL, &oh) < 1e-2f);     /* Keras' default: stride = size */
        DL_CHECK_EQ_INT(oh, 3);
        DL_CHECK(pool_gradcheck(op, 1, 5, 7, 2, 2, 2, NULL, &oh) < 1e-2f);     /* odd size: the last row is dropped */
        DL_CHECK_EQ_INT(oh, 2);
        DL_CHECK(pool_gradcheck(op, 2, 5, 5, 3, 3, 3, &s1, &oh) < 1e-2f);      /* overlapping windows */
        DL_CHECK_EQ_INT(oh, 3);
        DL_CHECK(pool_gradcheck(op, 2, 5, 5, 1, 2, 2, &same, &oh) < 1e-2f);    /* same: ceil(5 / 2) */
        DL_CHECK_EQ_INT(oh, 3);
        DL_CHECK(pool_gradcheck(op, 1, 7, 6, 5, 3, 3, &s2same, &oh) < 1e-2f);
        DL_CHECK_EQ_INT(oh, 4);
        DL_CHECK(pool_gradcheck(op, 2, 4, 5, 2, 2, 2, &expl, &oh) < 1e-2f);    /* explicit pads, stride 2x1 */
        DL_CHECK_EQ_INT(oh, 2);
        DL_CHECK(pool_gradcheck(op, 1, 1, 1, 3, 1, 1, NULL, &oh) < 1e-2f);     /* 1x1 images */
    }
    DL_CHECK(pool_gradcheck(2, 2, 3, 4, 5, 0, 0, NULL, NULL) < 1e-2f);          /* global average */
    DL_CHECK(pool_gradcheck(2, 1, 1, 1, 3, 0, 0, NULL, NULL) < 1e-2f);
}

static void max_pool_ties(void)
{
    /* A finite difference at a tie is one-sided, so ties are checked by what the
       gradient must be: each output's dy goes to exactly one pixel, the first (in
       row-major order) of the largest pixels of its window, and nowhere else. */
    enum { N = 2, H = 5, W = 5, C = 23, K = 3 };   /* 23 channels: 16-, 4- and 1-lane steps */
    dl_pool2d_opts o = { 1, 2, DL_PAD_SAME, 0, 0, 0, 0 };   /* overlapping rows, padding */
    dl_graph *g = dl_graph_new(1);
    int x = dl_input(g, "x", DL_SHAPE(H, W, C)), y, r, loss, oh, ow, b, oy, ox, k, i, j;
    float want[N * H * W * C], *xv, *rv;
    dl_require_grad(g, x);
    y = dl_op_max_pool2d(g, x, K, K, &o);
    loss = weighted_sum(g, y, &r);
    DL_CHECK(dl_graph_plan(g, N) == DL_OK && dl_graph_set_batch(g, N) == DL_OK);
    fill_inputs(g, x, r, 2);
    xv = dl_node_value(g, x).data;
    rv = dl_node_value(g, r).data;
    /* values from {0, 1, 2}: every window has ties, often among its largest */
    for (i = 0; i < N * H * W * C; i++) xv[i] = (float)((i * 7 + i / 5) % 3);
    for (k = 0; k < C; k++) xv[k] = 5.0f;    /* ... and one window-wide winner */
    DL_CHECK(dl_forward(g, loss) == DL_OK && dl_backward(g, loss) == DL_OK);
    oh = dl_node_value(g, y).shape.d[1];
    ow = dl_node_value(g, y).shape.d[2];
    DL_CHECK_EQ_INT(oh, 5);
    DL_CHECK_EQ_INT(ow, 3);
    memset(want, 0, sizeof want);
    for (b = 0; b < N; b++)
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++)
                for (k = 0; k < C; k++) {
                    /* same padding: total (oh-1)*1 + 3 - 5 = 2 rows, 1 on top; (3-1)*2 + 3 - 5 = 2 columns, 1 left */
                    int best = -1;
                    float bv = -1.0f;
                    for (i = oy - 1; i < oy + 2; i++)
                        for (j = 2 * ox - 1; j < 2 * ox + 2; j++) {
                            float v;
                            if (i < 0 || i >= H || j < 0 || j >= W) continue;
                            v = xv[((b * H + i) * W + j) * C + k];
                            if (v > bv) { bv = v; best = (b * H + i) * W + j; }
                        }
                    DL_CHECK(dl_node_value(g, y).data[((b * oh + oy) * ow + ox) * C + k] == bv);
                    want[best * C + k] += rv[((b * oh + oy) * ow + ox) * C + k];
                }
    for (i = 0; i < N * H * W * C; i++)
        if (fabsf(dl_node_grad(g, x).data[i] - want[i]) > 1e-6f) { DL_FAILF("dx[%d] = %g, want %g", i, (double)dl_node_grad(g, x).data[i], (double)want[i]); break; }
    dl_graph_free(g);
}

DL_TEST(max_pool_ties_send_the_gradient_to_the_first_largest_pixel)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    int i, tried = 0;
    for (i = 0; i < 4; i++) {
        if (dl_set_isa(isas[i]) != DL_OK) continue;
        tried++;
        max_pool_ties();
    }
#ifdef DLCORE_NO_SIMD
    DL_CHECK_EQ_INT(tried, 1);   /* the scalar kernel alone */
#else
    DL_CHECK(tried >= 2);
#endif
    dl_set_isa("auto");
}

static int bn_graph(dl_graph *g, int c, int ndim_sample, int *x, int *gamma, int *beta, int *mm, int *mv, int *r, int *y)
{
    int yy;
    dl_batch_norm_opts o = { 0.0f, 0.0f };   /* Keras' defaults */
    *x = dl_input(g, "x", ndim_sample == 3 ? DL_SHAPE(3, 2, c) : DL_SHAPE(c));
    *gamma = dl_param(g, "gamma", DL_SHAPE(c), DL_INIT_HE_NORMAL);
    *beta = dl_param(g, "beta", DL_SHAPE(c), DL_INIT_HE_NORMAL);
    *mm = dl_state(g, "mean", DL_SHAPE(c), DL_INIT_ZEROS);
    *mv = dl_state(g, "var", DL_SHAPE(c), DL_INIT_ONES);
    dl_require_grad(g, *x);
    yy = dl_op_batch_norm(g, *x, *gamma, *beta, *mm, *mv, &o);
    if (y) *y = yy;
    return weighted_sum(g, yy, r);
}

DL_TEST(batch_norm_gradients_match_finite_differences)
{
    int mode, shape;
    for (shape = 1; shape <= 3; shape += 2)
        for (mode = 1; mode >= 0; mode--) {
            dl_graph *g = dl_graph_new(4);
            int x, ga, be, mm, mv, r, loss = bn_graph(g, 5, shape, &x, &ga, &be, &mm, &mv, &r, NULL), k;
            float err;
            DL_CHECK(loss >= 0 && dl_graph_plan(g, 4) == DL_OK && dl_graph_set_batch(g, shape == 3 ? 3 : 4) == DL_OK);
            fill_inputs(g, x, r, 8);
            for (k = 0; k < 5; k++) { dl_node_value(g, mm).data[k] = 0.1f * k; dl_node_value(g, mv).data[k] = 0.5f + 0.2f * k; }
            dl_graph_set_training(g, mode);
            err = dl_gradcheck(g, loss, 1e-2f);
            if (!(err < 1e-2f)) fprintf(stderr, "  batch norm, %s, %d-D samples: error %g\n", mode ? "training" : "inference", shape, (double)err);
            DL_CHECK(err < 1e-2f);
            dl_graph_free(g);
        }
}

DL_TEST(batch_norm_statistics_follow_keras)
{
    /* Training: the output has the batch's per-channel mean beta and standard deviation
       |gamma| sqrt(var / (var + eps)); the moving statistics take 1 - 0.99 of the batch's
       mean and unbiased variance. Inference: the moving statistics normalise. */
    enum { N = 4, C = 3, ROWS = N * 6 };
    dl_graph *g = dl_graph_new(4);
    int x, ga, be, mm, mv, r, y, loss = bn_graph(g, C, 3, &x, &ga, &be, &mm, &mv, &r, &y), k, i;
    const float *xv, *yv, *gv, *bv;
    double mean[C], var[C], m2[C];
    DL_CHECK(loss >= 0 && dl_graph_plan(g, N) == DL_OK && dl_graph_set_batch(g, N) == DL_OK);
    fill_inputs(g, x, r, 21);
    xv = dl_node_value(g, x).data;
    for (i = 0; i < ROWS * C; i++) dl_node_value(g, x).data[i] = xv[i] * (1.0f + (float)(i % C)) + 2.0f * (float)(i % C);
    dl_graph_set_training(g, 1);
    DL_CHECK(dl_forward(g, y) == DL_OK);
    yv = dl_node_value(g, y).data; gv = dl_node_value(g, ga).data; bv = dl_node_value(g, be).data;
    for (k = 0; k < C; k++) {
        double s = 0, sq = 0, ys = 0, ysq = 0;
        for (i = 0; i < ROWS; i++) s += xv[i * C + k];
        mean[k] = s / ROWS;
        for (i = 0; i < ROWS; i++) sq += (xv[i * C + k] - mean[k]) * (xv[i * C + k] - mean[k]);
        var[k] = sq / ROWS;
        for (i = 0; i < ROWS; i++) ys += yv[i * C + k];
        for (i = 0; i < ROWS; i++) ysq += (yv[i * C + k] - ys / ROWS) * (yv[i * C + k] - ys / ROWS);
        DL_CHECK_NEAR(ys / ROWS, bv[k], 1e-4);
        DL_CHECK_NEAR(sqrt(ysq / ROWS), fabs(gv[k]) * sqrt(var[k] / (var[k] + 1e-3)), 1e-4);
        DL_CHECK_NEAR(dl_node_value(g, mm).data[k], 0.01 * mean[k], 1e-5);
        DL_CHECK_NEAR(dl_node_value(g, mv).data[k], 0.99 + 0.01 * var[k] * ROWS / (ROWS - 1), 1e-5);
        m2[k] = dl_node_value(g, mm).data[k];
    }
    dl_graph_set_training(g, 0);
    DL_CHECK(dl_forward(g, y) == DL_OK);
    for (i = 0; i < ROWS; i++)
        for (k = 0; k < C; k++) {
            double v = dl_node_value(g, mv).data[k];
            DL_CHECK_NEAR(yv[i * C + k], gv[k] * (xv[i * C + k] - m2[k]) / sqrt(v + 1e-3) + bv[k], 1e-4);
        }
    /* evaluation leaves the moving statistics alone */
    DL_CHECK(dl_node_value(g, mm).data[0] == (float)m2[0]);
    dl_graph_free(g);
}

DL_TEST(ops_reject_bad_geometry)
{
    dl_graph *g = dl_graph_new(1);
    int x = dl_input(g, "x", DL_SHAPE(4, 4, 3)), flat = dl_input(g, "f", DL_SHAPE(12));
    int w = dl_param(g, "w", DL_SHAPE(3, 3, 3, 2), DL_INIT_ZEROS), w5 = dl_param(g, "w5", DL_SHAPE(5, 5, 3, 2), DL_INIT_ZEROS);
    int wg = dl_param(g, "wg", DL_SHAPE(3, 3, 1, 2), DL_INIT_ZEROS), gm = dl_param(g, "g", DL_SHAPE(4), DL_INIT_ONES);
    dl_conv2d_opts o;
    dl_pool2d_opts po = { 0, 0, DL_PAD_EXPLICIT, 2, 0, 0, 0 };
    memset(&o, 0, sizeof o);
    DL_CHECK(dl_op_conv2d(g, flat, w, DL_NONE, NULL) < 0);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "conv2d");
    DL_CHECK(dl_op_conv2d(g, x, w5, DL_NONE, NULL) < 0);            /* 5x5 kernel, 4x4 image, valid */
    DL_CHECK_STR_CONTAINS(dl_last_error(), "does not fit");
    o.padding = DL_PAD_SAME;
    DL_CHECK(dl_op_conv2d(g, x, w5, DL_NONE, &o) >= 0);             /* ... fits with same */
    o.groups = 2;                                                   /* 3 channels, 2 groups */
    DL_CHECK(dl_op_conv2d(g, x, wg, DL_NONE, &o) < 0);
    o.groups = 3;                                                   /* 2 filters, 3 groups */
    DL_CHECK(dl_op_conv2d(g, x, wg, DL_NONE, &o) < 0);
    o.groups = 0;
    DL_CHECK(dl_op_conv2d(g, x, w, gm, &o) < 0);                    /* bias of 4 for 2 filters */
    DL_CHECK_STR_CONTAINS(dl_last_error(), "bias");
    DL_CHECK(dl_op_max_pool2d(g, x, 2, 2, &po) < 0);                /* pad 2 of a 2-pixel pool */
    DL_CHECK(dl_op_avg_pool2d(g, x, 0, 2, NULL) < 0);
    DL_CHECK(dl_op_global_avg_pool2d(g, flat) < 0);
    DL_CHECK(dl_op_batch_norm(g, x, gm, gm, gm, gm, NULL) < 0);     /* 4 channels for 3; params as state */
    DL_CHECK(dl_op_batch_norm(g, x, gm, gm, 12345, 12345, NULL) < 0);
    dl_graph_free(g);
}

/* ---- the model API ------------------------------------------------------------ */

static dl_model *seeds_cnn(void)
{
    dl_model *m = dl_sequential(DL_SHAPE(28, 28));
    dl_add(m, dl_conv2d(32, 3, 3, DL_RELU, NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_conv2d(64, 3, 3, DL_RELU, NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_conv2d(128, 3, 3, DL_RELU, NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    return m;
}

/* The last number on the summary row that mentions `key` (-1 if none). */
static long row_params(const char *text, const char *key)
{
    const char *p = strstr(text, key), *end, *q;
    if (!p) return -1;
    end = strchr(p, '\n');
    if (!end) end = p + strlen(p);
    for (q = end; q > p && q[-1] >= '0' && q[-1] <= '9'; q--) {}
    return q < end ? strtol(q, NULL, 10) : -1;
}

/* dl_summary's text, through a temporary file; -1 (a failed check) if none could be made. */
static int summary_text(const dl_model *m, char *text, size_t size)
{
    FILE *f = tmpfile();
    size_t len;
    DL_CHECK(f != NULL);
    if (!f) return -1;
    dl_summary(m, f);
    rewind(f);
    len = fread(text, 1, size - 1, f);
    text[len] = '\0';
    fclose(f);
    return 0;
}

DL_TEST(summary_of_the_seeds_cnn_matches_keras)
{
    /* Keras' model.summary() for this net: 26x26x32 (320), 13x13x32, 11x11x64 (18496),
       5x5x64, 3x3x128 (73856), 1x1x128, 128, 128 (16512), 10 (1290); 110474 in all. */
    dl_model *m = seeds_cnn();
    char text[4096];
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)) == DL_OK);
    DL_CHECK_EQ_INT(dl_model_param_count(m), 110474);
    if (summary_text(m, text, sizeof text) != 0) { dl_model_free(m); return; }
    DL_CHECK_EQ_INT(row_params(text, "[26,26,32]"), 320);
    DL_CHECK_EQ_INT(row_params(text, "[13,13,32]"), 0);
    DL_CHECK_EQ_INT(row_params(text, "[11,11,64]"), 18496);
    DL_CHECK_EQ_INT(row_params(text, "[5,5,64]"), 0);
    DL_CHECK_EQ_INT(row_params(text, "[3,3,128]"), 73856);
    DL_CHECK_EQ_INT(row_params(text, "[1,1,128]"), 0);
    DL_CHECK_EQ_INT(row_params(text, "dense 128"), 16512);
    DL_CHECK_EQ_INT(row_params(text, "dense 10"), 1290);
    DL_CHECK_STR_CONTAINS(text, "total parameters 110474");
    dl_model_free(m);
}

/* A long layer entry (a grouped conv with explicit pads) widens the layer column for
   every row: each row's shape starts where the header's "output shape" does. */
DL_TEST(summary_columns_stay_aligned_with_long_entries)
{
    dl_model *m = dl_sequential(DL_SHAPE(16, 16, 4));
    dl_conv2d_opts o;
    char text[4096], *line, *col;
    size_t at;
    int rows = 0;
    memset(&o, 0, sizeof o);
    o.groups = 2; o.padding = DL_PAD_EXPLICIT; o.pad_top = o.pad_bottom = o.pad_left = o.pad_right = 1;
    DL_CHECK(dl_add(m, dl_conv2d(128, 3, 3, DL_LEAKY_RELU, &o)) == DL_OK);
    DL_CHECK(dl_add(m, dl_global_avg_pool2d()) == DL_OK);
    DL_CHECK(dl_add(m, dl_dense(10, DL_SOFTMAX)) == DL_OK);
    if (summary_text(m, text, sizeof text) != 0) { dl_model_free(m); return; }
    DL_CHECK_STR_CONTAINS(text, "conv2d 128 3x3 explicit grouped, leaky_relu [16,16,128]");
    col = strstr(text, "output shape");
    DL_CHECK(col != NULL);
    if (!col) { dl_model_free(m); return; }
    at = (size_t)(col - text);
    for (line = strchr(text, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        char *end = strchr(line + 1, '\n');
        if (!strchr(line + 1, '[') || (end && strchr(line + 1, '[') > end)) continue;   /* no shape on it */
        DL_CHECK_EQ_INT((long)(strchr(line + 1, '[') - (line + 1)), (long)at);
        rows++;
    }
    DL_CHECK_EQ_INT(rows, 4);   /* input and the three layers */
    dl_model_free(m);
}

DL_TEST(layers_reject_shapes_they_cannot_take)
{
    dl_model *m = dl_sequential(DL_SHAPE(12));
    dl_conv2d_opts g3;
    memset(&g3, 0, sizeof g3);
    g3.groups = 3;
    DL_CHECK(dl_add(m, dl_conv2d(4, 3, 3, DL_RELU, NULL)) == DL_ERR);   /* 1-D samples */
    DL_CHECK(dl_add(m, dl_reshape(DL_SHAPE(2, 2, 3))) == DL_OK);
    DL_CHECK(dl_add(m, dl_conv2d(4, 3, 3, DL_RELU, NULL)) == DL_ERR);   /* 3x3 valid on 2x2 */
    DL_CHECK(dl_add(m, dl_conv2d(4, 2, 2, DL_RELU, &g3)) == DL_ERR);    /* 4 filters, 3 groups */
    DL_CHECK(dl_add(m, dl_conv2d(6, 2, 2, DL_RELU, &g3)) == DL_OK);
    DL_CHECK(dl_add(m, dl_reshape(DL_SHAPE(7))) == DL_ERR);
    DL_CHECK(dl_add(m, dl_max_pool2d(2, 2, NULL)) == DL_ERR);           /* 1x1 left */
    DL_CHECK(dl_add(m, dl_global_avg_pool2d()) == DL_OK);
    DL_CHECK(dl_add(m, dl_batch_norm(NULL)) == DL_OK);
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)) == DL_OK);
    DL_CHECK_EQ_INT(dl_output_size(m), 6);
    dl_model_free(m);
}

DL_TEST(augmentation_is_a_flip_and_a_shift_with_zero_fill)
{
    /* Every augmented image must be explained by one flip and one (dy, dx) in range;
       over many draws every shift and both flips occur. */
    enum { H = 5, W = 6, C = 2, N = 2 };
    dl_model *m = dl_sequential(DL_SHAPE(H, W, C));
    float src[H * W * C], img[H * W * C];
    int seen[2][2 * N + 1][2 * N + 1], t, i, f, dy, dx, y, x, k, all = 1;
    memset(seen, 0, sizeof seen);
    for (i = 0; i < H * W * C; i++) src[i] = 1.0f + (float)i;
    m->aug_shift = N;
    m->aug_flip = 1;
    dl_rng_seed(&m->aug_rng, 5);
    for (t = 0; t < 600; t++) {
        int found = 0;
        memcpy(img, src, sizeof img);
        dl__augment(m, img);
        for (f = 0; f < 2 && !found; f++)
            for (dy = -N; dy <= N && !found; dy++)
                for (dx = -N; dx <= N && !found; dx++) {
                    int ok = 1;
                    for (y = 0; y < H && ok; y++)
                        for (x = 0; x < W && ok; x++)
                            for (k = 0; k < C; k++) {
                                int sy = y - dy, sx = x - dx;
                                float want;
                                if (f) sx = W - 1 - sx;
                                want = sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(sy * W + sx) * C + k] : 0.0f;
                                if (img[(y * W + x) * C + k] != want) { ok = 0; break; }
                            }
                    if (ok) { found = 1; seen[f][dy + N][dx + N]++; }
                }
        if (!found) { DL_FAILF("draw %d is no flip-and-shift of the image", t); break; }
    }
    for (f = 0; f < 2; f++)
        for (dy = 0; dy <= 2 * N; dy++)
            for (dx = 0; dx <= 2 * N; dx++) all &= seen[f][dy][dx] > 0;
    DL_CHECK(all);
    dl_model_free(m);
}

/* Fashion-MNIST (Debian's dataset-fashion-mnist; DLCORE_FASHION overrides the path). */
static int load_fashion(dl_dataset *train, dl_dataset *test)
{
    const char *dir = getenv("DLCORE_FASHION");
    if (!dir || !*dir) dir = "/usr/share/datasets/fashion-mnist";
    if (dl_idx_load(train, dir, "train") != DL_OK || dl_idx_load(test, dir, "t10k") != DL_OK) {
        fprintf(stderr, "  %s\n", dl_last_error());
        return DL_ERR;
    }
    return DL_OK;
}

static dl_model *small_cnn(uint64_t seed)
{
    dl_model *m = dl_sequential(DL_SHAPE(28, 28));
    dl_model_seed(m, seed);
    dl_add(m, dl_avg_pool2d(2, 2, NULL));                 /* 14x14: keeps the qemu run short */
    dl_add(m, dl_conv2d(8, 3, 3, DL_RELU, NULL));
    dl_add(m, dl_batch_norm(NULL));
    dl_add(m, dl_max_pool2d(2, 2, NULL));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    return m;
}

DL_TEST(small_cnn_learns_fashion_mnist)
{
    dl_dataset train, test, tr, te;
    dl_model *m;
    dl_fit_opts o;
    dl_metrics mt;
    if (load_fashion(&train, &test) != DL_OK) { DL_CHECK(!"Fashion-MNIST is missing (make data)"); return; }
    dl_dataset_split(&train, 0, 4000, &tr);
    dl_dataset_split(&test, 0, 1000, &te);
    m = small_cnn(0);
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(3e-3f)) == DL_OK);
    memset(&o, 0, sizeof o);
    o.epochs = 3;
    o.batch = 32;
    o.progress = DL_PROGRESS_NONE;
    DL_CHECK(dl_fit(m, &tr, &o) == DL_OK);
    DL_CHECK(dl_evaluate(m, &te, &mt) == DL_OK);
    printf("  small CNN, 4000 samples, 3 epochs: test accuracy %.4f on 1000\n", (double)mt.accuracy);
    DL_CHECK(mt.accuracy >= 0.76f);   /* 0.792 measured (x86-64, AVX-512) */
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
}

/* Synthetic 6x6x2 images, 3 classes by where the bright block sits. */
static void blocks(dl_dataset *d, int n, uint64_t seed)
{
    dl_rng r;
    int i, j, shape[3] = { 6, 6, 2 };
    dl_dataset_alloc(d, n, 3, shape, 1);
    dl_rng_seed(&r, seed);
    for (i = 0; i < n; i++) {
        int c = (int)dl_rng_below(&r, 3);
        for (j = 0; j < 72; j++) {
            int y = j / 12, x = (j / 2) % 6;
            d->x[i * 72 + j] = 0.3f * dl_rng_normal(&r) + ((x / 2 == c && y > 1) ? 1.0f : 0.0f);
        }
        d->y[i] = (float)c;
    }
}

static dl_model *every_layer(void)
{
    dl_conv2d_opts s2 = { 2, 2, 0, 0, 0, DL_PAD_SAME, 0, 0, 0, 0, 0, 0 };
    dl_conv2d_opts gr = { 0, 0, 1, 2, 2, DL_PAD_EXPLICIT, 1, 1, 2, 2, 1, 0 };
    dl_pool2d_opts ps = { 1, 1, DL_PAD_SAME, 0, 0, 0, 0 };
    dl_batch_norm_opts bo = { 0.9f, 1e-2f };
    dl_model *m = dl_sequential(DL_SHAPE(6, 6, 2));
    dl_model_seed(m, 3);
    dl_add(m, dl_conv2d(6, 3, 3, DL_RELU, &s2));
    dl_add(m, dl_batch_norm(&bo));
    dl_add(m, dl_conv2d(4, 2, 3, DL_TANH, &gr));
    dl_add(m, dl_max_pool2d(2, 2, &ps));
    dl_add(m, dl_avg_pool2d(2, 1, NULL));
    dl_add(m, dl_reshape(DL_SHAPE(2, 3, 4)));
    dl_add(m, dl_global_avg_pool2d());
    dl_add(m, dl_batch_norm(NULL));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    return m;
}

DL_TEST(every_layer_trains_and_round_trips_bit_for_bit)
{
    dl_dataset d;
    dl_model *m = every_layer(), *l;
    dl_fit_opts o;
    float p1[3 * 64], p2[3 * 64];
    int i, j;
    blocks(&d, 256, 1);
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK);
    memset(&o, 0, sizeof o);
    o.epochs = 3;
    o.batch = 16;
    o.progress = DL_PROGRESS_NONE;
    o.augment_shift = 1;
    DL_CHECK(dl_fit(m, &d, &o) == DL_OK);
    TEST_MKDIR_P("build");
    DL_CHECK(dl_save(m, TMP) == DL_OK);
    l = dl_load(TMP);
    DL_CHECK(l != NULL);
    if (!l) { fprintf(stderr, "  %s\n", dl_last_error()); dl_model_free(m); dl_dataset_free(&d); return; }
    DL_CHECK_EQ_INT(dl_graph_state_count(dl_model_graph(l)), 4);
    DL_CHECK_EQ_INT(dl_graph_param_count(dl_model_graph(l)), dl_graph_param_count(dl_model_graph(m)));
    for (i = 0; i < dl_graph_param_count(dl_model_graph(m)) + 4; i++) {
        dl_graph *gm = dl_model_graph(m), *gl = dl_model_graph(l);
        int np = dl_graph_param_count(gm);
        int a = i < np ? dl_graph_param(gm, i) : dl_graph_state(gm, i - np);
        int b = i < np ? dl_graph_param(gl, i) : dl_graph_state(gl, i - np);
        dl_tensor ta = dl_node_value(gm, a), tb = dl_node_value(gl, b);
        DL_CHECK(strcmp(dl_node_name(gm, a), dl_node_name(gl, b)) == 0);
        DL_CHECK(dl_shape_numel(ta.shape) == dl_shape_numel(tb.shape) &&
                 memcmp(ta.data, tb.data, dl_shape_numel(ta.shape) * sizeof(float)) == 0);
    }
    /* the moving statistics moved, so the comparison above saw trained values */
    DL_CHECK(dl_node_value(dl_model_graph(m), dl_graph_state(dl_model_graph(m), 1)).data[0] != 1.0f);
    DL_CHECK(dl_predict(m, d.x, 64, p1) == DL_OK && dl_predict(l, d.x, 64, p2) == DL_OK);
    DL_CHECK(memcmp(p1, p2, sizeof p1) == 0);
    for (i = 0; i < 64; i++) {
        float s = 0;
        for (j = 0; j < 3; j++) s += p1[i * 3 + j];
        DL_CHECK_NEAR(s, 1.0, 1e-5);
    }
    dl_model_free(l);
    dl_model_free(m);
    dl_dataset_free(&d);
    remove(TMP);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    unsigned char *p = NULL;
    if (dl_read_file(path, &p, len) != DL_OK) return NULL;
    return p;
}

static void put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24); }

/* Writes bytes as a model file with a correct size field and checksum, so only the
   content can be what the loader refuses. */
static void write_sealed(unsigned char *p, size_t len)
{
    FILE *f = fopen(TMP, "wb");
    put32(p + 8, (uint32_t)len); put32(p + 12, 0);
    put32(p + len - 4, dl_crc32(0, p, len - 4));
    if (f) { fwrite(p, 1, len, f); fclose(f); }
}

static void expect_refused(unsigned char *p, size_t len, const char *why)
{
    dl_model *l;
    write_sealed(p, len);
    l = dl_load(TMP);
    DL_CHECK(l == NULL);
    if (l) { DL_FAILF("accepted: %s", why); dl_model_free(l); return; }
    if (!strstr(dl_last_error(), why)) DL_FAILF("message '%s' does not say '%s'", dl_last_error(), why);
}

/* Offset of layer i's record in a version-2 file whose input and optimizer are as
   dl_save writes them: 16 header + 20 input + 4 loss + 64 optimizer + 8 counts. */
#define LAYER_AT(i) (16 + 20 + 4 + 64 + 4 + 4 + (size_t)(i) * 136)

DL_TEST(bad_version2_files_are_refused_with_a_message)
{
    dl_model *m = every_layer();
    unsigned char *good, *bad;
    size_t len, cut;
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK);
    TEST_MKDIR_P("build");
    DL_CHECK(dl_save(m, TMP) == DL_OK);
    good = read_all(TMP, &len);
    DL_CHECK(good != NULL);
    if (!good) { dl_model_free(m); return; }
    bad = (unsigned char *)malloc(len);
    DL_CHECK_EQ_INT(good[4], 2);
    /* the layer count says 9 and the first record is the strided conv2d */
    DL_CHECK_EQ_INT(good[LAYER_AT(0) - 4], 9);
    DL_CHECK_EQ_INT(good[LAYER_AT(0)], DL_LAYER_CONV2D);
    DL_CHECK_EQ_INT(good[LAYER_AT(0) + 20 + 8], 2);   /* kh kw, then stride_h */
    /* truncated anywhere: the header's size no longer matches */
    for (cut = 1; cut < len; cut += len / 7) {
        dl_model *l;
        FILE *f = fopen(TMP, "wb");
        if (f) { fwrite(good, 1, len - cut, f); fclose(f); }
        l = dl_load(TMP);
        DL_CHECK(l == NULL);
        dl_model_free(l);
    }
    /* one flipped bit in the BN statistics: the checksum */
    memcpy(bad, good, len); bad[len - 9] ^= 0x10;
    { FILE *f = fopen(TMP, "wb"); if (f) { fwrite(bad, 1, len, f); fclose(f); } }
    DL_CHECK(dl_load(TMP) == NULL);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "checksum");
    /* sealed files with impossible fields */
    memcpy(bad, good, len); put32(bad + LAYER_AT(0) + 20, 0);            /* kh 0 */
    expect_refused(bad, len, "window 0x3");
    memcpy(bad, good, len); put32(bad + LAYER_AT(0) + 20 + 7 * 4, 9);    /* padding 9 */
    expect_refused(bad, len, "unknown padding 9");
    memcpy(bad, good, len); put32(bad + LAYER_AT(2) + 20 + 6 * 4, 3);    /* groups 3 for 6 channels, 4 filters */
    expect_refused(bad, len, "groups 3");
    memcpy(bad, good, len); put32(bad + LAYER_AT(0) + 4, 5000);          /* 5000 filters: weights outgrow the file */
    expect_refused(bad, len, "weights");
    memcpy(bad, good, len); put32(bad + LAYER_AT(1) + 20 + 20 * 4, 0x3f800000u);   /* bn momentum 1.0 */
    expect_refused(bad, len, "momentum");
    memcpy(bad, good, len); put32(bad + LAYER_AT(5) + 20 + 22 * 4, 2);   /* reshape to 2 x 3 values */
    expect_refused(bad, len, "reshape");
    memcpy(bad, good, len); put32(bad + LAYER_AT(5) + 20 + 22 * 4, 9);   /* reshape to 9 dims */
    expect_refused(bad, len, "reshape to 9 dims");
    memcpy(bad, good, len); put32(bad + LAYER_AT(3), 77);                /* layer kind */
    expect_refused(bad, len, "unknown layer kind 77");
    memcpy(bad, good, len); put32(bad + LAYER_AT(9), 17);                /* tensor count */
    expect_refused(bad, len, "17 tensors");
    memcpy(bad, good, len); bad[4] = 3;
    expect_refused(bad, len, "version 3 is not supported");
    free(bad);
    DLCORE_FREE(good);
    dl_model_free(m);
    remove(TMP);
}

DL_TEST(version1_files_still_load)
{
    /* A version-1 file made from a version-2 one by hand: the version field, and each
       layer record cut to its first 20 bytes. */
    dl_dataset d;
    dl_model *m = dl_sequential(DL_SHAPE(6, 6, 2)), *l;
    dl_fit_opts o;
    unsigned char *v2, *v1;
    size_t len, at, out = 0;
    int i;
    float p1[3 * 16], p2[3 * 16];
    dl_model_seed(m, 1);
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(8, DL_RELU));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK);
    blocks(&d, 64, 2);
    memset(&o, 0, sizeof o);
    o.progress = DL_PROGRESS_NONE;
    DL_CHECK(dl_fit(m, &d, &o) == DL_OK);
    TEST_MKDIR_P("build");
    DL_CHECK(dl_save(m, TMP) == DL_OK);
    v2 = read_all(TMP, &len);
    DL_CHECK(v2 != NULL);
    if (!v2) { dl_model_free(m); dl_dataset_free(&d); return; }
    v1 = (unsigned char *)malloc(len);
    memcpy(v1, v2, LAYER_AT(0));
    out = LAYER_AT(0);
    for (i = 0, at = LAYER_AT(0); i < 3; i++, at += 136) { memcpy(v1 + out, v2 + at, 20); out += 20; }
    memcpy(v1 + out, v2 + at, len - at);
    out += len - at;
    put32(v1 + 4, 1);
    write_sealed(v1, out);
    l = dl_load(TMP);
    DL_CHECK(l != NULL);
    if (l) {
        DL_CHECK(dl_predict(m, d.x, 16, p1) == DL_OK && dl_predict(l, d.x, 16, p2) == DL_OK);
        DL_CHECK(memcmp(p1, p2, sizeof p1) == 0);
        dl_model_free(l);
    } else {
        fprintf(stderr, "  %s\n", dl_last_error());
    }
    free(v1);
    DLCORE_FREE(v2);
    dl_model_free(m);
    dl_dataset_free(&d);
    remove(TMP);
}

DL_TEST(cnn_training_steps_allocate_nothing)
{
    /* 1 epoch vs 3 (with augmentation, batch norm, conv, pooling): the allocation count
       may not grow with the number of steps. */
    dl_dataset d;
    dl_model *m = every_layer();
    dl_fit_opts o;
    long one, three;
    blocks(&d, 200, 3);
    DL_CHECK(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK);
    memset(&o, 0, sizeof o);
    o.epochs = 1;
    o.batch = 16;
    o.progress = DL_PROGRESS_NONE;
    o.augment_shift = 2;
    o.augment_flip = 1;
    o.validation_split = 0.1f;
    DL_CHECK(dl_fit(m, &d, &o) == DL_OK);   /* warm-up: kernel workspaces */
    g_allocs = 0; dl_fit(m, &d, &o); one = g_allocs;
    o.epochs = 3;
    g_allocs = 0; dl_fit(m, &d, &o); three = g_allocs;
    DL_CHECK_EQ_INT(three, one);
    DL_CHECK(one <= 4);
    dl_model_free(m);
    dl_dataset_free(&d);
}

DL_TEST(augmented_runs_repeat_with_the_seed)
{
    dl_dataset d;
    dl_model *a = every_layer(), *b = every_layer();
    dl_fit_opts o;
    const dl_history_row *ha, *hb;
    blocks(&d, 128, 4);
    DL_CHECK(dl_compile(a, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK && dl_compile(b, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)) == DL_OK);
    memset(&o, 0, sizeof o);
    o.epochs = 2;
    o.batch = 16;
    o.progress = DL_PROGRESS_NONE;
    o.augment_shift = 1;
    o.augment_flip = 1;
    DL_CHECK(dl_fit(a, &d, &o) == DL_OK && dl_fit(b, &d, &o) == DL_OK);
    dl_history(a, &ha);
    dl_history(b, &hb);
    DL_CHECK(ha[1].loss == hb[1].loss && ha[1].accuracy == hb[1].accuracy);
    o.augment_shift = -1;
    DL_CHECK(dl_fit(a, &d, &o) == DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "augmentation");
    dl_model_free(a);
    dl_model_free(b);
    dl_dataset_free(&d);
}

DL_TEST_MAIN()
