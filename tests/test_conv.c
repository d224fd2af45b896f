/* Convolution kernels. The scalar reference (dl__conv_*_ref) against an independent
   double-precision formulation (an explicit im2col matrix times the filter matrix, and
   its transposes), the adjoint identities that tie the three functions together, finite
   differences of the forward pass; then every kernel of every ISA this CPU runs, at one
   and two threads, against the reference; argument checking; no allocation after the
   first call. Shapes: strides 1/2, dilation 2, groups and depthwise, a kernel larger
   than its input, 1x1 images, batch 1, odd channel counts, few input channels, and one
   above the threading threshold (the per-task weight-gradient sums and their reduction). */
#include "dltest_alloc.h"
#include "dltest.h"
#include <float.h>

static unsigned test_seed = 777u;
static float test_rand(void)
{
    test_seed = test_seed * 1664525u + 1013904223u;
    return (float)((test_seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* n h w c oc kh kw  sh sw dh dw  pad top/bottom/left/right  groups */
typedef struct { int n, h, w, c, oc, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, g; } shape;
static const shape shapes[] = {
    { 2, 5, 6, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1 },      /* same, c = 3 */
    { 1, 7, 8, 5, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, 1 },      /* stride 2 */
    { 2, 9, 9, 4, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1 },      /* dilation 2, same */
    { 2, 6, 5, 6, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3 },      /* 3 groups */
    { 2, 6, 7, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5 },      /* depthwise */
    { 1, 7, 6, 4, 8, 3, 3, 2, 1, 1, 1, 1, 1, 0, 0, 4 },      /* depthwise x2, stride 2 x 1 */
    { 1, 2, 3, 3, 4, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 1 },      /* kernel larger than input */
    { 3, 1, 1, 7, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1 },      /* 1x1 images, 1x1 kernel */
    { 2, 1, 1, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1 },      /* 1x1 images, 3x3 same */
    { 1, 5, 5, 7, 13, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1 },     /* batch 1, odd channels, valid */
    { 2, 8, 8, 1, 32, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1 },     /* first layer, c = 1 */
    { 2, 8, 9, 3, 35, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1 },     /* c = 3, odd oc */
    { 2, 9, 10, 4, 5, 2, 3, 2, 2, 2, 2, 1, 0, 2, 1, 1 },     /* 2x3 kernel, stride 2, dilation 2 */
    { 2, 4, 5, 8, 12, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1 },     /* 1x1 */
    { 1, 5, 5, 6, 7, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1 },      /* 1x1, stride 2 */
    { 2, 12, 13, 16, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1 },  /* several tiles each way */
    { 1, 9, 7, 6, 10, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 1 },     /* 5x5 */
    { 1, 11, 11, 2, 3, 3, 3, 3, 3, 1, 1, 0, 2, 1, 0, 1 },    /* stride 3 beyond the kernel span */
    { 2, 13, 13, 32, 64, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1 },  /* the seeds' second layer */
    { 2, 5, 5, 64, 128, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1 },   /* the seeds' third layer: 3x3 outputs, im2col */
    { 2, 9, 8, 2, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1 },     /* few channels, stride 2 */
    { 1, 7, 7, 4, 12, 3, 3, 1, 2, 2, 1, 2, 2, 1, 1, 1 },     /* 4 channels, dilation 2 x 1 */
    { 2, 6, 6, 4, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2 },     /* 2 groups of 2 -> 16 */
    { 4, 12, 12, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1 },  /* enough work to split over threads */
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static dl_conv2d_params params_of(const shape *s)
{
    dl_conv2d_params p;
    memset(&p, 0, sizeof p);
    p.n = s->n; p.h = s->h; p.w = s->w; p.c = s->c; p.oc = s->oc; p.kh = s->kh; p.kw = s->kw;
    p.stride_h = s->sh; p.stride_w = s->sw; p.dil_h = s->dh; p.dil_w = s->dw;
    p.pad_top = s->pt; p.pad_left = s->pl; p.groups = s->g;
    p.oh = dl_conv2d_out_size(s->h, s->kh, s->sh, s->dh, s->pt, s->pb);
    p.ow = dl_conv2d_out_size(s->w, s->kw, s->sw, s->dw, s->pl, s->pr);
    return p;
}

/* Buffers of one shape: inputs, and double-precision results of the im2col formulation
   with, per element, the sum of the magnitudes of its terms (for the tolerance). */
typedef struct {
    dl_conv2d_params p;
    size_t nx, nw, ny;
    float *x, *w, *bias, *dy;
    double *y, *ya, *dx, *dxa, *dw, *dwa, *db, *dba;
} fixture;

static void fixture_free(fixture *f)
{
    free(f->x); free(f->w); free(f->bias); free(f->dy);
    free(f->y); free(f->ya); free(f->dx); free(f->dxa); free(f->dw); free(f->dwa); free(f->db); free(f->dba);
}

/* The im2col matrix of group g: row per output pixel, column per (ky, kx, ci); -1 marks
   a padding entry. Built from the padding arithmetic alone, written independently of
   the reference's loops. */
static void fixture_make(fixture *f, const shape *s)
{
    const dl_conv2d_params *p = &f->p;
    int g, G, cg, ocg, K, ky, kx, ci, o;
    size_t npix, pix, i;
    long *col;
    f->p = params_of(s);
    G = s->g; cg = s->c / G; ocg = s->oc / G; K = s->kh * s->kw * cg;
    npix = (size_t)p->n * p->oh * p->ow;
    f->nx = (size_t)p->n * p->h * p->w * p->c;
    f->nw = (size_t)K * p->oc;
    f->ny = npix * p->oc;
    f->x = malloc(f->nx * sizeof(float)); f->w = malloc(f->nw * sizeof(float));
    f->bias = malloc(p->oc * sizeof(float)); f->dy = malloc(f->ny * sizeof(float));
    f->y = calloc(f->ny, sizeof(double)); f->ya = calloc(f->ny, sizeof(double));
    f->dx = calloc(f->nx, sizeof(double)); f->dxa = calloc(f->nx, sizeof(double));
    f->dw = calloc(f->nw, sizeof(double)); f->dwa = calloc(f->nw, sizeof(double));
    f->db = calloc(p->oc, sizeof(double)); f->dba = calloc(p->oc, sizeof(double));
    for (i = 0; i < f->nx; i++) f->x[i] = test_rand();
    for (i = 0; i < f->nw; i++) f->w[i] = test_rand();
    for (i = 0; i < (size_t)p->oc; i++) f->bias[i] = test_rand();
    for (i = 0; i < f->ny; i++) f->dy[i] = test_rand();
    col = malloc(npix * K * sizeof(long));
    for (g = 0; g < G; g++) {
        for (pix = 0; pix < npix; pix++) {
            int b = (int)(pix / ((size_t)p->oh * p->ow)), r = (int)(pix % ((size_t)p->oh * p->ow));
            int oy = r / p->ow, ox = r % p->ow, k = 0;
            for (ky = 0; ky < s->kh; ky++)
                for (kx = 0; kx < s->kw; kx++)
                    for (ci = 0; ci < cg; ci++, k++) {
                        int iy = oy * s->sh + ky * s->dh - s->pt, ix = ox * s->sw + kx * s->dw - s->pl;
                        col[pix * K + k] = iy < 0 || iy >= s->h || ix < 0 || ix >= s->w ? -1
                            : (((long)b * s->h + iy) * s->w + ix) * s->c + g * cg + ci;
                    }
        }
        for (pix = 0; pix < npix; pix++)
            for (o = 0; o < ocg; o++) {
                size_t yi = pix * p->oc + g * ocg + o;
                int k;
                for (k = 0; k < K; k++) {
                    long xi = col[pix * K + k];
                    double t, wv = f->w[(size_t)k * p->oc + g * ocg + o], dyv = f->dy[yi];
                    if (xi < 0) continue;
                    t = (double)f->x[xi] * wv;
                    f->y[yi] += t; f->ya[yi] += fabs(t);
                    t = dyv * wv;                            /* dXcol = dY W^T, scattered */
                    f->dx[xi] += t; f->dxa[xi] += fabs(t);
                    t = (double)f->x[xi] * dyv;              /* dW = Xcol^T dY */
                    f->dw[(size_t)k * p->oc + g * ocg + o] += t;
                    f->dwa[(size_t)k * p->oc + g * ocg + o] += fabs(t);
                }
            }
    }
    for (pix = 0; pix < npix; pix++)
        for (o = 0; o < p->oc; o++) {
            f->db[o] += f->dy[pix * p->oc + o];
            f->dba[o] += fabs(f->dy[pix * p->oc + o]);
        }
    free(col);
}

/* got[i] (+ base[i] when base != NULL) against want[i] within a bound of rounding in
   float sums of `terms` terms of total magnitude abs[i]. */
static int close_all(const char *what, const shape *s, const float *got, const float *base,
                     const double *want, const double *abs_, size_t n, double terms, double slack)
{
    size_t i;
    for (i = 0; i < n; i++) {
        double ref = want[i] + (base ? base[i] : 0.0);
        double tol = slack * FLT_EPSILON * (terms + 2) * (abs_[i] + (base ? fabs(base[i]) : 0.0)) + 1e-30;
        if (!(fabs(got[i] - ref) <= tol)) {
            fprintf(stderr, "  %s [%s]: shape %dx%dx%dx%d->%d k%dx%d s%d,%d d%d,%d g%d: [%zu] = %.9g, want %.9g (tol %.3g)\n",
                    what, dl_isa_name(), s->n, s->h, s->w, s->c, s->oc, s->kh, s->kw, s->sh, s->sw,
                    s->dh, s->dw, s->g, i, got[i], ref, tol);
            return 0;
        }
    }
    return 1;
}

/* The reference against the im2col formulation, overwrite and accumulate modes. */
DL_TEST(reference_vs_im2col)
{
    int si;
    for (si = 0; si < NSHAPES; si++) {
        const shape *s = &shapes[si];
        fixture f;
        dl__conv q;
        float *y, *dx, *dw, *db, *base;
        size_t i, nb;
        double npix, kt;
        fixture_make(&f, s);
        dl__conv_norm(&f.p, &q);
        DL_CHECK_EQ_INT(dl_conv2d_check(&f.p), DL_OK);
        npix = (double)f.p.n * f.p.oh * f.p.ow;
        kt = (double)s->kh * s->kw * (s->c / s->g);
        y = malloc(f.ny * sizeof(float)); dx = malloc(f.nx * sizeof(float));
        dw = malloc(f.nw * sizeof(float)); db = malloc(f.p.oc * sizeof(float));
        nb = f.nx > f.nw ? f.nx : f.nw;
        base = malloc(nb * sizeof(float));
        for (i = 0; i < nb; i++) base[i] = test_rand();
        dl__conv_fwd_ref(&q, f.x, f.w, NULL, y);
        DL_CHECK(close_all("ref fwd", s, y, NULL, f.y, f.ya, f.ny, kt, 2.0));
        dl__conv_fwd_ref(&q, f.x, f.w, f.bias, y);
        for (i = 0; i < f.ny; i++) { f.y[i] += f.bias[i % f.p.oc]; f.ya[i] += fabs(f.bias[i % f.p.oc]); }
        DL_CHECK(close_all("ref fwd+bias", s, y, NULL, f.y, f.ya, f.ny, kt + 1, 2.0));
        dl__conv_bwd_data_ref(&q, f.dy, f.w, dx, 0);
        DL_CHECK(close_all("ref bwd_data", s, dx, NULL, f.dx, f.dxa, f.nx, s->kh * s->kw * (double)f.p.oc, 2.0));
        memcpy(dx, base, f.nx * sizeof(float));
        dl__conv_bwd_data_ref(&q, f.dy, f.w, dx, 1);
        DL_CHECK(close_all("ref bwd_data acc", s, dx, base, f.dx, f.dxa, f.nx, s->kh * s->kw * (double)f.p.oc, 2.0));
        dl__conv_bwd_weights_ref(&q, f.x, f.dy, dw, db, 0);
        DL_CHECK(close_all("ref bwd_weights", s, dw, NULL, f.dw, f.dwa, f.nw, npix, 2.0));
        DL_CHECK(close_all("ref bwd_bias", s, db, NULL, f.db, f.dba, f.p.oc, npix, 2.0));
        memcpy(dw, base, f.nw * sizeof(float));
        memcpy(db, base, f.p.oc * sizeof(float));
        dl__conv_bwd_weights_ref(&q, f.x, f.dy, dw, db, 1);
        DL_CHECK(close_all("ref bwd_weights acc", s, dw, base, f.dw, f.dwa, f.nw, npix, 2.0));
        DL_CHECK(close_all("ref bwd_bias acc", s, db, base, f.db, f.dba, f.p.oc, npix, 2.0));
        free(y); free(dx); free(dw); free(db); free(base);
        fixture_free(&f);
    }
}

static double dotf(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double dotabs(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

/* L(x, w, bias) = <dy, conv(x, w) + bias>, summed in double. */
static double loss_of(const dl_conv2d_params *p, const float *x, const float *w, const float *bias,
                      const float *dy, float *y, size_t ny)
{
    dl_conv2d_fwd(p, x, w, bias, y);
    return dotf(dy, y, ny);
}

/* The public entry points (whatever kernel the current ISA picks): the adjoint identities
   <dy, conv(x)> = <conv^T(dy), x> = <dW(x, dy), w>, and central differences of L with
   respect to a few entries of x, w and bias. */
static void adjoint_and_fd(void)
{
    int si;
    for (si = 0; si < NSHAPES; si++) {
        const shape *s = &shapes[si];
        fixture f;
        float *y, *dx, *dw, *db;
        double l0, lx, lw, scale;
        int t;
        fixture_make(&f, s);
        y = malloc(f.ny * sizeof(float)); dx = malloc(f.nx * sizeof(float));
        dw = malloc(f.nw * sizeof(float)); db = malloc(f.p.oc * sizeof(float));
        dl_conv2d_fwd(&f.p, f.x, f.w, NULL, y);
        dl_conv2d_bwd_data(&f.p, f.dy, f.w, dx, 0);
        dl_conv2d_bwd_weights(&f.p, f.x, f.dy, dw, db, 0);
        l0 = dotf(f.dy, y, f.ny);
        lx = dotf(dx, f.x, f.nx);
        lw = dotf(dw, f.w, f.nw);
        scale = 1e-5 * (dotabs(f.dy, y, f.ny) + dotabs(dx, f.x, f.nx) + dotabs(dw, f.w, f.nw)) + 1e-6;
        if (!(fabs(l0 - lx) <= scale && fabs(l0 - lw) <= scale))
            DL_FAILF("[%s] shape %d: <dy,conv(x)> %.9g, <conv^T(dy),x> %.9g, <dW,w> %.9g (tol %.3g)",
                     dl_isa_name(), si, l0, lx, lw, scale);
        DL_CHECK(fabs(l0 - lx) <= scale && fabs(l0 - lw) <= scale);
        /* L is linear in each argument, so a central difference is exact up to rounding */
        for (t = 0; t < 3; t++) {
            const float h = 0.25f;
            size_t ix = ((size_t)si * 15485863u + (size_t)t * 32452843u) % f.nx;
            size_t iw = ((size_t)si * 7919u + (size_t)t * 104729u) % f.nw;
            size_t ib = ((size_t)t * 31u) % f.p.oc;
            float keep;
            double lp, lm, tol = 1e-5 * dotabs(f.dy, y, f.ny) / h + 1e-4;
            keep = f.x[ix];
            f.x[ix] = keep + h; lp = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.x[ix] = keep - h; lm = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.x[ix] = keep;
            DL_CHECK_NEAR((lp - lm) / (2 * h), dx[ix], tol);
            keep = f.w[iw];
            f.w[iw] = keep + h; lp = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.w[iw] = keep - h; lm = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.w[iw] = keep;
            DL_CHECK_NEAR((lp - lm) / (2 * h), dw[iw], tol);
            keep = f.bias[ib];
            f.bias[ib] = keep + h; lp = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.bias[ib] = keep - h; lm = loss_of(&f.p, f.x, f.w, f.bias, f.dy, y, f.ny);
            f.bias[ib] = keep;
            DL_CHECK_NEAR((lp - lm) / (2 * h), db[ib], tol);
        }
        free(y); free(dx); free(dw); free(db);
        fixture_free(&f);
    }
}

static const char *const test_isas[] = { "scalar", "avx2", "avx512", "neon" };

static void for_each_isa(void (*fn)(void))
{
    int i, ran = 0;
    for (i = 0; i < 4; i++) {
        if (dl_set_isa(test_isas[i]) != DL_OK) continue;
        DL_CHECK(strcmp(dl_isa_name(), test_isas[i]) == 0);
        fn();
        ran++;
    }
    DL_CHECK(ran >= 1);
    dl_set_isa(NULL);
}

DL_TEST(adjoint_and_finite_differences) { for_each_isa(adjoint_and_fd); }

/* Every kernel of the current ISA against the reference, at 1 and 2 threads, overwrite
   and accumulate; the same call twice gives the same bits. */
static void kernels_vs_reference(void)
{
    int si, nt;
    for (nt = 1; nt <= 2; nt++) {
        dl_set_threads(nt);
        for (si = 0; si < NSHAPES; si++) {
            const shape *s = &shapes[si];
            fixture f;
            dl__conv q;
            float *y, *yr, *dx, *dxr, *dw, *dwr, *db, *dbr, *base;
            double npix, kt, kd;
            size_t i, nb;
            fixture_make(&f, s);
            dl__conv_norm(&f.p, &q);
            npix = (double)f.p.n * f.p.oh * f.p.ow;
            kt = (double)s->kh * s->kw * (s->c / s->g) + 1;
            kd = (double)s->kh * s->kw * (s->oc / s->g);
            y = malloc(f.ny * sizeof(float)); yr = malloc(f.ny * sizeof(float));
            dx = malloc(f.nx * sizeof(float)); dxr = malloc(f.nx * sizeof(float));
            dw = malloc(f.nw * sizeof(float)); dwr = malloc(f.nw * sizeof(float));
            db = malloc(f.p.oc * sizeof(float)); dbr = malloc(f.p.oc * sizeof(float));
            nb = f.nx > f.nw ? f.nx : f.nw;
            base = malloc(nb * sizeof(float));
            for (i = 0; i < nb; i++) base[i] = test_rand();
            for (i = 0; i < f.ny; i++) f.ya[i] += fabs(f.bias[i % f.p.oc]);
            /* reference results, in double for close_all */
            dl__conv_fwd_ref(&q, f.x, f.w, f.bias, yr);
            dl__conv_bwd_data_ref(&q, f.dy, f.w, dxr, 0);
            dl__conv_bwd_weights_ref(&q, f.x, f.dy, dwr, dbr, 0);
            for (i = 0; i < f.ny; i++) f.y[i] = yr[i];
            for (i = 0; i < f.nx; i++) f.dx[i] = dxr[i];
            for (i = 0; i < f.nw; i++) f.dw[i] = dwr[i];
            for (i = 0; i < (size_t)f.p.oc; i++) f.db[i] = dbr[i];
            for (i = 0; i < f.ny; i++) y[i] = NAN;
            dl_conv2d_fwd(&f.p, f.x, f.w, f.bias, y);
            DL_CHECK(close_all("fwd", s, y, NULL, f.y, f.ya, f.ny, kt, 4.0));
            memcpy(yr, y, f.ny * sizeof(float));
            dl_conv2d_fwd(&f.p, f.x, f.w, f.bias, y);
            DL_CHECK(memcmp(y, yr, f.ny * sizeof(float)) == 0);
            for (i = 0; i < f.nx; i++) dx[i] = NAN;
            dl_conv2d_bwd_data(&f.p, f.dy, f.w, dx, 0);
            DL_CHECK(close_all("bwd_data", s, dx, NULL, f.dx, f.dxa, f.nx, kd, 4.0));
            memcpy(dx, base, f.nx * sizeof(float));
            dl_conv2d_bwd_data(&f.p, f.dy, f.w, dx, 1);
            DL_CHECK(close_all("bwd_data acc", s, dx, base, f.dx, f.dxa, f.nx, kd, 4.0));
            for (i = 0; i < f.nw; i++) dw[i] = NAN;
            for (i = 0; i < (size_t)f.p.oc; i++) db[i] = NAN;
            dl_conv2d_bwd_weights(&f.p, f.x, f.dy, dw, db, 0);
            DL_CHECK(close_all("bwd_weights", s, dw, NULL, f.dw, f.dwa, f.nw, npix, 4.0));
            DL_CHECK(close_all("bwd_bias", s, db, NULL, f.db, f.dba, f.p.oc, npix, 4.0));
            memcpy(dwr, dw, f.nw * sizeof(float));
            dl_conv2d_bwd_weights(&f.p, f.x, f.dy, dw, NULL, 0);
            DL_CHECK(memcmp(dw, dwr, f.nw * sizeof(float)) == 0);
            memcpy(dw, base, f.nw * sizeof(float));
            memcpy(db, base, f.p.oc * sizeof(float));
            dl_conv2d_bwd_weights(&f.p, f.x, f.dy, dw, db, 1);
            DL_CHECK(close_all("bwd_weights acc", s, dw, base, f.dw, f.dwa, f.nw, npix, 4.0));
            DL_CHECK(close_all("bwd_bias acc", s, db, base, f.db, f.dba, f.p.oc, npix, 4.0));
            free(y); free(yr); free(dx); free(dxr); free(dw); free(dwr); free(db); free(dbr); free(base);
            fixture_free(&f);
        }
    }
    dl_set_threads(0);
}

DL_TEST(kernels_vs_reference) { for_each_isa(kernels_vs_reference); }

/* After one call per function with a shape and thread count, none allocates. */
DL_TEST(no_allocation_after_first_call)
{
    int si, nt, rep;
    for (nt = 1; nt <= 2; nt++) {
        dl_set_threads(nt);
        for (si = 0; si < NSHAPES; si++) {
            fixture f;
            float *y, *dx, *dw, *db;
            long before = 0;
            fixture_make(&f, &shapes[si]);
            y = malloc(f.ny * sizeof(float)); dx = malloc(f.nx * sizeof(float));
            dw = malloc(f.nw * sizeof(float)); db = malloc(f.p.oc * sizeof(float));
            for (rep = 0; rep < 2; rep++) {
                if (rep == 1) before = g_allocs;
                dl_conv2d_fwd(&f.p, f.x, f.w, f.bias, y);
                dl_conv2d_bwd_data(&f.p, f.dy, f.w, dx, 0);
                dl_conv2d_bwd_weights(&f.p, f.x, f.dy, dw, db, 0);
            }
            DL_CHECK_EQ_INT(g_allocs - before, 0);
            free(y); free(dx); free(dw); free(db);
            fixture_free(&f);
        }
    }
    dl_set_threads(0);
}

DL_TEST(out_size)
{
    DL_CHECK_EQ_INT(dl_conv2d_out_size(28, 3, 1, 1, 0, 0), 26);   /* Keras valid */
    DL_CHECK_EQ_INT(dl_conv2d_out_size(28, 3, 1, 1, 1, 1), 28);   /* same */
    DL_CHECK_EQ_INT(dl_conv2d_out_size(28, 3, 2, 1, 0, 1), 14);   /* same, stride 2 */
    DL_CHECK_EQ_INT(dl_conv2d_out_size(13, 3, 2, 1, 0, 0), 6);
    DL_CHECK_EQ_INT(dl_conv2d_out_size(9, 3, 1, 2, 0, 0), 5);     /* dilated extent 5 */
    DL_CHECK_EQ_INT(dl_conv2d_out_size(2, 5, 0, 0, 2, 2), 2);     /* 0 means 1 */
    DL_CHECK(dl_conv2d_out_size(2, 5, 1, 1, 0, 0) <= 0);          /* kernel longer than input */
    DL_CHECK(dl_conv2d_out_size(0, 3, 1, 1, 1, 1) <= 0);
    DL_CHECK(dl_conv2d_out_size(5, 3, 1, 1, -1, 0) <= 0);
    DL_CHECK(dl_conv2d_out_size(5, 3, -1, 1, 0, 0) <= 0);
}

/* Bad parameters are refused with a message, and the entry points then write nothing. */
DL_TEST(bad_params)
{
    dl_conv2d_params p, b;
    float x[64], w[64], y[64];
    int i;
    memset(&p, 0, sizeof p);
    p.n = 1; p.h = 4; p.w = 4; p.c = 2; p.oc = 2; p.kh = 3; p.kw = 3; p.oh = 2; p.ow = 2;
    DL_CHECK_EQ_INT(dl_conv2d_check(&p), DL_OK);
    DL_CHECK_EQ_INT(dl_conv2d_check(NULL), DL_ERR);
    b = p; b.c = 0;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "non-positive");
    b = p; b.kw = -1;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "filters");
    b = p; b.oh = 0;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "output size");
    b = p; b.groups = 3; b.c = 3;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "groups do not divide");
    b = p; b.stride_h = -2;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "negative");
    b = p; b.pad_left = -1;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "negative");
    b = p; b.pad_top = 3;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "extent");
    b = p; b.ow = 5;  /* would need a right pad of 3 */
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "bottom/right");
    b = p; b.n = 1 << 20; b.h = 1 << 12; b.w = 1 << 12; b.oh = b.h - 2; b.ow = b.w - 2;
    DL_CHECK_EQ_INT(dl_conv2d_check(&b), DL_ERR); DL_CHECK_STR_CONTAINS(dl_last_error(), "too large");
    b = p; b.groups = 3;
    for (i = 0; i < 64; i++) { x[i] = 1.0f; w[i] = 1.0f; y[i] = -7.0f; }
    dl_conv2d_fwd(&b, x, w, NULL, y);
    dl_conv2d_bwd_data(&b, x, w, y, 0);
    dl_conv2d_bwd_weights(&b, x, x, y, NULL, 0);
    for (i = 0; i < 64; i++) if (y[i] != -7.0f) break;
    DL_CHECK_EQ_INT(i, 64);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "groups");
}

DL_TEST_MAIN()
