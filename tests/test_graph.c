/* Autograd, ops, planner and optimizers. Every op's gradient is compared with
   central finite differences on random shapes; optimizer steps with numbers
   worked out by hand; a training step is checked to allocate nothing. */
#include "dltest_alloc.h"
#include "dltest.h"
#include <float.h>

/* Values away from 0 so that relu's kink is never inside the +-eps window. */
static void fill_away_from_zero(dl_rng *r, float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = (dl_rng_uniform(r) < 0.5f ? -1.0f : 1.0f) * (0.1f + dl_rng_uniform(r));
}

static void fill_normal(dl_rng *r, float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = dl_rng_normal(r);
}

enum { UN_RELU, UN_LEAKY, UN_SIGMOID, UN_TANH, UN_SOFTMAX, UN_LOGSOFTMAX, UN_DROPOUT, UN_RESHAPE,
       UN_FLATTEN, UN_ADD_PARAM, UN_MUL_PARAM, UN_MATMUL, UN_DENSE, UN_DENSE_NOBIAS, UN_COUNT };

/* Builds x -> op -> sum(op(x) * r) with x requiring its gradient, for a random
   batch and feature width, and returns the gradient check's worst error. */
static float check_op(int which, uint64_t seed, int training)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(seed);
    int batch, f1, f2, x, y = -1, rin, prod, loss;
    float err;
    dl_rng_seed(&r, seed);
    batch = 1 + (int)dl_rng_below(&r, 5);
    f1 = 1 + (int)dl_rng_below(&r, 6);
    f2 = 1 + (int)dl_rng_below(&r, 4);
    x = dl_input(g, "x", DL_SHAPE(f1, f2));
    dl_require_grad(g, x);
    switch (which) {
    case UN_RELU: y = dl_op_relu(g, x); break;
    case UN_LEAKY: y = dl_op_leaky_relu(g, x, 0.1f); break;
    case UN_SIGMOID: y = dl_op_sigmoid(g, x); break;
    case UN_TANH: y = dl_op_tanh(g, x); break;
    case UN_SOFTMAX: y = dl_op_softmax(g, x); break;
    case UN_LOGSOFTMAX: y = dl_op_log_softmax(g, x); break;
    case UN_DROPOUT: y = dl_op_dropout(g, x, 0.5f); break;
    case UN_RESHAPE: y = dl_op_reshape(g, x, DL_SHAPE(f2, f1)); break;
    case UN_FLATTEN: y = dl_op_flatten(g, x); break;
    case UN_ADD_PARAM: y = dl_op_add(g, x, dl_param(g, "b", DL_SHAPE(f2), DL_INIT_HE_NORMAL)); break;
    case UN_MUL_PARAM: y = dl_op_mul(g, x, dl_param(g, "s", DL_SHAPE(f1, f2), DL_INIT_HE_NORMAL)); break;
    case UN_MATMUL: y = dl_op_matmul(g, x, dl_param(g, "w", DL_SHAPE(f2, 3), DL_INIT_GLOROT_UNIFORM)); break;
    case UN_DENSE: {
        int f = dl_op_flatten(g, x);
        y = dl_op_dense(g, f, dl_param(g, "w", DL_SHAPE(f1 * f2, 5), DL_INIT_GLOROT_UNIFORM),
                        dl_param(g, "b", DL_SHAPE(5), DL_INIT_HE_NORMAL));
        break;
    }
    case UN_DENSE_NOBIAS:
        y = dl_op_dense(g, dl_op_flatten(g, x), dl_param(g, "w", DL_SHAPE(f1 * f2, 4), DL_INIT_HE_UNIFORM), DL_NONE);
        break;
    }
    {
        dl_tensor yt = dl_node_value(g, y);
        dl_shape sample = yt.shape;
        int i;
        for (i = 0; i + 1 < sample.ndim; i++) sample.d[i] = sample.d[i + 1];
        sample.ndim--;
        sample.d[sample.ndim] = 0;
        rin = dl_input(g, "r", sample);
    }
    prod = dl_op_mul(g, y, rin);
    loss = dl_op_sum(g, prod);
    if (loss < 0 || dl_graph_plan(g, batch) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); dl_graph_free(g); return 1e9f; }
    dl_graph_set_batch(g, batch);
    dl_graph_set_training(g, training);
    fill_away_from_zero(&r, dl_node_value(g, x).data, dl_shape_numel(dl_node_value(g, x).shape));
    fill_normal(&r, dl_node_value(g, rin).data, dl_shape_numel(dl_node_value(g, rin).shape));
    err = dl_gradcheck(g, loss, 5e-3f);
    dl_graph_free(g);
    return err;
}

DL_TEST(gradcheck_every_op_on_random_shapes)
{
    int op, trial;
    for (op = 0; op < UN_COUNT; op++)
        for (trial = 0; trial < 4; trial++) {
            float err = check_op(op, 100u * (unsigned)op + (unsigned)trial, 1);
            if (!(err < 1e-2f)) DL_FAILF("op %d trial %d: gradient error %g", op, trial, (double)err);
            DL_CHECK(err < 1e-2f);
        }
}

/* pred -> loss(pred, target) for the three losses, pred and target both checked. */
static float check_loss(int kind, uint64_t seed)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(seed);
    int batch, classes, p, t, loss;
    size_t i, n;
    float err, *tv;
    dl_rng_seed(&r, seed);
    batch = 1 + (int)dl_rng_below(&r, 6);
    classes = 2 + (int)dl_rng_below(&r, 6);
    p = dl_input(g, "p", DL_SHAPE(classes));
    dl_require_grad(g, p);
    t = dl_input(g, "t", kind == 2 ? DL_SHAPE(1) : DL_SHAPE(classes));
    if (kind == 0) { dl_require_grad(g, t); loss = dl_loss_mse(g, p, t); }
    else if (kind == 1) { dl_require_grad(g, t); loss = dl_loss_bce_logits(g, p, t); }
    else loss = dl_loss_sparse_ce(g, p, t);
    if (loss < 0 || dl_graph_plan(g, batch) != DL_OK) { fprintf(stderr, "%s\n", dl_last_error()); return 1e9f; }
    dl_graph_set_batch(g, batch);
    fill_normal(&r, dl_node_value(g, p).data, (size_t)batch * classes);
    tv = dl_node_value(g, t).data;
    n = dl_shape_numel(dl_node_value(g, t).shape);
    for (i = 0; i < n; i++)
        tv[i] = kind == 0 ? dl_rng_normal(&r) : kind == 1 ? dl_rng_uniform(&r) : (float)dl_rng_below(&r, (uint32_t)classes);
    err = dl_gradcheck(g, loss, 5e-3f);
    dl_graph_free(g);
    return err;
}

