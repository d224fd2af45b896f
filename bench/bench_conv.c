/* bench_conv.c - dl_conv2d_* per ISA against oneDNN's C API (Debian libdnnl), interleaved
   per shape, one thread: the forward pass, the input gradient, the weight gradient (with
   the bias gradient) and the three in a row ("sum"), for the N = 64 3x3 pad-1
   shapes and the seeds' CNN layers (valid padding).
   The peer: convolution forward_training / backward_data / backward_weights primitives,
   algorithm "direct" (the one PyTorch's oneDNN path asks for), every tensor in the memory format oneDNN picks for that primitive
   (format "any"); the inputs are reordered into those formats in setup, which is not
   timed. Debian's libdnnl runs its threads through OpenMP: setup calls
   omp_set_num_threads(1) before creating a primitive, and the t1 invocation runs under
   taskset on one core anyway. "onednn-auto" lets oneDNN choose the algorithm (Winograd
   for these 3x3 shapes on AVX-512, which does fewer flops than it is credited with
   here); it is shown beside the peer, not used as the peer. Teardown checks sampled outputs of both sides against a
   double-precision loop. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <oneapi/dnnl/dnnl.h>
#include "dlcore.h"
#include "bench/bench.h"

void omp_set_num_threads(int n);   /* libgomp, which Debian's libdnnl uses */

enum { OP_FWD, OP_BWD_DATA, OP_BWD_WEIGHTS, OP_SUM };

typedef struct conv_ctx {
    dl_conv2d_params p;
    int pb, pr, op;
    dnnl_alg_kind_t alg;
    size_t nx, nw, ny;
    float *x, *w, *bias, *dy, *y, *dx, *dw, *db;   /* user layouts: NHWC, HWIO */
    /* oneDNN */
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_primitive_t prim[3];
    dnnl_primitive_desc_t pd[3];
    dnnl_memory_t m_src, m_wei, m_bias, m_dst;          /* forward */
    dnnl_memory_t b_ddst, b_wei, b_dsrc;                /* backward data */
    dnnl_memory_t w_src, w_ddst, w_dwei, w_dbias;       /* backward weights */
} conv_ctx;

