/* dl_sgemm against a double-precision triple loop, for every ISA this CPU runs:
   all edges of m/n/k around the tile and block sizes, all transposes, alpha/beta
   cases, padded leading dimensions, NaN garbage under beta = 0; plus the ISA/thread
   API, thread-count independence and zero allocations after warm-up. */
#include "dltest_alloc.h"
#include "dltest.h"
#include <float.h>

static unsigned test_seed = 12345u;
static float test_rand(void)
{
    test_seed = test_seed * 1664525u + 1013904223u;
    return (float)((test_seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float *test_buf(size_t n) { return (float *)malloc(n * sizeof(float) + 16); }

/* A starts this many floats into its buffer (alignment-dependent code paths). */
static int test_a_off;

/* Runs one case; returns 1 if every element is within tolerance (and prints the first
   failure). ld* are the minimal leading dimensions plus `pad`. */
static int check_case(int ta, int tb, int m, int n, int k, float alpha, float beta, int pad)
{
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    int arows = ta ? k : m, brows = tb ? n : k;
    float *abuf = test_buf((size_t)arows * lda + test_a_off), *a = abuf + test_a_off;
    float *b = test_buf((size_t)brows * ldb);
    float *c = test_buf((size_t)m * ldc), *c0 = test_buf((size_t)m * ldc);
    int i, j, p, ok = 1;
    for (i = 0; i < arows * lda; i++) a[i] = test_rand();
    for (i = 0; i < brows * ldb; i++) b[i] = test_rand();
    for (i = 0; i < m * ldc; i++) c0[i] = beta == 0.0f ? NAN : test_rand();
    memcpy(c, c0, (size_t)m * ldc * sizeof(float));
    dl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    for (i = 0; i < m && ok; i++) {
        for (j = 0; j < ldc && ok; j++) {
            double s = 0.0, sa = 0.0, ref, tol;
            float got = c[(size_t)i * ldc + j];
            if (j >= n) { /* padding columns must be left alone */
                if (memcmp(&got, &c0[(size_t)i * ldc + j], sizeof got) != 0) ok = 0;
                continue;
            }
            for (p = 0; p < k; p++) {
                double x = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double y = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                s += x * y;
                sa += fabs(x * y);
            }
            ref = alpha * s;
            tol = 4.0 * FLT_EPSILON * (k + 2) * fabs(alpha) * sa;
            if (beta != 0.0f) {
                ref += (double)beta * c0[(size_t)i * ldc + j];
                tol += 4.0 * FLT_EPSILON * fabs(beta * c0[(size_t)i * ldc + j]);
            }
            if (!(fabs(got - ref) <= tol + 1e-30)) ok = 0;
            if (!ok)
                fprintf(stderr, "  %s: ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d: "
                        "C[%d][%d] = %.9g, want %.9g (tol %.3g)\n", dl_isa_name(), ta, tb,
                        m, n, k, alpha, beta, pad, i, j, got, ref, tol);
        }
    }
    free(abuf); free(b); free(c); free(c0);
    return ok;
}

static const char *const test_isas[] = { "scalar", "avx2", "avx512", "neon" };

/* Loops fn over every ISA the running CPU supports. */
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

static const float alphas[] = { 1.0f, -0.5f };
static const float betas[] = { 0.0f, 1.0f, 0.3f };

/* m and n over 1..3 tiles for a few k; transposes/alpha/beta/padding cycle with the
   case index so every combination meets every edge of some dimension. */
static void sweep_mn(void)
{
    const dl__isa_desc *d = &dl__isa_table[dl__isa_cur];
    static const int ks[] = { 1, 2, 7, 17 };
    int m, n, ki, idx = 0, fails = 0;
    for (ki = 0; ki < 4; ki++)
        for (m = 1; m <= 3 * d->mr; m++)
            for (n = 1; n <= 3 * d->nr; n++, idx++) {
                int t = idx & 3;
                if (!check_case(t & 1, t >> 1, m, n, ks[ki], alphas[(idx >> 2) & 1],
                                betas[idx % 3], (idx % 5 == 0) ? 0 : 2 * (idx % 3) + 1))
                    if (++fails > 5) { DL_CHECK(fails == 0); return; }
            }
    DL_CHECK(fails == 0);
}

/* k over 1..40 and the KC block edges (both KCs), against a few m/n edge values, all
   transposes. */
static void sweep_k(void)
{
    const dl__isa_desc *d = &dl__isa_table[dl__isa_cur];
    int ms[4], ns[4], ks[48], nk = 0, mi, ni, ki, t, idx = 0, fails = 0;
    ms[0] = 1; ms[1] = d->mr; ms[2] = d->mr + 1; ms[3] = 2 * d->mr + 3;
    ns[0] = 1; ns[1] = d->nr - 1; ns[2] = d->nr; ns[3] = d->nr + 1;
    for (ki = 1; ki <= 40; ki++) ks[nk++] = ki;
    ks[nk++] = d->kc - 1; ks[nk++] = d->kc; ks[nk++] = d->kc + 1; ks[nk++] = 2 * d->kc + 3;
    if (d->kc_at != d->kc) { /* the KC of an A^T read in place */
        ks[nk++] = d->kc_at - 1; ks[nk++] = d->kc_at; ks[nk++] = d->kc_at + 1;
    }
    for (ki = 0; ki < nk; ki++)
        for (mi = 0; mi < 4; mi++)
            for (ni = 0; ni < 4; ni++, idx++)
                for (t = 0; t < 4; t++)
                    if (!check_case(t & 1, t >> 1, ms[mi], ns[ni], ks[ki], alphas[idx & 1],
                                    betas[idx % 3], idx % 2 ? 3 : 0))
                        if (++fails > 5) { DL_CHECK(fails == 0); return; }
    DL_CHECK(fails == 0);
}

/* Large and prime sizes crossing the MC, NC and KC block boundaries. */
static void sweep_blocks(void)
{
    const dl__isa_desc *d = &dl__isa_table[dl__isa_cur];
    int shapes[6][3], s, t, fails = 0;
    shapes[0][0] = 257; shapes[0][1] = 1031; shapes[0][2] = 67;
    shapes[1][0] = 1031; shapes[1][1] = 45; shapes[1][2] = d->kc + 13;
    shapes[2][0] = d->mc + 7; shapes[2][1] = 19; shapes[2][2] = d->kc + 1;
    shapes[3][0] = 13; shapes[3][1] = 2 * d->nc + 3; shapes[3][2] = 2 * d->kc + 5;
    shapes[4][0] = 128; shapes[4][1] = 10; shapes[4][2] = 128;
    shapes[5][0] = 97; shapes[5][1] = d->nc + 1; shapes[5][2] = 31;
    for (s = 0; s < 6; s++)
        for (t = 0; t < 4; t++)
            if (!check_case(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                            alphas[(s + t) & 1], betas[(s + t) % 3], (s + t) % 2 ? 1 : 0))
                fails++;
    DL_CHECK(fails == 0);
}

/* n <= 16 (AVX-512 runs these vectorised over M): m around the 16/32-row panels, k
   around the 128-step pack chunks, A at every 64-byte alignment with lda a multiple
   of 16 floats (pad 0, k = 128/256) and not. */
static void sweep_small_n(void)
{
    static const int ms[] = { 1, 5, 15, 16, 17, 31, 32, 33, 70 }, ks[] = { 1, 3, 113, 128, 129, 256, 300 };
    int mi, n, ki, t, idx = 0, fails = 0;
    for (mi = 0; mi < 9; mi++)
        for (n = 1; n <= 17; n++)
            for (ki = 0; ki < 7; ki++, idx++)
                for (t = 0; t < 4; t++) {
                    test_a_off = (idx + t) % 17;
                    if (!check_case(t & 1, t >> 1, ms[mi], n, ks[ki], alphas[idx & 1],
                                    betas[(idx + t) % 3], (idx + t) % 3 ? 0 : 5))
                        if (++fails > 5) break;
                }
    test_a_off = 0;
    DL_CHECK(fails == 0);
}

/* Rows computed alone or a few together (m = 1..3: batch-1 inference and small joined
   batches, their own paths on AVX-512) have the bits they have in a batch of nine, which
   takes the packed path: dlcore-serve joins requests into one dl_predict and promises
   each the bits it would get alone. n around the 16-column vectors and the 64- and
   128-column passes, k across the KC blocks, every alpha/beta. */
static float *rand_buf(size_t n)
{
    float *p = test_buf(n);
    size_t i;
    for (i = 0; i < n; i++) p[i] = test_rand();
    return p;
}

static void few_rows_case(void)
{
    const dl__isa_desc *d = &dl__isa_table[dl__isa_cur];
    static const int ns[] = { 1, 10, 16, 17, 63, 64, 65, 127, 128, 129, 300 };
    const int nn = (int)(sizeof ns / sizeof ns[0]), M = 9;
    int ks[6], ni, ki, ai, bi, m, r, fails = 0;
    ks[0] = 1; ks[1] = 7; ks[2] = 784; ks[3] = d->kc; ks[4] = d->kc + 1; ks[5] = 2 * d->kc + 3;
    for (ni = 0; ni < nn; ni++)
        for (ki = 0; ki < 6; ki++)
            for (ai = 0; ai < 2; ai++)
                for (bi = 0; bi < 3; bi++) {
                    int n = ns[ni], k = ks[ki];
                    float *a = rand_buf((size_t)M * k), *b = rand_buf((size_t)k * n), *c0 = rand_buf((size_t)M * n);
                    float *all = test_buf((size_t)M * n), *few = test_buf((size_t)4 * n);
                    memcpy(all, c0, sizeof(float) * M * n);
                    dl_sgemm(0, 0, M, n, k, alphas[ai], a, k, b, n, betas[bi], all, n);
                    for (m = 1; m <= 4; m++)
                        for (r = 0; r <= M - m; r += M - m) {
                            memcpy(few, c0 + (size_t)r * n, sizeof(float) * m * n);
                            dl_sgemm(0, 0, m, n, k, alphas[ai], a + (size_t)r * k, k, b, n, betas[bi], few, n);
                            if (memcmp(few, all + (size_t)r * n, sizeof(float) * m * n) != 0 && ++fails <= 3)
                                fprintf(stderr, "  %s: n=%d k=%d alpha=%g beta=%g: rows %d..%d alone differ from their batch\n",
                                        dl_isa_name(), n, k, alphas[ai], betas[bi], r, r + m - 1);
                        }
                    free(a); free(b); free(c0); free(all); free(few);
                }
    DL_CHECK(fails == 0);
}

DL_TEST(sgemm_few_rows_have_their_batch_bits) { for_each_isa(few_rows_case); }
DL_TEST(sgemm_edges_mn) { for_each_isa(sweep_mn); }
DL_TEST(sgemm_small_n) { for_each_isa(sweep_small_n); }
DL_TEST(sgemm_edges_k) { for_each_isa(sweep_k); }
DL_TEST(sgemm_block_boundaries) { for_each_isa(sweep_blocks); }

DL_TEST(sgemm_degenerate)
{
    float a[4] = { 1, 2, 3, 4 }, c[4] = { 1, 2, 3, 4 };
    dl_sgemm(0, 0, 2, 2, 0, 1.0f, a, 2, a, 2, 0.5f, c, 2); /* k = 0: C = beta*C */
    DL_CHECK_NEAR(c[3], 2.0f, 0.0f);
    dl_sgemm(0, 0, 2, 2, 2, 0.0f, a, 2, a, 2, 0.0f, c, 2); /* alpha = 0, beta = 0: zeros */
    DL_CHECK_NEAR(c[0], 0.0f, 0.0f);
    c[0] = 7.0f; c[1] = 8.0f;
    dl_sgemm(0, 0, 0, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2); /* m = 0: nothing, C untouched */
    DL_CHECK(c[0] == 7.0f && c[1] == 8.0f);
    dl_sgemm(0, 0, 2, 0, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2); /* n = 0: nothing */
    DL_CHECK(c[0] == 7.0f && c[1] == 8.0f);
}

/* dl_thread_release frees this thread's packing workspace: the next call packs
   into a new one (an allocation) and computes the same result. */
DL_TEST(thread_release_frees_the_workspace)
{
    enum { N = 96 };
    float *a = test_buf(N * N), *c1 = test_buf(N * N), *c2 = test_buf(N * N);
    long before;
    int i;
    for (i = 0; i < N * N; i++) a[i] = test_rand();
    dl_set_threads(1);
    dl_sgemm(0, 0, N, N, N, 1.0f, a, N, a, N, 0.0f, c1, N);
    before = g_allocs;
    dl_sgemm(0, 0, N, N, N, 1.0f, a, N, a, N, 0.0f, c2, N);
    DL_CHECK_EQ_INT(g_allocs, before);
    dl_thread_release();
    dl_sgemm(0, 0, N, N, N, 1.0f, a, N, a, N, 0.0f, c2, N);
    DL_CHECK(g_allocs > before);
    DL_CHECK(memcmp(c1, c2, N * N * sizeof(float)) == 0);
    free(a); free(c1); free(c2);
}

DL_TEST(isa_api_errors)
{
    const char *before = dl_isa_name();
    DL_CHECK_EQ_INT(dl_set_isa("bogus"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "bogus");
    DL_CHECK(strcmp(dl_isa_name(), before) == 0);
#if defined(__aarch64__)
    DL_CHECK_EQ_INT(dl_set_isa("avx512"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "avx512");
#else
    DL_CHECK_EQ_INT(dl_set_isa("neon"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "neon");
#endif
    DL_CHECK_EQ_INT(dl_set_isa("scalar"), DL_OK);
    DL_CHECK(strcmp(dl_isa_name(), "scalar") == 0);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
    DL_CHECK(strcmp(dl_isa_name(), before) == 0);
    DL_CHECK_EQ_INT(dl_set_threads(-1), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "-1");
    DL_CHECK_EQ_INT(dl_set_threads(2), DL_OK);
#ifdef DLCORE_NO_THREADS
    DL_CHECK_EQ_INT(dl_get_threads(), 1);
#else
    DL_CHECK_EQ_INT(dl_get_threads(), 2);
#endif
    DL_CHECK_EQ_INT(dl_set_threads(1), DL_OK);
    DL_CHECK_EQ_INT(dl_get_threads(), 1);
}

/* Same product with 1 and 2 threads, bit for bit: the threads split C into blocks
   and every element is summed in the same order whoever computes it. Repeated
   2-thread runs are bit-identical too. */
static void threads_case(void)
{
    int m = 203, n = 517, k = 131, i, same = 1, close = 1;
    float *a = test_buf((size_t)m * k), *b = test_buf((size_t)k * n);
    float *c1 = test_buf((size_t)m * n), *c2 = test_buf((size_t)m * n), *c3 = test_buf((size_t)m * n);
    for (i = 0; i < m * k; i++) a[i] = test_rand();
    for (i = 0; i < k * n; i++) b[i] = test_rand();
    dl_set_threads(1);
    dl_sgemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, c1, n);
    dl_set_threads(2);
    dl_sgemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, c2, n);
    for (i = 0; i < 5 && same; i++) {
        dl_sgemm(0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, c3, n);
        same = memcmp(c2, c3, (size_t)m * n * sizeof(float)) == 0;
    }
    close = memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0;
    for (i = 0; i < m * n && close; i++) if (c1[i] != c2[i]) close = 0;
    DL_CHECK(same);
    if (!close) DL_FAILF("%s: 1 and 2 threads differ", dl_isa_name());
    DL_CHECK(close);
    dl_set_threads(1);
    free(a); free(b); free(c1); free(c2); free(c3);
}
DL_TEST(sgemm_threads_deterministic)
{
#ifdef DLCORE_NO_THREADS
    DL_SKIP("DLCORE_NO_THREADS build: one thread only");
#endif
    for_each_isa(threads_case);
}

/* After one pass over the shapes nothing allocates. Which shares of a job a worker
   takes depends on timing; every thread of the pool grows its workspace to the job's
   largest share before taking any, so one pass is enough whoever ran what. */
static long gemm_pass(const float *a, const float *b, float *c)
{
    static const int shapes[4][3] = { { 128, 128, 784 }, { 128, 10, 128 }, { 784, 128, 128 }, { 300, 300, 300 } };
    long before = g_allocs;
    int s, ta;
    for (s = 0; s < 4; s++)
        for (ta = 0; ta < 4; ta++)
            dl_sgemm(ta & 1, ta >> 1, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, a, 784, b, 784, 0.0f, c, 784);
    return g_allocs - before;
}

DL_TEST(sgemm_no_alloc_after_first_pass)
{
    float *a = test_buf(784 * 784), *b = test_buf(784 * 784), *c = test_buf(784 * 784);
    int th, s, rep;
    for (s = 0; s < 784 * 784; s++) { a[s] = test_rand(); b[s] = test_rand(); }
    for (th = 1; th <= 2; th++) {
        dl_set_threads(th);
        dl_thread_release();                 /* the caller starts from no workspace too */
        DL_CHECK(gemm_pass(a, b, c) > 0);    /* the first pass grows the workspaces */
        for (rep = 0; rep < 5; rep++) DL_CHECK_EQ_INT(gemm_pass(a, b, c), 0);
    }
    dl_set_threads(1);
    free(a); free(b); free(c);
}

DL_TEST_MAIN()