DL_TEST(gradcheck_losses)
{
    int kind, trial;
    for (kind = 0; kind < 3; kind++)
        for (trial = 0; trial < 5; trial++) {
            float err = check_loss(kind, 7u * (unsigned)kind + (unsigned)trial);
            if (!(err < 1e-2f)) DL_FAILF("loss %d trial %d: gradient error %g", kind, trial, (double)err);
            DL_CHECK(err < 1e-2f);
        }
}

DL_TEST(gradcheck_mean_and_two_layer_mlp)
{
    /* A deeper graph exercises gradient buffers shared by the planner. */
    dl_rng r;
    dl_graph *g = dl_graph_new(3);
    int x = dl_input(g, "x", DL_SHAPE(6)), y = dl_input(g, "y", DL_SHAPE(1)), h, z, loss;
    h = dl_op_tanh(g, dl_op_dense(g, x, dl_param(g, "w1", DL_SHAPE(6, 8), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b1", DL_SHAPE(8), DL_INIT_HE_NORMAL)));
    h = dl_op_sigmoid(g, dl_op_dense(g, h, dl_param(g, "w2", DL_SHAPE(8, 8), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b2", DL_SHAPE(8), DL_INIT_HE_NORMAL)));
    z = dl_op_dense(g, h, dl_param(g, "w3", DL_SHAPE(8, 3), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b3", DL_SHAPE(3), DL_INIT_HE_NORMAL));
    loss = dl_op_add(g, dl_loss_sparse_ce(g, z, y), dl_op_mean(g, z));
    DL_CHECK(loss >= 0);
    DL_CHECK_EQ_INT(dl_graph_plan(g, 5), DL_OK);
    dl_rng_seed(&r, 9);
    fill_normal(&r, dl_node_value(g, x).data, 30);
    { int i; for (i = 0; i < 5; i++) dl_node_value(g, y).data[i] = (float)(i % 3); }
    DL_CHECK(dl_gradcheck(g, loss, 5e-3f) < 1e-2f);
    dl_graph_free(g);
}

DL_TEST(planner_shares_gradient_buffers)
{
    /* Six tanh layers on [64, 256]: without sharing the gradients alone would
       take 7 buffers; lifetimes let two or three do. */
    dl_graph *g = dl_graph_new(1);
    int h = dl_input(g, "x", DL_SHAPE(256)), i;
    size_t one = 64 * 256 * sizeof(float);
    dl_require_grad(g, h);
    for (i = 0; i < 6; i++) h = dl_op_tanh(g, h);
    h = dl_op_sum(g, h);
    DL_CHECK_EQ_INT(dl_graph_plan(g, 64), DL_OK);
    /* 7 values + the kept input gradient + at most 2 shared ones (+ slack). */
    DL_CHECK(dl_graph_arena_bytes(g) <= 10 * one + 4096);
    DL_CHECK(dl_graph_arena_bytes(g) >= 9 * one);
    dl_graph_free(g);
}

DL_TEST(partial_batch_gives_same_rows)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(5);
    int x = dl_input(g, "x", DL_SHAPE(7)), y, i;
    float full[8 * 4];
    y = dl_op_softmax(g, dl_op_dense(g, x, dl_param(g, "w", DL_SHAPE(7, 4), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b", DL_SHAPE(4), DL_INIT_HE_NORMAL)));
    DL_CHECK_EQ_INT(dl_graph_plan(g, 8), DL_OK);
    dl_graph_set_batch(g, 8);
    dl_rng_seed(&r, 2);
    fill_normal(&r, dl_node_value(g, x).data, 56);
    DL_CHECK_EQ_INT(dl_forward(g, y), DL_OK);
    memcpy(full, dl_node_value(g, y).data, sizeof full);
    DL_CHECK_EQ_INT(dl_graph_set_batch(g, 3), DL_OK);
    DL_CHECK_EQ_INT(dl_node_value(g, y).shape.d[0], 3);
    DL_CHECK_EQ_INT(dl_forward(g, y), DL_OK);
    for (i = 0; i < 12; i++) DL_CHECK_NEAR(dl_node_value(g, y).data[i], full[i], 1e-6);
    DL_CHECK_EQ_INT(dl_graph_set_batch(g, 9), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "batch 9");
    dl_graph_free(g);
}

/* dl_fit and dl_evaluate compute only what the loss depends on: the model's softmax
   output beside the loss is left alone, the loss is the same, and the public
   dl_forward still computes every node up to its target. */
DL_TEST(forward_for_the_loss_skips_nodes_it_does_not_need)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(6);
    int x = dl_input(g, "x", DL_SHAPE(7)), lab = dl_input(g, "labels", DL_SHAPE(1)), z, p, loss, i;
    float full_loss;
    z = dl_op_dense(g, x, dl_param(g, "w", DL_SHAPE(7, 4), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b", DL_SHAPE(4), DL_INIT_HE_NORMAL));
    p = dl_op_softmax(g, z);
    loss = dl_loss_sparse_ce(g, z, lab);
    DL_CHECK(p < loss);
    DL_CHECK_EQ_INT(dl_graph_plan(g, 5), DL_OK);
    dl_graph_set_batch(g, 5);
    dl_rng_seed(&r, 3);
    fill_normal(&r, dl_node_value(g, x).data, 35);
    for (i = 0; i < 5; i++) dl_node_value(g, lab).data[i] = (float)(i % 4);
    DL_CHECK_EQ_INT(dl_forward(g, loss), DL_OK);
    full_loss = dl_node_value(g, loss).data[0];
    DL_CHECK_NEAR(dl_node_value(g, p).data[0] + dl_node_value(g, p).data[1] + dl_node_value(g, p).data[2] +
                  dl_node_value(g, p).data[3], 1.0, 1e-5);
    for (i = 0; i < 20; i++) dl_node_value(g, p).data[i] = -7.0f;
    dl_node_value(g, loss).data[0] = -1.0f;
    DL_CHECK_EQ_INT(dl__forward(g, loss, 1), DL_OK);
    DL_CHECK_NEAR(dl_node_value(g, loss).data[0], full_loss, 0.0);
    for (i = 0; i < 20; i++) DL_CHECK(dl_node_value(g, p).data[i] == -7.0f);
    DL_CHECK_EQ_INT(dl_forward(g, loss), DL_OK);
    DL_CHECK(dl_node_value(g, p).data[0] != -7.0f);
    dl_graph_free(g);
}

DL_TEST(shape_errors_are_reported_not_fatal)
{
    dl_graph *g = dl_graph_new(1);
    int x = dl_input(g, "x", DL_SHAPE(5)), w = dl_param(g, "w", DL_SHAPE(4, 3), DL_INIT_ZEROS), y, z;
    y = dl_op_matmul(g, x, w);
    DL_CHECK(y < 0);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "inner dimensions differ: [1,5] and [4,3]");
    z = dl_op_relu(g, y);             /* the failure passes through */
    DL_CHECK(z < 0);
    DL_CHECK(dl_op_add(g, x, dl_param(g, "b", DL_SHAPE(3), DL_INIT_ZEROS)) < 0);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "do not broadcast");
    DL_CHECK(dl_op_dropout(g, x, 1.0f) < 0);
    DL_CHECK(dl_op_reshape(g, x, DL_SHAPE(2, 2)) < 0);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "5 values per sample");
    DL_CHECK(dl_op_relu(g, 12345) < 0);
    DL_CHECK(dl_op_relu(g, DL_NONE) < 0);
    DL_CHECK(dl_forward(g, x) == DL_ERR);   /* not planned */
    dl_graph_free(g);
}

DL_TEST(sparse_ce_rejects_bad_labels)
{
    dl_graph *g = dl_graph_new(1);
    int z = dl_input(g, "z", DL_SHAPE(3)), y = dl_input(g, "y", DL_SHAPE(1)), l = dl_loss_sparse_ce(g, z, y);
    DL_CHECK_EQ_INT(dl_graph_plan(g, 2), DL_OK);
    dl_graph_set_batch(g, 2);
    dl_node_value(g, y).data[0] = 1; dl_node_value(g, y).data[1] = 3;
    DL_CHECK_EQ_INT(dl_forward(g, l), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "label 3 of row 1");
    dl_node_value(g, y).data[1] = 0.5f;
    DL_CHECK_EQ_INT(dl_forward(g, l), DL_ERR);
    dl_graph_free(g);
}

DL_TEST(sparse_ce_and_bce_are_stable_for_huge_logits)
{
    dl_graph *g = dl_graph_new(1);
    int z = dl_input(g, "z", DL_SHAPE(2)), y = dl_input(g, "y", DL_SHAPE(1)), t = dl_input(g, "t", DL_SHAPE(2));
    int ce = dl_loss_sparse_ce(g, z, y), bce = dl_loss_bce_logits(g, z, t);
    float *zv;
    DL_CHECK_EQ_INT(dl_graph_plan(g, 1), DL_OK);
    zv = dl_node_value(g, z).data;
    zv[0] = 1000.0f; zv[1] = -1000.0f;
    dl_node_value(g, y).data[0] = 1;
    dl_node_value(g, t).data[0] = 0; dl_node_value(g, t).data[1] = 1;
    DL_CHECK_EQ_INT(dl_forward(g, bce), DL_OK);
    DL_CHECK_NEAR(dl_node_value(g, ce).data[0], 2000.0, 1e-2);
    DL_CHECK_NEAR(dl_node_value(g, bce).data[0], 1000.0, 1e-2);
    dl_graph_free(g);
}

/* x [1,2] -> dense(w [2,1], no bias) -> sum: d loss / d w = x^T. */
static dl_graph *tiny(int *loss, float x0, float x1, float w0, float w1)
{
    dl_graph *g = dl_graph_new(1);
    int x = dl_input(g, "x", DL_SHAPE(2)), w = dl_param(g, "w", DL_SHAPE(2, 1), DL_INIT_ZEROS);
    *loss = dl_op_sum(g, dl_op_dense(g, x, w, DL_NONE));
    dl_graph_plan(g, 1);
    dl_node_value(g, x).data[0] = x0; dl_node_value(g, x).data[1] = x1;
    dl_node_value(g, w).data[0] = w0; dl_node_value(g, w).data[1] = w1;
    return g;
}

static void steps(dl_graph *g, int loss, const dl_optimizer *o, int n)
{
    int i;
    for (i = 0; i < n; i++) { dl_forward(g, loss); dl_backward(g, loss); dl_graph_update(g, o, 0); }
}

static float wv(dl_graph *g, int i) { return dl_node_value(g, dl_graph_param(g, 0)).data[i]; }

DL_TEST(optimizer_updates_match_hand_computed_values)
{
    int loss;
    dl_graph *g;
    dl_optimizer o;
    /* Gradient is x = (0.5, -2). */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, 1.0f); o = dl_sgd(0.1f, 0.0f); steps(g, loss, &o, 1);
    DL_CHECK_NEAR(wv(g, 0), 0.95, 1e-6); DL_CHECK_NEAR(wv(g, 1), 1.2, 1e-6); dl_graph_free(g);
    /* Momentum 0.9, two steps: v1 = g, v2 = 1.9 g; w = 1 - 0.1 (g + 1.9 g) = 1 - 0.29 g. */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, 1.0f); o = dl_sgd(0.1f, 0.9f); steps(g, loss, &o, 2);
    DL_CHECK_NEAR(wv(g, 0), 0.855, 1e-6); DL_CHECK_NEAR(wv(g, 1), 1.58, 1e-6); dl_graph_free(g);
    /* Nesterov: steps g + 0.9 v: 1.9 g then 2.71 g; w = 1 - 0.1 * 4.61 g. */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, 1.0f); o = dl_sgd(0.1f, 0.9f); o.nesterov = 1; steps(g, loss, &o, 2);
    DL_CHECK_NEAR(wv(g, 0), 0.7695, 1e-6); DL_CHECK_NEAR(wv(g, 1), 1.922, 1e-5); dl_graph_free(g);
    /* Adam with a constant gradient: m_hat = g, v_hat = g^2, each step moves lr * sign(g). */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, 1.0f); o = dl_adam(0.1f); steps(g, loss, &o, 3);
    DL_CHECK_NEAR(wv(g, 0), 0.7, 1e-5); DL_CHECK_NEAR(wv(g, 1), 1.3, 1e-5); dl_graph_free(g);
    /* AdamW, one step: w (1 - lr wd) - lr sign(g) = 1 * 0.999 - 0.1. */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, 1.0f); o = dl_adamw(0.1f, 0.01f); steps(g, loss, &o, 1);
    DL_CHECK_NEAR(wv(g, 0), 0.899, 1e-6); DL_CHECK_NEAR(wv(g, 1), 1.099, 1e-6); dl_graph_free(g);
    /* L2 0.5 adds 2 * 0.5 * w = 1; L1 0.2 adds 0.2 sign(w). SGD 0.1. */
    g = tiny(&loss, 0.5f, -2.0f, 1.0f, -1.0f); o = dl_sgd(0.1f, 0.0f); o.l2 = 0.5f; o.l1 = 0.2f; steps(g, loss, &o, 1);
    /* w0: g = 0.5 + 1 + 0.2 = 1.7 -> 0.83; w1: g = -2 - 1 - 0.2 = -3.2 -> -0.68 */
    DL_CHECK_NEAR(wv(g, 0), 0.83, 1e-6); DL_CHECK_NEAR(wv(g, 1), -0.68, 1e-6); dl_graph_free(g);
    /* Clipping: g = (3, 4) has norm 5; clip 1 scales it to (0.6, 0.8). */
    g = tiny(&loss, 3.0f, 4.0f, 0.0f, 0.0f); o = dl_sgd(1.0f, 0.0f); o.clip_norm = 1.0f; steps(g, loss, &o, 1);
    DL_CHECK_NEAR(wv(g, 0), -0.6, 1e-6); DL_CHECK_NEAR(wv(g, 1), -0.8, 1e-6); dl_graph_free(g);
}

/* Three Adam steps on 1073 weights (SIMD body and scalar tail) under one ISA. */
static void adam_run(const char *isa, float *out)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(5);
    int x = dl_input(g, "x", DL_SHAPE(1073)), w = dl_param(g, "w", DL_SHAPE(1073), DL_INIT_HE_NORMAL);
    int loss = dl_op_sum(g, dl_op_mul(g, dl_op_mul(g, x, w), x)), i;
    dl_optimizer o = dl_adamw(0.01f, 0.1f);
    dl_set_isa(isa);
    dl_graph_plan(g, 1);
    dl_rng_seed(&r, 8);
    /* Gradients spanning many magnitudes, zeros included (v = 0 paths). */
    for (i = 0; i < 1073; i++) dl_node_value(g, x).data[i] = i % 17 == 0 ? 0.0f : dl_rng_normal(&r) * powf(10.0f, (float)(i % 7) - 3.0f);
    for (i = 0; i < 3; i++) { dl_forward(g, loss); dl_backward(g, loss); dl_graph_update(g, &o, 0); }
    memcpy(out, dl_node_value(g, w).data, 1073 * sizeof(float));
    dl_graph_free(g);
    dl_set_isa(NULL);
}

DL_TEST(adam_kernels_of_every_isa_agree_with_scalar)
{
    static const char *const isas[] = { "avx2", "avx512", "neon" };
    float ref[1073], got[1073];
    int k, i, ran = 0;
#ifdef DLCORE_NO_SIMD
    DL_SKIP("DLCORE_NO_SIMD build: the scalar kernel is the only one");
#endif
    adam_run("scalar", ref);
    for (k = 0; k < 3; k++) {
        double worst = 0;
        if (dl_set_isa(isas[k]) != DL_OK) continue;
        ran++;
        adam_run(isas[k], got);
        for (i = 0; i < 1073; i++) {
            /* Scaled by the step size too: weights near zero have no relative scale. */
            double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + 0.01);
            if (e > worst) worst = e;
        }
        if (!(worst < 1e-5)) DL_FAILF("%s: worst relative difference %g", isas[k], worst);
        DL_CHECK(worst < 1e-5);
    }
    DL_CHECK(ran >= 1);
}

/* Moments that fall below FLT_MIN are stored as 0 on every ISA, never as subnormals
   (x86 takes a microcode assist per operation on one); normal ones and NaN are kept. */
DL_TEST(adam_flushes_moments_below_flt_min_on_every_isa)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    enum { N = 37 };
    float w[N], m[N], v[N], g[N], m0[N], v0[N];
    const dl__adam_k k = { 0.9f, 0.999f, 1e-7f, 1.0f, 1.0f, 1e-3f, 1.0f, 1.0f };
    int t, i, ran = 0;
    for (t = 0; t < 4; t++) {
        if (dl_set_isa(isas[t]) != DL_OK) continue;
        ran++;
        for (i = 0; i < N; i++) {
            w[i] = 0.5f;
            g[i] = 0.0f;
            /* 0.9 x 1.2e-38 and 0.999 x 1.1e-38 are subnormal; 1e-30 and 1e-20 stay normal */
            m0[i] = m[i] = i % 3 == 0 ? 1.2e-38f : i % 3 == 1 ? -1.2e-38f : 1e-30f;
            v0[i] = v[i] = i % 2 ? 1.1e-38f : 1e-20f;
        }
        m0[N - 1] = m[N - 1] = NAN;
        dl__adam(w, m, v, g, N, &k);
        for (i = 0; i < N - 1; i++) {
            float wm = 0.9f * m0[i], wv = 0.999f * v0[i];
            if (fabsf(wm) < FLT_MIN) wm = 0.0f;
            if (wv < FLT_MIN) wv = 0.0f;
            if (m[i] != wm || v[i] != wv || fpclassify(m[i]) == FP_SUBNORMAL || fpclassify(v[i]) == FP_SUBNORMAL) {
                DL_FAILF("%s: element %d: m %g v %g, want %g %g", isas[t], i, (double)m[i], (double)v[i], (double)wm, (double)wv);
                break;
            }
        }
        DL_CHECK(m[0] == 0.0f && m[1] == 0.0f && m[2] != 0.0f && v[1] == 0.0f && v[0] != 0.0f);
        DL_CHECK(m[N - 1] != m[N - 1]);   /* NaN is not flushed away */
    }
    dl_set_isa(NULL);
#ifdef DLCORE_NO_SIMD
    DL_CHECK_EQ_INT(ran, 1);
#else
    DL_CHECK(ran >= 2);
#endif
}

