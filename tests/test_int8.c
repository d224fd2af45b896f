/* The int8 GEMM (dl_gemm_u8s8s32) bit for bit against a plain triple loop over the
   unpacked operands, for every variant this CPU runs (scalar, AVX2, AVX-512 VNNI, NEON,
   NEON dot product): edge sizes around the tiles (MR up to 8, and 16 for VNNI's
   one-panel blocks; 16-column panels, k in groups of 4), extreme values (A = 127, B = -128) where vpmaddubsw would saturate if
   the 7-bit bound were not enough, padded leading dimensions, threaded row splits. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include "tests/dltest.h"
#include <stdlib.h>

static unsigned test_seed = 777u;
static unsigned test_next(void) { test_seed = test_seed * 1664525u + 1013904223u; return test_seed >> 8; }

/* mode 0: random values; 1: the extremes (A 127, B -128 or 127) */
static int check(int v, int m, int n, int k, int pad, int mode)
{
    int lda = k + pad, ldb = k + 3, ldc = n + pad, i, j, p, ok = 1;
    uint8_t *a = (uint8_t *)malloc((size_t)m * lda + 1);
    int8_t *b = (int8_t *)malloc((size_t)n * ldb + 1);
    int8_t *bp = (int8_t *)malloc(dl_s8_packed_size(n, k) + 1);
    int32_t *c = (int32_t *)malloc(((size_t)m * ldc + 1) * 4);
    for (i = 0; i < m * lda; i++) a[i] = (uint8_t)(mode ? 127 : test_next() % 128);
    for (i = 0; i < n * ldb; i++) b[i] = (int8_t)(mode ? (i % 3 ? -128 : 127) : (int)(test_next() % 256) - 128);
    for (i = 0; i < m * ldc; i++) c[i] = 0x5a5a5a5a;
    dl_pack_s8(n, k, b, ldb, bp);
    dl__i8_gemm(v, m, n, k, a, lda, bp, c, ldc, NULL, NULL);
    for (i = 0; i < m && ok; i++)
        for (j = 0; j < ldc && ok; j++) {
            int32_t ref = 0x5a5a5a5a;
            if (j < n) for (ref = 0, p = 0; p < k; p++) ref += (int32_t)a[(size_t)i * lda + p] * b[(size_t)j * ldb + p];
            if (c[(size_t)i * ldc + j] != ref) {
                DL_FAILF("%s m=%d n=%d k=%d pad=%d mode=%d: C[%d][%d] = %d, expected %d", dl__i8_names[v], m, n, k, pad,
                         mode, i, j, c[(size_t)i * ldc + j], ref);
                ok = 0;
            }
        }
    free(a); free(b); free(bp); free(c);
    return ok;
}

static int test_variants[DL__I8_COUNT], test_nvariants;

static void find_variants(void)
{
    int v;
    test_nvariants = 0;
    for (v = 0; v < DL__I8_COUNT; v++)
        if (dl__i8_get(v).ukr) test_variants[test_nvariants++] = v;
}

DL_TEST(int8_variants_present)
{
    int v, have = 0;
    find_variants();
    for (v = 0; v < test_nvariants; v++) printf("  int8 variant: %s\n", dl__i8_names[test_variants[v]]);
    DL_CHECK(test_nvariants >= 1 && test_variants[0] == DL__I8_SCALAR);
#if defined(DLCORE_NO_SIMD)
    DL_CHECK_EQ_INT(test_nvariants, 1);   /* the scalar kernel alone */
    (void)have;
#elif defined(__x86_64__)
    /* The AVX2 kernel whenever the CPU has AVX2; the VNNI one whenever it has VNNI. */
    __builtin_cpu_init();
    for (v = 0; v < test_nvariants; v++) have |= 1 << test_variants[v];
    DL_CHECK(!__builtin_cpu_supports("avx2") || (have >> DL__I8_AVX2 & 1));
    DL_CHECK(!__builtin_cpu_supports("avx512vnni") || (have >> DL__I8_VNNI & 1));
#elif defined(__aarch64__)
    for (v = 0; v < test_nvariants; v++) have |= 1 << test_variants[v];
    DL_CHECK(have >> DL__I8_NEON & 1);
    /* qemu-aarch64's default CPU has the dot product; a real ARMv8.0 core does not */
    printf("  dotprod %s\n", have >> DL__I8_DOT & 1 ? "present" : "absent");
#else
    (void)have;
#endif
}