static void fill_uniform(float *x, size_t n, unsigned seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

/* args: n h w c oc k pad op */
static int conv_alloc(bench_state *s)
{
    const long *a = s->c->args;
    conv_ctx *x = (conv_ctx *)calloc(1, sizeof *x);
    dl_conv2d_params *p;
    s->ctx = x;
    if (!x) return snprintf(s->msg, sizeof s->msg, "out of memory"), -1;
    p = &x->p;
    p->n = (int)a[0]; p->h = (int)a[1]; p->w = (int)a[2]; p->c = (int)a[3]; p->oc = (int)a[4];
    p->kh = p->kw = (int)a[5]; p->pad_top = p->pad_left = (int)a[6];
    x->pb = x->pr = (int)a[6];
    x->op = (int)a[7];
    p->oh = dl_conv2d_out_size(p->h, p->kh, 1, 1, p->pad_top, x->pb);
    p->ow = dl_conv2d_out_size(p->w, p->kw, 1, 1, p->pad_left, x->pr);
    if (dl_conv2d_check(p) != DL_OK) return snprintf(s->msg, sizeof s->msg, "%s", dl_last_error()), -1;
    x->nx = (size_t)p->n * p->h * p->w * p->c;
    x->nw = (size_t)p->kh * p->kw * p->c * p->oc;
    x->ny = (size_t)p->n * p->oh * p->ow * p->oc;
    x->x = (float *)malloc(x->nx * sizeof(float)); x->dx = (float *)calloc(x->nx, sizeof(float));
    x->w = (float *)malloc(x->nw * sizeof(float)); x->dw = (float *)calloc(x->nw, sizeof(float));
    x->y = (float *)calloc(x->ny, sizeof(float)); x->dy = (float *)malloc(x->ny * sizeof(float));
    x->bias = (float *)malloc(p->oc * sizeof(float)); x->db = (float *)calloc(p->oc, sizeof(float));
    if (!x->x || !x->dx || !x->w || !x->dw || !x->y || !x->dy || !x->bias || !x->db)
        return snprintf(s->msg, sizeof s->msg, "out of memory"), -1;
    fill_uniform(x->x, x->nx, 1u);
    fill_uniform(x->w, x->nw, 2u);
    fill_uniform(x->dy, x->ny, 3u);
    fill_uniform(x->bias, p->oc, 4u);
    return 0;
}

static double conv_flops(const bench_case *c)
{
    const long *a = c->args;
    long oh = a[1] + 2 * a[6] - a[5] + 1, ow = a[2] + 2 * a[6] - a[5] + 1;
    double one = 2.0 * a[0] * oh * ow * a[4] * a[5] * a[5] * a[3];
    return a[7] == OP_SUM ? 3.0 * one : one;
}

/* Sampled entries of y, dx, dw, db against double-precision sums. */
static int conv_check(bench_state *s, const float *y, const float *dx, const float *dw, const float *db)
{
    conv_ctx *x = (conv_ctx *)s->ctx;
    const dl_conv2d_params *p = &x->p;
    int t;
    unsigned seed = 99u;
    for (t = 0; t < 24; t++) {
        int b, oy, ox, o, iy, ix, ci, ky, kx;
        double ref, mag, got;
        seed = seed * 1664525u + 1013904223u; b = (int)(seed >> 8) % p->n;
        seed = seed * 1664525u + 1013904223u; o = (int)(seed >> 8) % p->oc;
        seed = seed * 1664525u + 1013904223u; ci = (int)(seed >> 8) % p->c;
        seed = seed * 1664525u + 1013904223u; oy = (int)(seed >> 8) % p->oh; iy = (int)(seed >> 12) % p->h;
        seed = seed * 1664525u + 1013904223u; ox = (int)(seed >> 8) % p->ow; ix = (int)(seed >> 12) % p->w;
        seed = seed * 1664525u + 1013904223u; ky = (int)(seed >> 8) % p->kh; kx = (int)(seed >> 12) % p->kw;
        if (y) {
            int a, bb, c;
            ref = x->bias[o]; mag = fabs(ref);
            for (a = 0; a < p->kh; a++) for (bb = 0; bb < p->kw; bb++) {
                int yy = oy - p->pad_top + a, xx = ox - p->pad_left + bb;
                if (yy < 0 || yy >= p->h || xx < 0 || xx >= p->w) continue;
                for (c = 0; c < p->c; c++) {
                    double v = (double)x->x[(((size_t)b * p->h + yy) * p->w + xx) * p->c + c] *
                               x->w[(((size_t)a * p->kw + bb) * p->c + c) * p->oc + o];
                    ref += v; mag += fabs(v);
                }
            }
            got = y[(((size_t)b * p->oh + oy) * p->ow + ox) * p->oc + o];
            if (fabs(got - ref) > 1e-5 * mag + 1e-6)
                return snprintf(s->msg, sizeof s->msg, "y[%d,%d,%d,%d] = %g, want %g", b, oy, ox, o, got, ref), -1;
        }
        if (dx) {
            int a, bb, oo;
            ref = 0; mag = 0;
            for (a = 0; a < p->kh; a++) for (bb = 0; bb < p->kw; bb++) {
                int yy = iy + p->pad_top - a, xx = ix + p->pad_left - bb;
                if (yy < 0 || yy >= p->oh || xx < 0 || xx >= p->ow) continue;
                for (oo = 0; oo < p->oc; oo++) {
                    double v = (double)x->dy[(((size_t)b * p->oh + yy) * p->ow + xx) * p->oc + oo] *
                               x->w[(((size_t)a * p->kw + bb) * p->c + ci) * p->oc + oo];
                    ref += v; mag += fabs(v);
                }
            }
            got = dx[(((size_t)b * p->h + iy) * p->w + ix) * p->c + ci];
            if (fabs(got - ref) > 1e-5 * mag + 1e-6)
                return snprintf(s->msg, sizeof s->msg, "dx[%d,%d,%d,%d] = %g, want %g", b, iy, ix, ci, got, ref), -1;
        }
        if (dw && t < 6) {
            int bb, yy, xx;
            double rb = 0, mb = 0;
            ref = 0; mag = 0;
            for (bb = 0; bb < p->n; bb++)
                for (yy = 0; yy < p->oh; yy++)
                    for (xx = 0; xx < p->ow; xx++) {
                        int sy = yy - p->pad_top + ky, sx = xx - p->pad_left + kx;
                        double d = x->dy[(((size_t)bb * p->oh + yy) * p->ow + xx) * p->oc + o];
                        rb += d; mb += fabs(d);
                        if (sy < 0 || sy >= p->h || sx < 0 || sx >= p->w) continue;
                        d *= x->x[(((size_t)bb * p->h + sy) * p->w + sx) * p->c + ci];
                        ref += d; mag += fabs(d);
                    }
            got = dw[(((size_t)ky * p->kw + kx) * p->c + ci) * p->oc + o];
            if (fabs(got - ref) > 1e-5 * mag + 1e-6)
                return snprintf(s->msg, sizeof s->msg, "dw[%d,%d,%d,%d] = %g, want %g", ky, kx, ci, o, got, ref), -1;
            if (db && fabs(db[o] - rb) > 1e-5 * mb + 1e-6)
                return snprintf(s->msg, sizeof s->msg, "db[%d] = %g, want %g", o, db[o], rb), -1;
        }
    }
    return 0;
}

/* ---- dlcore */
static const char *dlcore_unavailable(const bench_case *c)
{
    static char why[256];
    if (dl_set_isa(c->param) == DL_OK) return 0;
    snprintf(why, sizeof why, "dl_set_isa(\"%s\") failed: %s", c->param, dl_last_error());
    return why;
}

static int dlcore_setup(bench_state *s)
{
    if (dl_set_isa(s->c->param) != DL_OK || dl_set_threads(s->c->threads) != DL_OK)
        return snprintf(s->msg, sizeof s->msg, "%s", dl_last_error()), -1;
    return conv_alloc(s);
}

static void dlcore_run(bench_state *s)
{
    conv_ctx *x = (conv_ctx *)s->ctx;
    if (x->op == OP_FWD || x->op == OP_SUM) dl_conv2d_fwd(&x->p, x->x, x->w, x->bias, x->y);
    if (x->op == OP_BWD_DATA || x->op == OP_SUM) dl_conv2d_bwd_data(&x->p, x->dy, x->w, x->dx, 0);
    if (x->op == OP_BWD_WEIGHTS || x->op == OP_SUM) dl_conv2d_bwd_weights(&x->p, x->x, x->dy, x->dw, x->db, 0);
}

static void conv_free(conv_ctx *x)
{
    int i;
    if (!x) return;
    for (i = 0; i < 3; i++) {
        if (x->prim[i]) dnnl_primitive_destroy(x->prim[i]);
        if (x->pd[i]) dnnl_primitive_desc_destroy(x->pd[i]);
    }
    if (x->m_src) dnnl_memory_destroy(x->m_src);
    if (x->m_wei) dnnl_memory_destroy(x->m_wei);
    if (x->m_bias) dnnl_memory_destroy(x->m_bias);
    if (x->m_dst) dnnl_memory_destroy(x->m_dst);
    if (x->b_ddst) dnnl_memory_destroy(x->b_ddst);
    if (x->b_wei) dnnl_memory_destroy(x->b_wei);
    if (x->b_dsrc) dnnl_memory_destroy(x->b_dsrc);
    if (x->w_src) dnnl_memory_destroy(x->w_src);
    if (x->w_ddst) dnnl_memory_destroy(x->w_ddst);
    if (x->w_dwei) dnnl_memory_destroy(x->w_dwei);
    if (x->w_dbias) dnnl_memory_destroy(x->w_dbias);
    if (x->strm) dnnl_stream_destroy(x->strm);
    if (x->eng) dnnl_engine_destroy(x->eng);
    free(x->x); free(x->dx); free(x->w); free(x->dw); free(x->y); free(x->dy); free(x->bias); free(x->db);
    free(x);
}

static int dlcore_teardown(bench_state *s)
{
    conv_ctx *x = (conv_ctx *)s->ctx;
    int rc = 0;
    if (x && x->y) {
        int fw = x->op == OP_FWD || x->op == OP_SUM, bd = x->op == OP_BWD_DATA || x->op == OP_SUM;
        int bw = x->op == OP_BWD_WEIGHTS || x->op == OP_SUM;
        rc = conv_check(s, fw ? x->y : NULL, bd ? x->dx : NULL, bw ? x->dw : NULL, bw ? x->db : NULL);
    }
    conv_free(x);
    s->ctx = 0;
    return rc;
}

/* ---- oneDNN */
#define DNNL_OK(call) do { dnnl_status_t st_ = (call); if (st_ != dnnl_success)                  \
    return snprintf(s->msg, sizeof s->msg, "%s: status %d", #call, (int)st_), -1; } while (0)

/* A memory in the format `want` filled from (or, with back, read into) user data of `tag`. */
static int dnnl_mem(bench_state *s, conv_ctx *x, const dnnl_memory_desc_t *want, int ndims,
                    const dnnl_dims_t dims, dnnl_format_tag_t tag, float *user, int back, dnnl_memory_t *out)
{
    dnnl_memory_desc_t umd;
    dnnl_memory_t um;
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t r;
    dnnl_exec_arg_t args[2];
    DNNL_OK(dnnl_memory_desc_init_by_tag(&umd, ndims, dims, dnnl_f32, tag));
    if (!*out) DNNL_OK(dnnl_memory_create(out, want, x->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&um, &umd, x->eng, user));
    if (back) DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, want, x->eng, &umd, x->eng, NULL));
    else DNNL_OK(dnnl_reorder_primitive_desc_create(&rpd, &umd, x->eng, want, x->eng, NULL));
    DNNL_OK(dnnl_primitive_create(&r, rpd));
    args[0].arg = DNNL_ARG_FROM; args[0].memory = back ? *out : um;
    args[1].arg = DNNL_ARG_TO; args[1].memory = back ? um : *out;
    DNNL_OK(dnnl_primitive_execute(r, x->strm, 2, args));
    DNNL_OK(dnnl_stream_wait(x->strm));
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(um);
    return 0;
}