/* An MLP x -> dense(hidden, relu) -> dense(10) -> sparse CE; `shared` feeds the output
   layer's weight to a second matmul as well, so it has two users and cannot be fused;
   `want_grad` asks for w1's gradient, which must then be stored. */
static dl_graph *step_mlp(int batch, int in, int hidden, int shared, int want_grad, int *loss, int *w1)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(21);
    int x = dl_input(g, "x", DL_SHAPE(in)), y = dl_input(g, "y", DL_SHAPE(1)), h, o, i;
    int w2 = dl_param(g, "w2", DL_SHAPE(hidden, 10), DL_INIT_GLOROT_UNIFORM);
    *w1 = dl_param(g, "w1", DL_SHAPE(in, hidden), DL_INIT_GLOROT_UNIFORM);
    h = dl_op_relu(g, dl_op_dense(g, x, *w1, dl_param(g, "b1", DL_SHAPE(hidden), DL_INIT_ZEROS)));
    o = dl_op_dense(g, h, w2, dl_param(g, "b2", DL_SHAPE(10), DL_INIT_ZEROS));
    if (shared) o = dl_op_add(g, o, dl_op_matmul(g, h, w2));
    *loss = dl_loss_sparse_ce(g, o, y);
    if (want_grad) dl_require_grad(g, *w1);
    dl_graph_plan(g, batch);
    dl_graph_set_batch(g, batch);
    dl_graph_set_training(g, 1);
    dl_rng_seed(&r, 3);
    fill_normal(&r, dl_node_value(g, x).data, (size_t)batch * in);
    for (i = 0; i < batch; i++) dl_node_value(g, y).data[i] = (float)(i * 7 % 10);
    return g;
}