DL_TEST(int8_edges_mn)
{
    static const int ns[] = { 1, 2, 7, 8, 9, 10, 12, 13, 15, 16, 17, 24, 26, 28, 31, 32, 33, 47, 48, 64, 65 };
    int v, m, ni, ok = 1;
    find_variants();
    for (v = 0; v < test_nvariants; v++)
        for (m = 1; m <= 34 && ok; m++)
            for (ni = 0; ni < (int)(sizeof ns / sizeof *ns) && ok; ni++)
                ok = check(test_variants[v], m, ns[ni], 13, m % 3, 0);
    DL_CHECK(ok);
}

DL_TEST(int8_edges_k)
{
    static const int ks[] = { 1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 127, 128, 129, 784 };
    int v, ki, ok = 1;
    find_variants();
    for (v = 0; v < test_nvariants; v++)
        for (ki = 0; ki < (int)(sizeof ks / sizeof *ks) && ok; ki++) {
            ok = check(test_variants[v], 9, 33, ks[ki], 1, 0);
            if (ok) ok = check(test_variants[v], 3, 10, ks[ki], 0, 0);
            if (ok) ok = check(test_variants[v], 21, 10, ks[ki], 2, 0);   /* VNNI: 16 + 5 rows of one panel */
        }
    DL_CHECK(ok);
}

/* A = 127, B = -128: each vpmaddubsw pair is -32512, one step from -32768; any wider
   activation range would saturate there, and the sums over k = 1000 overflow s16. */
DL_TEST(int8_extremes)
{
    int v, ok = 1;
    find_variants();
    for (v = 0; v < test_nvariants && ok; v++) {
        ok = check(test_variants[v], 8, 32, 1000, 0, 1);
        if (ok) ok = check(test_variants[v], 5, 17, 6, 2, 1);
        if (ok) ok = check(test_variants[v], 4, 12, 1000, 0, 1);   /* the 12-wide AVX2 panel */
        if (ok) ok = check(test_variants[v], 3, 8, 1001, 1, 1);    /* the 8-wide one, a k tail */
    }
    DL_CHECK(ok);
}

/* Big enough to split rows over the pool (MLP layer 1 at batch 256). */
DL_TEST(int8_threaded_mlp_shape)
{
    int v, ok = 1;
    find_variants();
    dl_set_threads(2);
    for (v = 0; v < test_nvariants && ok; v++) ok = check(test_variants[v], 256, 128, 784, 0, 0);
    dl_set_threads(0);
    DL_CHECK(ok);
}

/* The public entry follows dl_set_isa; an empty k gives zeros. */
DL_TEST(int8_public_api)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    uint8_t a[3 * 5] = { 1, 2, 3, 4, 5, 127, 0, 127, 0, 127, 9, 9, 9, 9, 9 };
    int8_t b[2 * 5] = { 1, -1, 1, -1, 1, -128, 127, -128, 127, -128 }, bp[64 * 2];
    int32_t c[6];
    int i;
    DL_CHECK_EQ_INT(dl_s8_packed_size(2, 5), 16 * 8);
    DL_CHECK_EQ_INT(dl_s8_packed_size(17, 4), 32 * 4);
    DL_CHECK_EQ_INT(dl_s8_packed_size(0, 4), 0);
    dl_pack_s8(2, 5, b, 5, bp);
    for (i = 0; i < 4; i++) {
        if (dl_set_isa(isas[i]) != DL_OK) continue;
        memset(c, 0x7f, sizeof c);
        dl_gemm_u8s8s32(3, 2, 5, a, 5, bp, c, 2);
        DL_CHECK_EQ_INT(c[0], 1 - 2 + 3 - 4 + 5);
        DL_CHECK_EQ_INT(c[1], -128 + 254 - 384 + 508 - 640);
        DL_CHECK_EQ_INT(c[2], 127 + 0 + 127 + 0 + 127);
        DL_CHECK_EQ_INT(c[3], 127 * (-128) * 3);
        DL_CHECK_EQ_INT(c[5], 9 * (-128 + 127 - 128 + 127 - 128));
        dl_gemm_u8s8s32(3, 2, 0, a, 5, bp, c, 2);
        DL_CHECK_EQ_INT(c[0] | c[1] | c[2] | c[3] | c[4] | c[5], 0);
    }
    dl_set_isa(NULL);
    printf("  int8 kernel: %s\n", dl_int8_kernel_name());
    DL_CHECK(strlen(dl_int8_kernel_name()) > 0);
}

DL_TEST_MAIN()