static const char *g_dnnl_impl[3];

static int onednn_setup(bench_state *s)
{
    conv_ctx *x;
    const dl_conv2d_params *p;
    dnnl_dims_t sd, wd, bd, dd, strides = { 1, 1 }, pl, pr;
    dnnl_memory_desc_t src_any, wei_any, bias_x, dst_any;
    dnnl_convolution_desc_t fd, bdd, wdd;
    const char *impl;
    int i;
    omp_set_num_threads(s->c->threads);
    if (conv_alloc(s)) return -1;
    x = (conv_ctx *)s->ctx;
    x->alg = s->c->param && strcmp(s->c->param, "auto") == 0 ? dnnl_convolution_auto : dnnl_convolution_direct;
    p = &x->p;
    sd[0] = p->n; sd[1] = p->c; sd[2] = p->h; sd[3] = p->w;
    wd[0] = p->oc; wd[1] = p->c; wd[2] = p->kh; wd[3] = p->kw;
    bd[0] = p->oc;
    dd[0] = p->n; dd[1] = p->oc; dd[2] = p->oh; dd[3] = p->ow;
    pl[0] = p->pad_top; pl[1] = p->pad_left; pr[0] = x->pb; pr[1] = x->pr;
    DNNL_OK(dnnl_engine_create(&x->eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&x->strm, x->eng, dnnl_stream_default_flags));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&src_any, 4, sd, dnnl_f32, dnnl_format_tag_any));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&wei_any, 4, wd, dnnl_f32, dnnl_format_tag_any));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&bias_x, 1, bd, dnnl_f32, dnnl_x));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, dnnl_f32, dnnl_format_tag_any));
    DNNL_OK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, x->alg, &src_any,
                                               &wei_any, &bias_x, &dst_any, strides, pl, pr));
    DNNL_OK(dnnl_primitive_desc_create(&x->pd[0], &fd, NULL, x->eng, NULL));
    DNNL_OK(dnnl_convolution_backward_data_desc_init(&bdd, x->alg, &src_any, &wei_any, &dst_any,
                                                     strides, pl, pr));
    DNNL_OK(dnnl_primitive_desc_create(&x->pd[1], &bdd, NULL, x->eng, x->pd[0]));
    DNNL_OK(dnnl_convolution_backward_weights_desc_init(&wdd, x->alg, &src_any, &wei_any, &bias_x,
                                                        &dst_any, strides, pl, pr));
    DNNL_OK(dnnl_primitive_desc_create(&x->pd[2], &wdd, NULL, x->eng, x->pd[0]));
    for (i = 0; i < 3; i++) {
        DNNL_OK(dnnl_primitive_create(&x->prim[i], x->pd[i]));
        if (x->alg == dnnl_convolution_direct &&
            dnnl_primitive_desc_query(x->pd[i], dnnl_query_impl_info_str, 0, &impl) == dnnl_success)
            g_dnnl_impl[i] = impl;
    }
    /* inputs in each primitive's formats (untimed reorders) */
    if (dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[0], dnnl_query_src_md, 0), 4, sd, dnnl_nhwc, x->x, 0, &x->m_src) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[0], dnnl_query_weights_md, 0), 4, wd, dnnl_hwio, x->w, 0, &x->m_wei) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[0], dnnl_query_weights_md, 1), 1, bd, dnnl_x, x->bias, 0, &x->m_bias) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[1], dnnl_query_diff_dst_md, 0), 4, dd, dnnl_nhwc, x->dy, 0, &x->b_ddst) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[1], dnnl_query_weights_md, 0), 4, wd, dnnl_hwio, x->w, 0, &x->b_wei) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_src_md, 0), 4, sd, dnnl_nhwc, x->x, 0, &x->w_src) ||
        dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_diff_dst_md, 0), 4, dd, dnnl_nhwc, x->dy, 0, &x->w_ddst))
        return -1;
    DNNL_OK(dnnl_memory_create(&x->m_dst, dnnl_primitive_desc_query_md(x->pd[0], dnnl_query_dst_md, 0), x->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&x->b_dsrc, dnnl_primitive_desc_query_md(x->pd[1], dnnl_query_diff_src_md, 0), x->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&x->w_dwei, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_diff_weights_md, 0), x->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_OK(dnnl_memory_create(&x->w_dbias, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_diff_weights_md, 1), x->eng, DNNL_MEMORY_ALLOCATE));
    return 0;
}