/* dl_graph_step against dl_backward + dl_graph_update: same weights after 3 steps, for
   every ISA, a batch that fits one KC block and one that does not (the fallback through
   a stored gradient), a hidden width that leaves band tails, and a shape big enough
   for the GEMM to split the fused update over 2 threads; fusion must happen for
   Adam/AdamW and must not for a shared weight, clipping, SGD or a weight whose gradient
   was asked for (that gradient must match). */
DL_TEST(graph_step_equals_backward_then_update)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    /* batch, input width, hidden width; 2*300*256*100 flops is over the threading threshold;
       a hidden width of 300 is wider than every ISA's NC, so bands cover part of a row */
    static const int shapes[][3] = { { 7, 37, 45 }, { 7, 37, 64 }, { 600, 37, 45 }, { 600, 37, 64 },
                                     { 300, 256, 100 }, { 9, 20, 300 } };
    int k, sh, variant, threads = dl_get_threads();
    dl_set_threads(2);
    for (k = 0; k < 4; k++) {
        if (dl_set_isa(isas[k]) != DL_OK) continue;
        for (sh = 0; sh < 6; sh++) for (variant = 0; variant < 6; variant++) {
            const int batch = shapes[sh][0], in = shapes[sh][1], hidden = shapes[sh][2];
            dl_optimizer o = variant == 1 ? dl_adamw(0.01f, 0.1f) : variant == 4 ? dl_sgd(0.05f, 0.9f) : dl_adam(0.01f);
            int shared = variant == 3, want_grad = variant == 5, loss_a, loss_b, w1_a, w1_b, i, p, fused_seen = 0;
            dl_graph *ga = step_mlp(batch, in, hidden, shared, want_grad, &loss_a, &w1_a);
            dl_graph *gb = step_mlp(batch, in, hidden, shared, want_grad, &loss_b, &w1_b);
            double worst = 0;
            if (variant == 2) o.clip_norm = 0.5f;
            for (i = 0; i < 3; i++) {
                DL_CHECK_EQ_INT(dl_forward(ga, loss_a), DL_OK);
                DL_CHECK_EQ_INT(dl_backward(ga, loss_a), DL_OK);
                DL_CHECK_EQ_INT(dl_graph_update(ga, &o, 0), DL_OK);
                DL_CHECK_EQ_INT(dl_forward(gb, loss_b), DL_OK);
                DL_CHECK_EQ_INT(dl_graph_step(gb, loss_b, &o, 0), DL_OK);
                fused_seen += gb->nodes[w1_b].fused_pass == gb->pass;
            }
            for (p = 0; p < dl_graph_param_count(ga); p++) {
                dl_tensor ta = dl_node_value(ga, dl_graph_param(ga, p)), tb = dl_node_value(gb, dl_graph_param(gb, p));
                size_t j, n = (size_t)dl_shape_numel(ta.shape);
                for (j = 0; j < n; j++) {
                    double e = fabs((double)ta.data[j] - tb.data[j]) / (fabs(ta.data[j]) + 0.01);
                    if (e > worst) worst = e;
                }
            }
            if (!(worst < 1e-5))
                DL_FAILF("%s batch %d in %d hidden %d variant %d: worst relative difference %g",
                         isas[k], batch, in, hidden, variant, worst);
            DL_CHECK(worst < 1e-5);
            DL_CHECK_EQ_INT(fused_seen, variant <= 1 || variant == 3 ? 3 : 0);
            if (want_grad) {
                dl_tensor da = dl_node_grad(ga, w1_a), db = dl_node_grad(gb, w1_b);
                size_t j, n = (size_t)dl_shape_numel(da.shape);
                DL_CHECK(da.data != NULL && db.data != NULL);
                for (j = 0; da.data && db.data && j < n; j++)
                    if (!(fabs((double)da.data[j] - db.data[j]) <= 1e-5 * (fabs(da.data[j]) + 1e-3))) {
                        DL_FAILF("%s: w1 gradient %zu differs: %g vs %g", isas[k], j, (double)da.data[j], (double)db.data[j]);
                        break;
                    }
            }
            if (variant == 3) DL_CHECK(gb->nodes[dl_graph_param(gb, 0)].fused_pass != gb->pass); /* w2 */
            dl_graph_free(ga);
            dl_graph_free(gb);
        }
    }
    dl_set_isa(NULL);
    dl_set_threads(threads);
}

DL_TEST(learning_rate_schedules)
{
    dl_optimizer o = dl_sgd(1.0f, 0.0f);
    o.schedule = DL_SCHED_STEP; o.step_size = 2; o.gamma = 0.5f;
    DL_CHECK_NEAR(dl_lr_at(&o, 0), 1.0, 1e-7); DL_CHECK_NEAR(dl_lr_at(&o, 1), 1.0, 1e-7);
    DL_CHECK_NEAR(dl_lr_at(&o, 2), 0.5, 1e-7); DL_CHECK_NEAR(dl_lr_at(&o, 5), 0.25, 1e-7);
    o.schedule = DL_SCHED_COSINE; o.t_max = 4; o.lr_min = 0.1f;
    DL_CHECK_NEAR(dl_lr_at(&o, 0), 1.0, 1e-6); DL_CHECK_NEAR(dl_lr_at(&o, 2), 0.55, 1e-6);
    DL_CHECK_NEAR(dl_lr_at(&o, 4), 0.1, 1e-6); DL_CHECK_NEAR(dl_lr_at(&o, 9), 0.1, 1e-6);
}

DL_TEST(training_step_allocates_nothing)
{
    dl_rng r;
    dl_graph *g = dl_graph_new(4);
    int x = dl_input(g, "x", DL_SHAPE(64)), y = dl_input(g, "y", DL_SHAPE(1)), h, loss, step;
    dl_optimizer o = dl_adam(1e-3f);
    long before;
    h = dl_op_dropout(g, dl_op_relu(g, dl_op_dense(g, x, dl_param(g, "w1", DL_SHAPE(64, 200), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b1", DL_SHAPE(200), DL_INIT_ZEROS))), 0.2f);
    loss = dl_loss_sparse_ce(g, dl_op_dense(g, h, dl_param(g, "w2", DL_SHAPE(200, 10), DL_INIT_GLOROT_UNIFORM), dl_param(g, "b2", DL_SHAPE(10), DL_INIT_ZEROS)), y);
    DL_CHECK_EQ_INT(dl_graph_plan(g, 128), DL_OK);
    dl_graph_set_training(g, 1);
    dl_rng_seed(&r, 1);
    fill_normal(&r, dl_node_value(g, x).data, 128 * 64);
    { int i; for (i = 0; i < 128; i++) dl_node_value(g, y).data[i] = (float)(i % 10); }
    /* Warm-up at the largest batch: lets the GEMM grow its packing workspaces once. */
    dl_graph_set_batch(g, 128);
    dl_forward(g, loss); dl_backward(g, loss); dl_graph_update(g, &o, 0);
    dl_forward(g, loss); dl_graph_step(g, loss, &o, 0);
    before = g_allocs;
    for (step = 0; step < 5; step++) {
        dl_graph_set_batch(g, step == 4 ? 77 : 128);   /* the last, partial batch too */
        DL_CHECK_EQ_INT(dl_forward(g, loss), DL_OK);
        if (step % 2) { /* the fused step too */
            DL_CHECK_EQ_INT(dl_graph_step(g, loss, &o, 0), DL_OK);
            continue;
        }
        DL_CHECK_EQ_INT(dl_backward(g, loss), DL_OK);
        DL_CHECK_EQ_INT(dl_graph_update(g, &o, 0), DL_OK);
    }
    DL_CHECK_EQ_INT(g_allocs - before, 0);
    dl_graph_free(g);
}

/* 999 features x 10: the length is not a multiple of the 4 mask entries per hash, so
   the tail path runs too. */
DL_TEST(dropout_drops_its_rate_and_is_identity_in_eval)
{
    dl_graph *g = dl_graph_new(11);
    int x = dl_input(g, "x", DL_SHAPE(999)), y = dl_op_dropout(g, x, 0.3f), i, zeros = 0, tail_kept = 0;
    float *xv, *yv;
    DL_CHECK_EQ_INT(dl_graph_plan(g, 10), DL_OK);
    dl_graph_set_batch(g, 10);
    xv = dl_node_value(g, x).data;
    for (i = 0; i < 9990; i++) xv[i] = 1.0f + (float)(i % 7);
    dl_graph_set_training(g, 1);
    dl_forward(g, y);
    yv = dl_node_value(g, y).data;
    for (i = 0; i < 9990; i++) {
        if (yv[i] == 0.0f) zeros++;
        else DL_CHECK_NEAR(yv[i], xv[i] / 0.7f, 1e-5);
    }
    DL_CHECK(zeros > 2797 && zeros < 3197);   /* 2997 expected, sd ~46 */
    /* each pass draws a new mask: the last element is kept ~70% of the time */
    for (i = 0; i < 20; i++) {
        dl_forward(g, y);
        if (yv[9989] != 0.0f) { tail_kept++; DL_CHECK_NEAR(yv[9989], xv[9989] / 0.7f, 1e-5); }
    }
    DL_CHECK(tail_kept >= 6 && tail_kept <= 19);
    dl_graph_set_training(g, 0);
    dl_forward(g, y);
    DL_CHECK(memcmp(yv, xv, 9990 * sizeof(float)) == 0);
    dl_graph_free(g);
}

/* The mask is the same on every ISA and for every path (AVX-512 32 entries at a time,
   SSE2 4, the scalar tail): entries 4q..4q+3 come from the hash of key + (ctr + q) *
   golden, here recomputed with the scalar reference over a ragged length. */
DL_TEST(dropout_mask_is_the_same_on_every_isa)
{
    static const float rates[] = { 0.3f, 0.5f, 0.0001f, 0.999f };
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    const size_t len = 9990;
    static float want[9992];
    int isa, r, tried = 0;
    for (isa = 0; isa < DL__ISA_COUNT; isa++) {
        if (dl_set_isa(dl__isa_table[isa].name) != DL_OK) continue;
        tried++;
        for (r = 0; r < 4; r++) {
            dl_graph *g = dl_graph_new(5 + (uint64_t)r);
            int x = dl_input(g, "x", DL_SHAPE(999)), y = dl_op_dropout(g, x, rates[r]);
            float keep = 1.0f / (1.0f - rates[r]), *xv;
            uint32_t cut = (uint32_t)(rates[r] * 65536.0f + 0.5f), keep_bits;
            uint64_t z;
            size_t i, q, bad = 0;
            DL_CHECK_EQ_INT(dl_graph_plan(g, 10), DL_OK);
            dl_graph_set_batch(g, 10);
            dl_graph_set_training(g, 1);
            xv = dl_node_value(g, x).data;
            for (i = 0; i < len; i++) xv[i] = 1.0f + (float)(i % 5);
            DL_CHECK_EQ_INT(dl_forward(g, y), DL_OK);  /* a first mask, so ctr is not 0 */
            z = g->dropout_key + g->dropout_ctr * golden;
            memcpy(&keep_bits, &keep, 4);
            for (q = 0; 4 * q < len; q++)
                dl__dropout_mask4(dl__mix64(z + q * golden), cut, keep_bits, want + 4 * q,
                                  len - 4 * q < 4 ? len - 4 * q : 4);
            DL_CHECK_EQ_INT(dl_forward(g, y), DL_OK);
            for (i = 0; i < len; i++)
                if (memcmp(&g->nodes[y].aux[i], &want[i], 4) != 0 ||
                    dl_node_value(g, y).data[i] != xv[i] * want[i]) bad++;
            if (bad) DL_FAILF("isa %s, rate %g: %zu of %zu entries differ from the reference",
                              dl__isa_table[isa].name, (double)rates[r], bad, len);
            dl_graph_free(g);
        }
    }
    DL_CHECK(tried >= 1);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
}

/* Logits for the softmax tests: all equal, far apart (probabilities down in the
   denormals and below), one -inf, and random rows; labels avoid the -inf. */
static void softmax_logits(float *z, float *lab, int rows, int cols, dl_rng *r)
{
    int i, j;
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            float *zi = &z[i * cols + j];
            switch (i) {
            case 0: *zi = 3.0f; break;                                  /* all equal */
            case 1: *zi = j % 2 ? -1000.0f : 1000.0f; break;            /* e^-2000 = 0 */
            case 2: *zi = -(float)(j * 97 % 113); break;               /* e^-87..-112 */
            case 3: *zi = j == cols / 2 && cols > 1 ? -INFINITY : dl_rng_normal(r); break;
            default: *zi = (float)(i * 5) * dl_rng_normal(r); break;
            }
        }
        lab[i] = (float)((i * 7) % cols);
        if (i == 3 && cols > 1 && (int)lab[i] == cols / 2) lab[i] = (float)((cols / 2 + 1) % cols);
    }
}

/* Probabilities p of rows x cols logits z against softmax in double: the worst error,
   relative, with a floor at the denormals' spacing, over what rounding z - max to float
   already costs (half an ulp of it). Adds each row's logsumexp(z) - z[label] to *loss
   when lab is given. */
static double softmax_worst_error(const float *z, const float *p, int rows, int cols, const float *lab, double *loss)
{
    double worst = 0.0;
    int i, j;
    for (i = 0; i < rows; i++) {
        const float *zi = z + i * cols;
        double mx = zi[0], sum = 0.0;
        for (j = 1; j < cols; j++) if (zi[j] > mx) mx = zi[j];
        for (j = 0; j < cols; j++) sum += exp((double)zi[j] - mx);
        if (lab) *loss += mx + log(sum) - zi[(int)lab[i]];
        for (j = 0; j < cols; j++) {
            double want = exp((double)zi[j] - mx) / sum;
            double e = fabs((double)p[i * cols + j] - want) / (want + 1e-38) / (1.0 + 0.5 * fabs((double)zi[j] - mx));
            if (e > worst) worst = e;
        }
    }
    return worst;
}

/* The softmax op's forward (an fp32 model's last layer in dl_predict) of every ISA
   against double, into another buffer and in place. */
DL_TEST(softmax_rows_of_every_isa_match_double)
{
    static const int widths[] = { 1, 2, 3, 10, 15, 16, 17, 32, 33, 100 };
    static float z[8 * 100], lab[8], y[8 * 100];
    dl_rng r;
    int isa, wi, tried = 0;
    dl_rng_seed(&r, 12);
    for (isa = 0; isa < DL__ISA_COUNT; isa++) {
        if (dl_set_isa(dl__isa_table[isa].name) != DL_OK) continue;
        tried++;
        for (wi = 0; wi < (int)(sizeof widths / sizeof widths[0]); wi++) {
            const int cols = widths[wi], rows = 8;
            double worst = 0.0, e;
            int pass;
            softmax_logits(z, lab, rows, cols, &r);
            for (pass = 0; pass < 2; pass++) {   /* into y, then in place */
                if (pass) memcpy(y, z, sizeof(float) * rows * cols);
                dl__softmax_rows(pass ? y : z, y, (size_t)rows, cols, 0);
                e = softmax_worst_error(z, y, rows, cols, NULL, NULL);
                if (e > worst) worst = e;
            }
            if (!(worst < 1e-6)) DL_FAILF("isa %s, %d classes: worst probability error %g", dl__isa_table[isa].name, cols, worst);
            DL_CHECK(worst < 1e-6);
        }
    }
    DL_CHECK(tried >= 1);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
}

/* The softmax cross-entropy rows (section 1.8) of every ISA against the same sums in
   double: probabilities and the loss, for widths around the 16-lane vectors, logits
   far apart (probabilities down in the denormals and below), all equal, and -inf;
   a NaN logit must give a NaN loss (the training loop stops on it). */
DL_TEST(softmax_ce_rows_of_every_isa_match_double_sums)
{
    static const int widths[] = { 1, 2, 3, 10, 15, 16, 17, 32, 33, 100 };
    static float z[8 * 100], lab[8], pr[8 * 100];
    dl_rng r;
    int isa, wi, tried = 0;
    dl_rng_seed(&r, 11);
    for (isa = 0; isa < DL__ISA_COUNT; isa++) {
        if (dl_set_isa(dl__isa_table[isa].name) != DL_OK) continue;
        tried++;
        for (wi = 0; wi < (int)(sizeof widths / sizeof widths[0]); wi++) {
            const int cols = widths[wi], rows = 8;
            double want = 0.0, got, worst;
            softmax_logits(z, lab, rows, cols, &r);
            got = dl__ce_rows(z, lab, pr, (size_t)rows, cols);
            worst = softmax_worst_error(z, pr, rows, cols, lab, &want);
            if (!(worst < 1e-6) || !(fabs(got - want) <= 1e-6 * fabs(want) + 1e-6))
                DL_FAILF("isa %s, %d classes: worst probability error %g, loss sum %.9g (want %.9g)",
                         dl__isa_table[isa].name, cols, worst, got, want);
            z[cols - 1] = NAN;
            DL_CHECK(isnan(dl__ce_rows(z, lab, pr, 1, cols)));
            z[cols - 1] = 0.0f;
            z[0] = NAN;
            DL_CHECK(isnan(dl__ce_rows(z, lab, pr, 1, cols)));
        }
    }
    DL_CHECK(tried >= 1);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
}

/* The elementwise gradient kernels of every ISA, overwriting (a pass's first writer)
   and accumulating, against plain loops; the results are exact, so bit for bit.
   The length leaves a tail after every vector width. */
DL_TEST(relu_and_mask_gradients_of_every_isa_are_exact)
{
    enum { N = 1000 + 13 };
    static float x[N], dy[N], mask[N], dx[N], want[N], y[N];
    dl_rng r;
    int isa, acc, i, tried = 0;
    dl_rng_seed(&r, 4);
    for (i = 0; i < N; i++) {
        x[i] = i % 17 == 0 ? 0.0f : dl_rng_normal(&r);
        dy[i] = dl_rng_normal(&r);
        mask[i] = dl_rng_uniform(&r) < 0.3f ? 0.0f : 1.25f;
    }
    for (isa = 0; isa < DL__ISA_COUNT; isa++) {
        if (dl_set_isa(dl__isa_table[isa].name) != DL_OK) continue;
        tried++;
        dl__relu_fwd(x, y, N);
        for (i = 0; i < N; i++) if (y[i] != (x[i] > 0.0f ? x[i] : 0.0f)) break;
        if (i < N) DL_FAILF("isa %s: relu(x[%d] = %g) = %g", dl__isa_table[isa].name, i, (double)x[i], (double)y[i]);
        for (acc = 0; acc < 2; acc++) {
            for (i = 0; i < N; i++) dx[i] = want[i] = 0.5f * (float)(i % 7);
            for (i = 0; i < N; i++) want[i] = acc ? want[i] + (x[i] > 0.0f ? dy[i] : 0.0f) : x[i] > 0.0f ? dy[i] : 0.0f;
            dl__relu_bwd(x, dy, dx, N, acc);
            if (memcmp(dx, want, sizeof dx) != 0) DL_FAILF("isa %s: relu backward, acc %d", dl__isa_table[isa].name, acc);
            for (i = 0; i < N; i++) dx[i] = want[i] = 0.5f * (float)(i % 7);
            for (i = 0; i < N; i++) want[i] = acc ? want[i] + dy[i] * mask[i] : dy[i] * mask[i];
            dl__mask_grad(dx, dy, mask, N, acc);
            if (memcmp(dx, want, sizeof dx) != 0) DL_FAILF("isa %s: dropout backward, acc %d", dl__isa_table[isa].name, acc);
        }
    }
    DL_CHECK(tried >= 1);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
}

/* Mean and variance of an initialiser over a large parameter. */
static void init_stats(int init, dl_shape s, double *mean, double *var, float *lo, float *hi)
{
    dl_graph *g = dl_graph_new(21);
    int p = dl_param(g, "p", s, init);
    dl_tensor t = dl_node_value(g, p);
    size_t i, n = dl_shape_numel(s);
    double sum = 0, sq = 0;
    *lo = *hi = t.data[0];
    for (i = 0; i < n; i++) {
        sum += t.data[i]; sq += (double)t.data[i] * t.data[i];
        if (t.data[i] < *lo) *lo = t.data[i];
        if (t.data[i] > *hi) *hi = t.data[i];
    }
    *mean = sum / n;
    *var = sq / n - *mean * *mean;
    dl_graph_free(g);
}

DL_TEST(initialisers_have_their_documented_ranges)
{
    double mean, var;
    float lo, hi, lim;
    /* Glorot uniform on [784,128]: limit sqrt(6/912), variance limit^2/3. */
    lim = sqrtf(6.0f / 912.0f);
    init_stats(DL_INIT_GLOROT_UNIFORM, DL_SHAPE(784, 128), &mean, &var, &lo, &hi);
    DL_CHECK(lo >= -lim && hi <= lim && lo < -0.95f * lim && hi > 0.95f * lim);
    DL_CHECK_NEAR(mean, 0.0, 1e-3);
    DL_CHECK_NEAR(var, lim * lim / 3.0, 0.03 * lim * lim / 3.0);
    /* He normal on [256,64]: variance 2/256. He uniform: limit sqrt(6/256). */
    init_stats(DL_INIT_HE_NORMAL, DL_SHAPE(256, 64), &mean, &var, &lo, &hi);
    DL_CHECK_NEAR(var, 2.0 / 256.0, 0.05 * 2.0 / 256.0);
    init_stats(DL_INIT_HE_UNIFORM, DL_SHAPE(256, 64), &mean, &var, &lo, &hi);
    DL_CHECK(hi <= sqrtf(6.0f / 256.0f) && lo >= -sqrtf(6.0f / 256.0f));
    DL_CHECK_NEAR(var, 2.0 / 256.0, 0.05 * 2.0 / 256.0);
    /* A conv2d kernel [kh, kw, in, out]: fan_in = kh*kw*in. */
    init_stats(DL_INIT_HE_NORMAL, DL_SHAPE(3, 3, 16, 64), &mean, &var, &lo, &hi);
    DL_CHECK_NEAR(var, 2.0 / 144.0, 0.07 * 2.0 / 144.0);
    init_stats(DL_INIT_ZEROS, DL_SHAPE(10), &mean, &var, &lo, &hi);
    DL_CHECK(lo == 0.0f && hi == 0.0f);
}

DL_TEST(rng_is_reproducible_and_uniform)
{
    dl_rng a, b;
    int i, counts[4] = {0, 0, 0, 0}, idx[10];
    dl_rng_seed(&a, 42); dl_rng_seed(&b, 42);
    for (i = 0; i < 1000; i++) DL_CHECK(dl_rng_u32(&a) == dl_rng_u32(&b));
    for (i = 0; i < 40000; i++) counts[dl_rng_below(&a, 4)]++;
    for (i = 0; i < 4; i++) DL_CHECK(counts[i] > 9500 && counts[i] < 10500);
    for (i = 0; i < 10; i++) idx[i] = i;
    dl_rng_shuffle(&a, idx, 10);
    { int seen = 0; for (i = 0; i < 10; i++) seen |= 1 << idx[i]; DL_CHECK_EQ_INT(seen, 1023); }
    dl_rng_seed(&b, 43);
    dl_rng_seed(&a, 42);
    DL_CHECK(dl_rng_u32(&a) != dl_rng_u32(&b));
}

DL_TEST_MAIN()