static void onednn_run(bench_state *s)
{
    conv_ctx *x = (conv_ctx *)s->ctx;
    if (x->op == OP_FWD || x->op == OP_SUM) {
        dnnl_exec_arg_t a[4] = { { DNNL_ARG_SRC, x->m_src }, { DNNL_ARG_WEIGHTS, x->m_wei },
                                 { DNNL_ARG_BIAS, x->m_bias }, { DNNL_ARG_DST, x->m_dst } };
        dnnl_primitive_execute(x->prim[0], x->strm, 4, a);
    }
    if (x->op == OP_BWD_DATA || x->op == OP_SUM) {
        dnnl_exec_arg_t a[3] = { { DNNL_ARG_DIFF_DST, x->b_ddst }, { DNNL_ARG_WEIGHTS, x->b_wei },
                                 { DNNL_ARG_DIFF_SRC, x->b_dsrc } };
        dnnl_primitive_execute(x->prim[1], x->strm, 3, a);
    }
    if (x->op == OP_BWD_WEIGHTS || x->op == OP_SUM) {
        dnnl_exec_arg_t a[4] = { { DNNL_ARG_SRC, x->w_src }, { DNNL_ARG_DIFF_DST, x->w_ddst },
                                 { DNNL_ARG_DIFF_WEIGHTS, x->w_dwei }, { DNNL_ARG_DIFF_BIAS, x->w_dbias } };
        dnnl_primitive_execute(x->prim[2], x->strm, 4, a);
    }
    dnnl_stream_wait(x->strm);
}

static int onednn_teardown(bench_state *s)
{
    conv_ctx *x = (conv_ctx *)s->ctx;
    int rc = 0;
    if (x && x->prim[2] && x->m_dst) {
        const dl_conv2d_params *p = &x->p;
        dnnl_dims_t sd, wd, bd, dd;
        int fw = x->op == OP_FWD || x->op == OP_SUM, bdt = x->op == OP_BWD_DATA || x->op == OP_SUM;
        int bw = x->op == OP_BWD_WEIGHTS || x->op == OP_SUM;
        sd[0] = p->n; sd[1] = p->c; sd[2] = p->h; sd[3] = p->w;
        wd[0] = p->oc; wd[1] = p->c; wd[2] = p->kh; wd[3] = p->kw;
        bd[0] = p->oc;
        dd[0] = p->n; dd[1] = p->oc; dd[2] = p->oh; dd[3] = p->ow;
        if ((fw && dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[0], dnnl_query_dst_md, 0), 4, dd, dnnl_nhwc, x->y, 1, &x->m_dst)) ||
            (bdt && dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[1], dnnl_query_diff_src_md, 0), 4, sd, dnnl_nhwc, x->dx, 1, &x->b_dsrc)) ||
            (bw && dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_diff_weights_md, 0), 4, wd, dnnl_hwio, x->dw, 1, &x->w_dwei)) ||
            (bw && dnnl_mem(s, x, dnnl_primitive_desc_query_md(x->pd[2], dnnl_query_diff_weights_md, 1), 1, bd, dnnl_x, x->db, 1, &x->w_dbias)))
            rc = -1;
        else
            rc = conv_check(s, fw ? x->y : NULL, bdt ? x->dx : NULL, bw ? x->dw : NULL, bw ? x->db : NULL);
    }
    conv_free(x);
    s->ctx = 0;
    return rc;
}

static const char *onednn_info(void)
{
    static char line[512];
    const dnnl_version_t *v = dnnl_version();
    snprintf(line, sizeof line, "peer: oneDNN %d.%d.%d (%s), 1 OpenMP thread; primitives: fwd %s, bwd_data %s, "
             "bwd_weights %s (the last shape set up)", v->major, v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime",
             g_dnnl_impl[0] ? g_dnnl_impl[0] : "?", g_dnnl_impl[1] ? g_dnnl_impl[1] : "?",
             g_dnnl_impl[2] ? g_dnnl_impl[2] : "?");
    return line;
}

#define CONV_GROUP(set, name) set "/" name "/t1"
#define CONV_ONEDNN(impl, alg, set, name, n, h, w, c, oc, k, pad, op)                          \
    { CONV_GROUP(set, name), impl, set, alg, 1, 0, onednn_setup, onednn_run, onednn_teardown,     \
      0, conv_flops, { n, h, w, c, oc, k, pad, op } }
#define CONV_DLCORE(isa, set, name, n, h, w, c, oc, k, pad, op)                                 \
    { CONV_GROUP(set, name), "dlcore-" isa, set, isa, 1, dlcore_unavailable, dlcore_setup,        \
      dlcore_run, dlcore_teardown, 0, conv_flops, { n, h, w, c, oc, k, pad, op } }
#define CONV_OP(set, name, n, h, w, c, oc, k, pad, op)                                          \
    CONV_ONEDNN("onednn", "direct", set, name, n, h, w, c, oc, k, pad, op),                     \
    CONV_ONEDNN("onednn-auto", "auto", set, name, n, h, w, c, oc, k, pad, op),                  \
    CONV_DLCORE("avx512", set, name, n, h, w, c, oc, k, pad, op),                               \
    CONV_DLCORE("avx2", set, name, n, h, w, c, oc, k, pad, op)
/* One shape: the three passes alone, and in a row. */
#define CONV_SHAPE(set, name, n, h, w, c, oc, k, pad)                                          \
    CONV_OP(set "-sum", name, n, h, w, c, oc, k, pad, OP_SUM),                                  \
    CONV_OP(set "-fwd", name, n, h, w, c, oc, k, pad, OP_FWD),                                  \
    CONV_OP(set "-bwd_data", name, n, h, w, c, oc, k, pad, OP_BWD_DATA),                        \
    CONV_OP(set "-bwd_weights", name, n, h, w, c, oc, k, pad, OP_BWD_WEIGHTS)

static const bench_case conv_cases[] = {
    /* N = 64, 3x3, pad 1, stride 1 */
    CONV_SHAPE("n64", "1-32@28", 64, 28, 28, 1, 32, 3, 1),
    CONV_SHAPE("n64", "32-64@14", 64, 14, 14, 32, 64, 3, 1),
    CONV_SHAPE("n64", "3-32@32", 64, 32, 32, 3, 32, 3, 1),
    CONV_SHAPE("n64", "64-128@8", 64, 8, 8, 64, 128, 3, 1),
    CONV_SHAPE("n64", "32-32@28", 64, 28, 28, 32, 32, 3, 1),
    /* the seeds' CNN at batch 64, valid padding */
    CONV_SHAPE("cnn", "1-32@28", 64, 28, 28, 1, 32, 3, 0),
    CONV_SHAPE("cnn", "32-64@13", 64, 13, 13, 32, 64, 3, 0),
    CONV_SHAPE("cnn", "64-128@5", 64, 5, 5, 64, 128, 3, 0),
};

const bench_suite bench_suite_conv = {
    "conv", "onednn", 0, conv_cases, (int)(sizeof conv_cases / sizeof conv_cases[0]), onednn_info
};
