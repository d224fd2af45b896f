/* ---- 1.0 Platform headers ------------------------------------------------------------
   The fragment sits inside the header's extern "C" block; system headers (intrinsics
   above all) must not be, so the block is closed around them. */
#ifdef __cplusplus
}
#endif
#if !defined(DLCORE_NO_SIMD) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define DL__X86 1
#include <immintrin.h>
#endif
#if !defined(DLCORE_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define DL__NEON 1
#include <arm_neon.h>
#endif
#ifndef DLCORE_NO_THREADS
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <pthread.h>
#include <unistd.h>
#endif
#endif
#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DL__TARGET(s) __attribute__((target(s)))
#define DL__LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define DL__TARGET(s)
#define DL__LIKELY(x) (x)
#endif

/* Scalar reference SGEMM: the loop order keeps the innermost loop unit-stride
   over C and B rows for the common NN case. */
DL__UNUSED static void dl__sgemm_ref(int ta, int tb, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc)
{
    int i, j, p;
    for (i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (beta == 0.0f) for (j = 0; j < n; j++) ci[j] = 0.0f;
        else if (beta != 1.0f) for (j = 0; j < n; j++) ci[j] *= beta;
        for (p = 0; p < k; p++) {
            float aip = alpha * (ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
            if (!tb) {
                const float *bp = b + (size_t)p * ldb;
                for (j = 0; j < n; j++) ci[j] += aip * bp[j];
            } else {
                for (j = 0; j < n; j++) ci[j] += aip * b[(size_t)j * ldb + p];
            }
        }
    }
}

/* ==== 1.1 Microkernels, side by side =====================================================
   Every kernel computes one MR x NR tile of C from packed (or directly usable) panels:
       C[i][j] = alpha * sum_p A(i,p) * B(p,j) + beta * C[i][j]      (beta == 0: C not read)
   A(i,p) = a[p*csa + i]  (the MR values of one k step are contiguous),
   B(p,j) = b[p*sb + j]   (the NR values of one k step are contiguous).
   Packed panels have csa = MR and sb = NR; the small-shape path hands the caller's
   matrices in directly when they already have this layout (A transposed, B not).
   The tile is always full: edge tiles are computed into a local MR x NR buffer, except
   where the ISA has an edge kernel (AVX-512 masks) that writes a partial tile itself.

   The A values are broadcast and the B row is the vector operand, so one k step costs
   MR broadcasts + NR/W vector loads for MR*NR/W FMAs (W = lanes per vector).

   Denormals: the kernels do not touch MXCSR/FPCR (no flush-to-zero). Changing the FP
   environment inside a library call would make results depend on which path ran and
   would leak into or fight the caller's own setting; Zen 4 and AArch64 cores run FMAs
   on subnormals at full speed, and trained MLP weights/activations are not subnormal
   in bulk anyway. A caller who wants FTZ sets it for their own thread. */

typedef void (*dl__ukr_fn)(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                           float *c, ptrdiff_t ldc, float alpha, float beta);

/* -- scalar 4x8: portable C; the fixed-size accumulator lets the compiler keep it in
      registers (and auto-vectorise it where it can). */
#define DL__SC_MR 4
#define DL__SC_NR 8
static void dl__ukr_scalar(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                           float *c, ptrdiff_t ldc, float alpha, float beta)
{
    float acc[DL__SC_MR][DL__SC_NR];
    int i, j, p;
    for (i = 0; i < DL__SC_MR; i++) for (j = 0; j < DL__SC_NR; j++) acc[i][j] = 0.0f;
    for (p = 0; p < k; p++, a += csa, b += sb)
        for (i = 0; i < DL__SC_MR; i++) {
            float ai = a[i * rsa];
            for (j = 0; j < DL__SC_NR; j++) acc[i][j] += ai * b[j];
        }
    for (i = 0; i < DL__SC_MR; i++) {
        float *ci = c + i * ldc;
        if (beta == 0.0f) for (j = 0; j < DL__SC_NR; j++) ci[j] = alpha * acc[i][j];
        else for (j = 0; j < DL__SC_NR; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
}

#ifdef DL__X86
/* -- AVX2+FMA 6x16: 12 ymm accumulators + 2 for the B row + 1 broadcast = 15 of 16.
      12 independent FMA chains cover 2 pipes x 4-cycle latency with margin. */
#define DL__AVX2_MR 6
#define DL__AVX2_NR 16
#define DL__AVX2_ROW(i) t = _mm256_broadcast_ss(a + i * rsa);                                    \
    c##i##_0 = _mm256_fmadd_ps(t, b0, c##i##_0); c##i##_1 = _mm256_fmadd_ps(t, b1, c##i##_1);
#define DL__AVX2_STORE(i) do {                                                            \
    float *ci = c + i * ldc;                                                             \
    if (beta == 0.0f) {                                                                  \
        _mm256_storeu_ps(ci, _mm256_mul_ps(c##i##_0, va));                               \
        _mm256_storeu_ps(ci + 8, _mm256_mul_ps(c##i##_1, va));                           \
    } else {                                                                             \
        _mm256_storeu_ps(ci, _mm256_fmadd_ps(c##i##_0, va, _mm256_mul_ps(vb, _mm256_loadu_ps(ci)))); \
        _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(c##i##_1, va, _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8)))); \
    } } while (0)
DL__TARGET("avx2,fma")
static void dl__ukr_avx2(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                         float *c, ptrdiff_t ldc, float alpha, float beta)
{
    __m256 c0_0 = _mm256_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
           c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0,
           c5_1 = c0_0;
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    int p;
    for (p = 0; p < DL__AVX2_MR; p++) { /* the C tile arrives while the k loop runs */
        _mm_prefetch((const char *)(c + p * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + p * ldc + 15), _MM_HINT_T0);
    }
    for (p = 0; p < k; p++, a += csa, b += sb) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), t;
        DL__AVX2_ROW(0) DL__AVX2_ROW(1) DL__AVX2_ROW(2)
        DL__AVX2_ROW(3) DL__AVX2_ROW(4) DL__AVX2_ROW(5)
    }
    DL__AVX2_STORE(0); DL__AVX2_STORE(1); DL__AVX2_STORE(2);
    DL__AVX2_STORE(3); DL__AVX2_STORE(4); DL__AVX2_STORE(5);
}

/* -- AVX-512 12x32: 24 zmm accumulators + 2 for the B row + 1 broadcast = 27 of 32.
      Per k step 2 loads + 12 broadcasts feed 24 FMAs, well under the load ports. */
#define DL__AVX512_MR 12
#define DL__AVX512_NR 32
#define DL__AVX512_ROW(i) t = _mm512_set1_ps(a[i * rsa]);                                        \
    c##i##_0 = _mm512_fmadd_ps(t, b0, c##i##_0); c##i##_1 = _mm512_fmadd_ps(t, b1, c##i##_1);
#define DL__AVX512_STORE(i) do {                                                          \
    float *ci = c + i * ldc;                                                             \
    if (beta == 0.0f) {                                                                  \
        _mm512_storeu_ps(ci, _mm512_mul_ps(c##i##_0, va));                               \
        _mm512_storeu_ps(ci + 16, _mm512_mul_ps(c##i##_1, va));                          \
    } else {                                                                             \
        _mm512_storeu_ps(ci, _mm512_fmadd_ps(c##i##_0, va, _mm512_mul_ps(vb, _mm512_loadu_ps(ci)))); \
        _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(c##i##_1, va, _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16)))); \
    } } while (0)
DL__TARGET("avx512f")
static void dl__ukr_avx512(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                           float *c, ptrdiff_t ldc, float alpha, float beta)
{
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
           c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0,
           c5_1 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0,
           c8_1 = c0_0, c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0,
           c11_1 = c0_0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    int p;
    for (p = 0; p < DL__AVX512_MR; p++) { /* the C tile arrives while the k loop runs */
        _mm_prefetch((const char *)(c + p * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + p * ldc + 31), _MM_HINT_T0);
    }
    for (p = 0; p < k; p++, a += csa, b += sb) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), t;
        DL__AVX512_ROW(0) DL__AVX512_ROW(1) DL__AVX512_ROW(2) DL__AVX512_ROW(3)
        DL__AVX512_ROW(4) DL__AVX512_ROW(5) DL__AVX512_ROW(6) DL__AVX512_ROW(7)
        DL__AVX512_ROW(8) DL__AVX512_ROW(9) DL__AVX512_ROW(10) DL__AVX512_ROW(11)
    }
    DL__AVX512_STORE(0); DL__AVX512_STORE(1); DL__AVX512_STORE(2); DL__AVX512_STORE(3);
    DL__AVX512_STORE(4); DL__AVX512_STORE(5); DL__AVX512_STORE(6); DL__AVX512_STORE(7);
    DL__AVX512_STORE(8); DL__AVX512_STORE(9); DL__AVX512_STORE(10); DL__AVX512_STORE(11);
}

/* -- AVX-512 edge tiles: any mr <= 12 rows and nr <= 32 columns, straight into C.
      Columns are covered by mask registers (masked loads never fault past the end of
      a row, so an unpacked B is read in place too), and the row count is rounded up
      to 4, 8 or 12, so a ragged tile costs about what it computes: (128,10,128) runs
      12x16 tiles instead of 12x32 through a local buffer, m = 32 runs 12+12+8 rows.
      The body is one always-inlined function; a constant R and V per instance lets
      the compiler drop the unused accumulators. */
#define DL__E512_ROW(i) if (R > i) { t = _mm512_set1_ps(a[i * rsa]);                      \
    c##i##_0 = _mm512_fmadd_ps(t, b0, c##i##_0);                                         \
    if (V > 1) c##i##_1 = _mm512_fmadd_ps(t, b1, c##i##_1); }
#define DL__E512_STORE1(ci, acc, mk) do {                                                 \
    if (beta == 0.0f) _mm512_mask_storeu_ps(ci, mk, _mm512_mul_ps(acc, va));              \
    else _mm512_mask_storeu_ps(ci, mk, _mm512_fmadd_ps(acc, va,                          \
                               _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk, ci))));      \
    } while (0)
#define DL__E512_STORE(i) if (R > i && mr > i) {                                          \
    DL__E512_STORE1(c + i * ldc, c##i##_0, m0);                                          \
    if (V > 1) DL__E512_STORE1(c + i * ldc + 16, c##i##_1, m1); }
#if defined(__GNUC__) || defined(__clang__)
#define DL__INLINE_ALWAYS static inline __attribute__((always_inline))
#else
#define DL__INLINE_ALWAYS static inline
#endif
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__edge512_body(const int R, const int V, int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                      const float *b, ptrdiff_t sb, float *c, ptrdiff_t ldc, float alpha,
                      float beta, int mr, __mmask16 m0, __mmask16 m1)
{
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
           c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0,
           c5_1 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0,
           c8_1 = c0_0, c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0,
           c11_1 = c0_0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    int p;
    for (p = 0; p < k; p++, a += csa, b += sb) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = b0, t;
        if (V > 1) b1 = _mm512_maskz_loadu_ps(m1, b + 16);
        DL__E512_ROW(0) DL__E512_ROW(1) DL__E512_ROW(2) DL__E512_ROW(3)
        DL__E512_ROW(4) DL__E512_ROW(5) DL__E512_ROW(6) DL__E512_ROW(7)
        DL__E512_ROW(8) DL__E512_ROW(9) DL__E512_ROW(10) DL__E512_ROW(11)
    }
    DL__E512_STORE(0) DL__E512_STORE(1) DL__E512_STORE(2) DL__E512_STORE(3)
    DL__E512_STORE(4) DL__E512_STORE(5) DL__E512_STORE(6) DL__E512_STORE(7)
    DL__E512_STORE(8) DL__E512_STORE(9) DL__E512_STORE(10) DL__E512_STORE(11)
}
#define DL__E512_INST(R, V)                                                               \
DL__TARGET("avx512f") static void dl__edge512_##R##x##V(int k, const float *a, ptrdiff_t rsa, \
    ptrdiff_t csa, const float *b, ptrdiff_t sb, float *c, ptrdiff_t ldc, float alpha,   \
    float beta, int mr, __mmask16 m0, __mmask16 m1)                                      \
{ dl__edge512_body(R, V, k, a, rsa, csa, b, sb, c, ldc, alpha, beta, mr, m0, m1); }
DL__E512_INST(4, 1) DL__E512_INST(8, 1) DL__E512_INST(12, 1)
DL__E512_INST(4, 2) DL__E512_INST(8, 2) DL__E512_INST(12, 2)

DL__TARGET("avx512f")
static void dl__edge_avx512(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                            ptrdiff_t sb, float *c, ptrdiff_t ldc, float alpha, float beta,
                            int mr, int nr)
{
    typedef void (*inst_fn)(int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            float *, ptrdiff_t, float, float, int, __mmask16, __mmask16);
    static const inst_fn inst[2][3] = {
        { dl__edge512_4x1, dl__edge512_8x1, dl__edge512_12x1 },
        { dl__edge512_4x2, dl__edge512_8x2, dl__edge512_12x2 } };
    int v = nr > 16;
    __mmask16 m0 = (__mmask16)(v ? 0xffffu : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(v ? (1u << (nr - 16)) - 1u : 0u);
    inst[v][(mr - 1) / 4](k, a, rsa, csa, b, sb, c, ldc, alpha, beta, mr, m0, m1);
}
#endif /* DL__X86 */

#ifdef DL__NEON
/* -- NEON 8x12: 24 q accumulators + 2 for A + 3 for the B row = 29 of 32. The A values
      are used in place with vfmaq_laneq_f32, so no broadcast instructions are needed. */
#define DL__NEON_MR 8
#define DL__NEON_NR 12
#define DL__NEON_ROW(i, av, l)                                                            \
    c##i##_0 = vfmaq_laneq_f32(c##i##_0, b0, av, l);                                     \
    c##i##_1 = vfmaq_laneq_f32(c##i##_1, b1, av, l);                                     \
    c##i##_2 = vfmaq_laneq_f32(c##i##_2, b2, av, l);
#define DL__NEON_STORE(i) do {                                                            \
    float *ci = c + i * ldc;                                                             \
    if (beta == 0.0f) {                                                                  \
        vst1q_f32(ci, vmulq_n_f32(c##i##_0, alpha));                                     \
        vst1q_f32(ci + 4, vmulq_n_f32(c##i##_1, alpha));                                 \
        vst1q_f32(ci + 8, vmulq_n_f32(c##i##_2, alpha));                                 \
    } else {                                                                             \
        vst1q_f32(ci, vfmaq_n_f32(vmulq_n_f32(vld1q_f32(ci), beta), c##i##_0, alpha));   \
        vst1q_f32(ci + 4, vfmaq_n_f32(vmulq_n_f32(vld1q_f32(ci + 4), beta), c##i##_1, alpha)); \
        vst1q_f32(ci + 8, vfmaq_n_f32(vmulq_n_f32(vld1q_f32(ci + 8), beta), c##i##_2, alpha)); \
    } } while (0)
static void dl__ukr_neon(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                         float *c, ptrdiff_t ldc, float alpha, float beta)
{
    float32x4_t c0_0 = vdupq_n_f32(0.0f), c0_1 = c0_0, c0_2 = c0_0, c1_0 = c0_0, c1_1 = c0_0,
                c1_2 = c0_0, c2_0 = c0_0, c2_1 = c0_0, c2_2 = c0_0, c3_0 = c0_0, c3_1 = c0_0,
                c3_2 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c4_2 = c0_0, c5_0 = c0_0, c5_1 = c0_0,
                c5_2 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c6_2 = c0_0, c7_0 = c0_0, c7_1 = c0_0,
                c7_2 = c0_0;
    int p;
    (void)rsa; /* a_rows = 0: A always comes packed or transposed (rows contiguous) */
    for (p = 0; p < k; p++, a += csa, b += sb) {
        float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
        DL__NEON_ROW(0, a0, 0) DL__NEON_ROW(1, a0, 1) DL__NEON_ROW(2, a0, 2) DL__NEON_ROW(3, a0, 3)
        DL__NEON_ROW(4, a1, 0) DL__NEON_ROW(5, a1, 1) DL__NEON_ROW(6, a1, 2) DL__NEON_ROW(7, a1, 3)
    }
    DL__NEON_STORE(0); DL__NEON_STORE(1); DL__NEON_STORE(2); DL__NEON_STORE(3);
    DL__NEON_STORE(4); DL__NEON_STORE(5); DL__NEON_STORE(6); DL__NEON_STORE(7);
}
#endif /* DL__NEON */

/* ==== 1.2 ISA table and block sizes ======================================================
   Loop nest (section 1.5), in the row-major view where A is broadcast and B is the vector
   operand:  for MC rows { for KC { pack A block; for NC cols { pack B block;
                 for MR rows { for NR cols { microkernel } } } } }
   - one A micro-panel (MR x KC) stays in L1 while the NR loop streams B micro-panels past
     it:  MR*KC*4 B <= ~L1/2  (leaves room for the streamed B and C lines);
   - the packed B block (KC x NC) stays in L2 and is reused by every A micro-panel:
     KC*NC*4 B <= ~L2/2;
   - the packed A block (MC x KC) is reused by every B block of the row band and lives
     in L3: MC*KC*4 B <= a few MiB (a core's fair share of a shared L3).
   Numbers for Zen 4 (L1d 32 KiB, L2 1 MiB per core, L3 32 MiB shared):
     avx512 12x32: KC = 16K/48 = 341 -> 320 (multiple of 16 for the loops), NC = 512K/1280
                   = 409 -> 384 (12 x NR), MC = 4M/1280 -> 3072 (256 x MR).
     avx2    6x16: KC = 16K/24 -> 512,  NC = 512K/2048 = 256,  MC = 4M/2048 -> 2046 (6 x 341).
   The table is fixed per ISA rather than read from sysconf/cpuid at run time: KC sets
   the summation order, so a fixed table makes an ISA give the same bits on every
   machine; cache sizes inside one ISA class vary little (32-48 KiB L1d, 1-2 MiB L2);
   and VMs/containers often report missing or host-wide cache sizes. */
enum { DL__ISA_SCALAR, DL__ISA_AVX2, DL__ISA_AVX512, DL__ISA_NEON, DL__ISA_COUNT };

typedef struct {
    const char *name;
    int mr, nr, kc, nc, mc;
    int a_rows;      /* kernel accepts a row stride for A (reads row-major A in place) */
    dl__ukr_fn ukr;  /* NULL: not compiled into this build */
    /* optional: any mr <= MR x nr <= NR tile straight into C, reading only nr columns
       of B (so a ragged B panel need not be packed); NULL: edges go through a tile */
    void (*edge)(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                 float *c, ptrdiff_t ldc, float alpha, float beta, int mr, int nr);
} dl__isa_desc;

#define DL__MAX_MR 12
#define DL__MAX_NR 32

static const dl__isa_desc dl__isa_table[DL__ISA_COUNT] = {
    /* scalar 4x8: L1 panel 4*256*4 = 4 KiB, B block 256x256 = 256 KiB */
    { "scalar", DL__SC_MR, DL__SC_NR, 256, 256, 1024, 1, dl__ukr_scalar, NULL },
#ifdef DL__X86
    { "avx2", DL__AVX2_MR, DL__AVX2_NR, 512, 256, 2046, 1, dl__ukr_avx2, NULL },
    /* Zen 4 (L1d 32 KiB, L2 1 MiB per core): KC = 512 keeps the 12 x KC A micro-panel
       (24 KiB) in L1 across the row of tiles, NC = 256 makes the KC x NC B block 512 KiB,
       half of L2; MC = 3072 (6 MiB of packed A) streams from L3. Best-of-3 interleaved
       sweep vs OpenBLAS on 1024^3/2048^3 (KC 256..512, NC 192..768, MC 192..3072): 512/256
       ~1-2% ahead of 320/384 (inside the noise), MC = 192 or NC = 192 5-25% behind;
       the MLP shapes did not move. */
    { "avx512", DL__AVX512_MR, DL__AVX512_NR, 512, 256, 3072, 1, dl__ukr_avx512, dl__edge_avx512 },
#else
    { "avx2", 6, 16, 512, 256, 2046, 1, NULL, NULL },
    { "avx512", 12, 32, 320, 384, 3072, 1, NULL, NULL },
#endif
#ifdef DL__NEON
    /* AArch64 servers/phones (L1d 32-64 KiB, L2 1 MiB on Neoverse N1/V1): KC = 16K/32
       = 512 (the 8 x KC A panel is 16 KiB, half of the smaller L1), NC = 512K/2048 = 256
       -> 240 (20 x NR); MC = 1024 (2 MiB packed A, inside a cluster's L3/SLC). */
    { "neon", DL__NEON_MR, DL__NEON_NR, 512, 240, 1024, 0, dl__ukr_neon, NULL },
#else
    { "neon", 8, 12, 512, 240, 1024, 0, NULL, NULL },
#endif
};

/* ==== 1.3 Dispatch and lazy initialisation ===============================================
   One-time init (CPU features, $DLCORE_ISA, $DLCORE_THREADS, the pool) runs on the first
   call of any public kernel function; with threads it is guarded by pthread_once /
   InitOnceExecuteOnce, so racing first calls are safe. */
static int dl__isa_cur = DL__ISA_SCALAR;
static int dl__isa_have[DL__ISA_COUNT];
static int dl__nthreads = 1;
#define DL__MAX_THREADS 64

/* What this CPU and this build can run. */
static void dl__detect_cpu(void)
{
    dl__isa_have[DL__ISA_SCALAR] = 1;
#ifdef DL__X86
    __builtin_cpu_init();
    dl__isa_have[DL__ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    dl__isa_have[DL__ISA_AVX512] = __builtin_cpu_supports("avx512f");
#endif
#ifdef DL__NEON
    dl__isa_have[DL__ISA_NEON] = 1;
#endif
}

static int dl__best_isa(void)
{
    if (dl__isa_have[DL__ISA_AVX512]) return DL__ISA_AVX512;
    if (dl__isa_have[DL__ISA_AVX2]) return DL__ISA_AVX2;
    if (dl__isa_have[DL__ISA_NEON]) return DL__ISA_NEON;
    return DL__ISA_SCALAR;
}

/* Index of an ISA name, or -1. */
static int dl__isa_lookup(const char *name)
{
    int i;
    for (i = 0; i < DL__ISA_COUNT; i++)
        if (strcmp(name, dl__isa_table[i].name) == 0) return i;
    return -1;
}

static void dl__pool_resize(int nthreads);

static void dl__init_once(void)
{
    const char *e;
    dl__detect_cpu();
    dl__isa_cur = dl__best_isa();
    e = getenv("DLCORE_ISA");
    if (e && *e && strcmp(e, "auto") != 0) {
        int i = dl__isa_lookup(e);
        if (i >= 0 && dl__isa_have[i]) dl__isa_cur = i;
        else fprintf(stderr, "dlcore: DLCORE_ISA=%s is %s; using %s\n", e,
                     i < 0 ? "unknown (scalar|avx2|avx512|neon)" : "not supported here",
                     dl__isa_table[dl__isa_cur].name);
    }
    /* All cores unless told otherwise, as PyTorch does; GEMMs below the threading
       threshold stay on the calling thread anyway. Results are bit-identical for
       a given thread count, and equal within rounding across thread counts. */
    e = getenv("DLCORE_THREADS");
    if (e && *e) {
        char *end;
        long n = strtol(e, &end, 10);
        if (*end || n < 0 || n > DL__MAX_THREADS) {
            fprintf(stderr, "dlcore: DLCORE_THREADS=%s is not a count in 0..%d; using all cores\n", e, DL__MAX_THREADS);
            n = 0;
        }
        dl__pool_resize((int)n);
    } else {
        dl__pool_resize(0);
    }
}

/* ==== 1.4 Thread pool ======================================================================
   A persistent pool of (threads - 1) workers; the calling thread runs tasks too. A job is
   posted under one mutex, workers pull task indices until none are left, and the caller
   waits for all of them. Which thread runs a task never changes the result: tasks write
   disjoint parts of the output and each uses its own thread's workspace. A second
   dl__parallel_for while one is running (another user thread, or nested) runs inline. */

/* Per-thread grow-only packing workspace. */
static DL__THREAD_LOCAL char *dl__ws_raw;
static DL__THREAD_LOCAL size_t dl__ws_cap;

static void dl__ws_free(void)
{
    if (dl__ws_raw) DLCORE_FREE(dl__ws_raw);
    dl__ws_raw = NULL;
    dl__ws_cap = 0;
}

/* At least `floats` floats, 64-byte aligned; NULL if the allocator fails. */
static float *dl__ws_get(size_t floats)
{
    size_t bytes = floats * sizeof(float) + 64;
    if (bytes > dl__ws_cap) {
        char *p = (char *)DLCORE_MALLOC(bytes);
        if (!p) return NULL;
        dl__ws_free();
        dl__ws_raw = p;
        dl__ws_cap = bytes;
    }
    return (float *)(void *)(dl__ws_raw + ((64 - ((uintptr_t)dl__ws_raw & 63)) & 63));
}

#ifdef DLCORE_NO_THREADS
static int dl__init_done;
static void dl__init(void) { if (!dl__init_done) { dl__init_done = 1; dl__init_once(); } }
static void dl__pool_resize(int nthreads) { (void)nthreads; dl__nthreads = 1; }
static void dl__pool_stop(void) {}
DL__UNUSED static void dl__parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx)
{
    int t;
    for (t = 0; t < n_tasks; t++) fn(ctx, t);
}
#else
#ifdef _WIN32
typedef CRITICAL_SECTION dl__mutex;
typedef CONDITION_VARIABLE dl__cond;
typedef HANDLE dl__thread;
static void dl__mutex_init(dl__mutex *m) { InitializeCriticalSection(m); }
static void dl__lock(dl__mutex *m) { EnterCriticalSection(m); }
static int dl__trylock(dl__mutex *m) { return TryEnterCriticalSection(m) ? 0 : 1; }
static void dl__unlock(dl__mutex *m) { LeaveCriticalSection(m); }
static void dl__cond_init(dl__cond *c) { InitializeConditionVariable(c); }
static void dl__cond_wait(dl__cond *c, dl__mutex *m) { SleepConditionVariableCS(c, m, INFINITE); }
static void dl__cond_broadcast(dl__cond *c) { WakeAllConditionVariable(c); }
static int dl__num_cpus(void) { SYSTEM_INFO si; GetSystemInfo(&si); return (int)si.dwNumberOfProcessors; }
#else
typedef pthread_mutex_t dl__mutex;
typedef pthread_cond_t dl__cond;
typedef pthread_t dl__thread;
static void dl__mutex_init(dl__mutex *m) { pthread_mutex_init(m, NULL); }
static void dl__lock(dl__mutex *m) { pthread_mutex_lock(m); }
static int dl__trylock(dl__mutex *m) { return pthread_mutex_trylock(m); }
static void dl__unlock(dl__mutex *m) { pthread_mutex_unlock(m); }
static void dl__cond_init(dl__cond *c) { pthread_cond_init(c, NULL); }
static void dl__cond_wait(dl__cond *c, dl__mutex *m) { pthread_cond_wait(c, m); }
static void dl__cond_broadcast(dl__cond *c) { pthread_cond_broadcast(c); }
static int dl__num_cpus(void) { long n = sysconf(_SC_NPROCESSORS_ONLN); return n > 0 ? (int)n : 1; }
#endif

static struct {
    dl__thread th[DL__MAX_THREADS];
    int nworkers, stop, n_tasks, next, running;
    unsigned gen;
    void (*fn)(void *ctx, int task);
    void *ctx;
    dl__mutex mu;   /* guards everything below it in time: job fields, gen, counters */
    dl__mutex busy; /* held by the one dl__parallel_for (or resize) using the pool */
    dl__cond wake, done;
} dl__pool;

/* Runs tasks of the current job until none are left; called with mu held. */
static void dl__pool_drain(void)
{
    while (dl__pool.next < dl__pool.n_tasks) {
        int t = dl__pool.next++;
        dl__unlock(&dl__pool.mu);
        dl__pool.fn(dl__pool.ctx, t);
        dl__lock(&dl__pool.mu);
    }
}

/* Worker loop; `seen` starts at the job generation current when it was created. */
static void dl__worker_loop(unsigned seen)
{
    dl__lock(&dl__pool.mu);
    for (;;) {
        while (dl__pool.gen == seen && !dl__pool.stop) dl__cond_wait(&dl__pool.wake, &dl__pool.mu);
        if (dl__pool.stop) break;
        seen = dl__pool.gen;
        dl__pool_drain();
        if (--dl__pool.running == 0) dl__cond_broadcast(&dl__pool.done);
    }
    dl__unlock(&dl__pool.mu);
    dl__ws_free();
}

#ifdef _WIN32
static DWORD WINAPI dl__worker_main(LPVOID arg) { dl__worker_loop((unsigned)(uintptr_t)arg); return 0; }
static int dl__thread_start(dl__thread *t, unsigned gen)
{
    *t = CreateThread(NULL, 0, dl__worker_main, (LPVOID)(uintptr_t)gen, 0, NULL, NULL);
    return *t != NULL;
}
static void dl__thread_join(dl__thread t) { WaitForSingleObject(t, INFINITE); CloseHandle(t); }
static INIT_ONCE dl__once = INIT_ONCE_STATIC_INIT;
static BOOL CALLBACK dl__init_once_cb(PINIT_ONCE o, PVOID p, PVOID *c)
{
    (void)o; (void)p; (void)c;
    dl__mutex_init(&dl__pool.mu); dl__mutex_init(&dl__pool.busy);
    dl__cond_init(&dl__pool.wake); dl__cond_init(&dl__pool.done);
    dl__init_once();
    return TRUE;
}
static void dl__init(void) { InitOnceExecuteOnce(&dl__once, dl__init_once_cb, NULL, NULL); }
#else
static void *dl__worker_main(void *arg) { dl__worker_loop((unsigned)(uintptr_t)arg); return NULL; }
static int dl__thread_start(dl__thread *t, unsigned gen)
{
    return pthread_create(t, NULL, dl__worker_main, (void *)(uintptr_t)gen) == 0;
}
static void dl__thread_join(dl__thread t) { pthread_join(t, NULL); }
static pthread_once_t dl__once = PTHREAD_ONCE_INIT;
static void dl__init_once_cb(void)
{
    dl__mutex_init(&dl__pool.mu); dl__mutex_init(&dl__pool.busy);
    dl__cond_init(&dl__pool.wake); dl__cond_init(&dl__pool.done);
    dl__init_once();
}
static void dl__init(void) { pthread_once(&dl__once, dl__init_once_cb); }
#endif

/* Joins all workers; caller holds busy (or is the one-time init). */
static void dl__pool_stop_locked(void)
{
    int i;
    dl__lock(&dl__pool.mu);
    dl__pool.stop = 1;
    dl__cond_broadcast(&dl__pool.wake);
    dl__unlock(&dl__pool.mu);
    for (i = 0; i < dl__pool.nworkers; i++) dl__thread_join(dl__pool.th[i]);
    dl__pool.nworkers = 0;
    dl__pool.stop = 0;
    dl__nthreads = 1;
}

/* Restarts the pool with nthreads - 1 workers (0 = all cores). */
static void dl__pool_resize(int nthreads)
{
    int i;
    if (nthreads == 0) nthreads = dl__num_cpus();
    if (nthreads > DL__MAX_THREADS) nthreads = DL__MAX_THREADS;
    if (nthreads < 1) nthreads = 1;
    dl__lock(&dl__pool.busy);
    if (nthreads != dl__nthreads) {
        dl__pool_stop_locked();
        for (i = 0; i < nthreads - 1; i++) {
            if (!dl__thread_start(&dl__pool.th[i], dl__pool.gen)) break;
            dl__pool.nworkers++;
        }
        dl__nthreads = 1 + dl__pool.nworkers;
    }
    dl__unlock(&dl__pool.busy);
}

static void dl__pool_stop(void)
{
    dl__lock(&dl__pool.busy);
    dl__pool_stop_locked();
    dl__unlock(&dl__pool.busy);
}

/* Runs fn(ctx, 0..n_tasks-1) over the pool and returns when all are done. Inline when
   there is one thread or one task, or when the pool is already in use. */
DL__UNUSED static void dl__parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx)
{
    int t;
    dl__init();
    if (n_tasks <= 1 || dl__nthreads <= 1 || dl__trylock(&dl__pool.busy) != 0) {
        for (t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    if (dl__pool.nworkers == 0) { /* resized to 1 meanwhile */
        dl__unlock(&dl__pool.busy);
        for (t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    dl__lock(&dl__pool.mu);
    dl__pool.fn = fn;
    dl__pool.ctx = ctx;
    dl__pool.n_tasks = n_tasks;
    dl__pool.next = 0;
    dl__pool.running = dl__pool.nworkers;
    dl__pool.gen++;
    dl__cond_broadcast(&dl__pool.wake);
    dl__pool_drain();
    while (dl__pool.running > 0) dl__cond_wait(&dl__pool.done, &dl__pool.mu);
    dl__unlock(&dl__pool.mu);
    dl__unlock(&dl__pool.busy);
}
#endif /* DLCORE_NO_THREADS */

/* ==== 1.5 Packing ===========================================================================
   Packing copies a block of op(A) into MR-row micro-panels (A(i,p) at p*MR + i) and of
   op(B) into NR-column micro-panels (B(p,j) at p*NR + j), zero-padding the last panel,
   so the microkernel sees one layout whatever the transposes and edges. */

/* dst[p*w + r] = src[r*ld + p] for r < rows, p < kc; rows rows..w-1 are left alone. The
   transposing copy is the expensive one (row-major A, transposed B); on x86 it moves
   4x4 blocks through SSE registers (baseline x86-64, no target needed). */
static void dl__pack_transpose_rows(const float *src, ptrdiff_t ld, int rows, int kc, int w, float *dst)
{
    int r = 0, p;
#ifdef DL__X86
    for (; r + 4 <= rows; r += 4) {
        const float *s0 = src + r * ld, *s1 = s0 + ld, *s2 = s1 + ld, *s3 = s2 + ld;
        float *d = dst + r;
        for (p = 0; p + 4 <= kc; p += 4, d += 4 * w) {
            __m128 x0 = _mm_loadu_ps(s0 + p), x1 = _mm_loadu_ps(s1 + p);
            __m128 x2 = _mm_loadu_ps(s2 + p), x3 = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
            _mm_storeu_ps(d, x0);
            _mm_storeu_ps(d + w, x1);
            _mm_storeu_ps(d + 2 * w, x2);
            _mm_storeu_ps(d + 3 * w, x3);
        }
        for (; p < kc; p++, d += w) { d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p]; }
    }
#endif
    for (; r < rows; r++) {
        const float *sr = src + r * ld;
        for (p = 0; p < kc; p++) dst[(ptrdiff_t)p * w + r] = sr[p];
    }
}

/* The same with rows rows..w-1 zero (a micro-panel's padding). */
static void dl__pack_transpose(const float *src, ptrdiff_t ld, int rows, int kc, int w, float *dst)
{
    int r, p;
    dl__pack_transpose_rows(src, ld, rows, kc, w, dst);
    for (r = rows; r < w; r++)
        for (p = 0; p < kc; p++) dst[(ptrdiff_t)p * w + r] = 0.0f;
}

/* op(A) block of mc x kc at `a` (A(i,p) = ta ? a[p*lda+i] : a[i*lda+p]). */
static void dl__pack_a(int ta, const float *a, ptrdiff_t lda, int mc, int kc, int mr, float *dst)
{
    int i0, i, p;
    for (i0 = 0; i0 < mc; i0 += mr, dst += (ptrdiff_t)mr * kc) {
        int rows = mc - i0 < mr ? mc - i0 : mr;
        if (ta) {
            const float *src = a + i0;
            for (p = 0; p < kc; p++, src += lda) {
                float *d = dst + (ptrdiff_t)p * mr;
                for (i = 0; i < rows; i++) d[i] = src[i];
                for (; i < mr; i++) d[i] = 0.0f;
            }
        } else {
            dl__pack_transpose(a + (ptrdiff_t)i0 * lda, lda, rows, kc, mr, dst);
        }
    }
}

/* op(B) block of kc x nc at `b` (B(p,j) = tb ? b[j*ldb+p] : b[p*ldb+j]). */
static void dl__pack_b(int tb, const float *b, ptrdiff_t ldb, int kc, int nc, int nr, float *dst)
{
    int j0, j, p;
    for (j0 = 0; j0 < nc; j0 += nr, dst += (ptrdiff_t)nr * kc) {
        int cols = nc - j0 < nr ? nc - j0 : nr;
        if (!tb) {
            const float *src = b + j0;
            for (p = 0; p < kc; p++, src += ldb) {
                float *d = dst + (ptrdiff_t)p * nr;
                for (j = 0; j < cols; j++) d[j] = src[j];
                for (; j < nr; j++) d[j] = 0.0f;
            }
        } else {
            dl__pack_transpose(b + (ptrdiff_t)j0 * ldb, ldb, cols, kc, nr, dst);
        }
    }
}

/* ==== 1.6 Macro loops =======================================================================
   dl__gemm_block computes one rectangle of C with the loop nest of section 1.2. The
   small-shape path: when op(A) is A^T (or op(B) is B) the full micro-panels are already
   in the kernel's layout, so they are read in place and only the ragged last panel is
   packed; for the small MLP shapes, where a block is used by few tiles, this saves the
   copy. Every C element is summed in the same KC order whatever the rectangle, so
   results do not depend on how the work is split across threads. */
#define DL__DIRECT_MAX_N 512
#define DL__DIRECT_MAX_M 256
typedef struct {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    ptrdiff_t lda, ldb, ldc;
    const dl__isa_desc *isa;
    int split_n, n_tasks, chunk;
} dl__gemm_job;

/* Read A / B in place? Only for small shapes: there a packed block is reused by few
   tiles, so the copy is a visible share of the time; for big ones packing wins (no L1
   set conflicts from power-of-two strides, no TLB misses). A row-major A needs a kernel
   that takes a row stride (d->a_rows). */
static int dl__direct_ok_a(const dl__gemm_job *g)
{
    return g->n <= DL__DIRECT_MAX_N && (g->ta || g->isa->a_rows);
}
static int dl__direct_ok_b(const dl__gemm_job *g) { return !g->tb && g->m <= DL__DIRECT_MAX_M; }

/* C[m0:m1, n0:n1] of the job. */
static void dl__gemm_block(const dl__gemm_job *g, int m0, int m1, int n0, int n1)
{
    const dl__isa_desc *d = g->isa;
    const int MR = d->mr, NR = d->nr;
    const int KC = d->kc, NC = d->nc, MC = d->mc;
    int m = m1 - m0, n = n1 - n0, k = g->k;
    int mcap = m < MC ? m : MC, ncap = n < NC ? n : NC, kcap = k < KC ? k : KC;
    int direct_a = dl__direct_ok_a(g), direct_b = dl__direct_ok_b(g);
    size_t a_sz = (size_t)((mcap + MR - 1) / MR) * MR * kcap;
    size_t b_sz = (size_t)((ncap + NR - 1) / NR) * NR * kcap;
    float *abuf = dl__ws_get(a_sz + b_sz), *bbuf;
    float tile[DL__MAX_MR * DL__MAX_NR];
    int ic, pc, jc, ir, jr;
    DLCORE_ASSERT(abuf != NULL);
    if (!abuf) return;
    bbuf = abuf + a_sz;
    for (ic = m0; ic < m1; ic += MC) {
        int mc = m1 - ic < MC ? m1 - ic : MC;
        for (pc = 0; pc < k; pc += KC) {
            int kc = k - pc < KC ? k - pc : KC;
            float beta = pc == 0 ? g->beta : 1.0f;
            const float *ablk = g->ta ? g->a + (ptrdiff_t)pc * g->lda + ic
                                      : g->a + (ptrdiff_t)ic * g->lda + pc;
            int mfull = direct_a ? mc / MR * MR : 0;
            /* direct: only the ragged panel is packed, at the start of abuf */
            dl__pack_a(g->ta, direct_a ? (g->ta ? ablk + mfull : ablk + (ptrdiff_t)mfull * g->lda) : ablk,
                       g->lda, mc - mfull, kc, MR, abuf);
            for (jc = n0; jc < n1; jc += NC) {
                int nc = n1 - jc < NC ? n1 - jc : NC;
                const float *bblk = g->tb ? g->b + (ptrdiff_t)jc * g->ldb + pc
                                          : g->b + (ptrdiff_t)pc * g->ldb + jc;
                int nfull = direct_b ? (d->edge ? nc : nc / NR * NR) : 0;
                dl__pack_b(g->tb, direct_b ? (g->tb ? bblk + (ptrdiff_t)nfull * g->ldb : bblk + nfull) : bblk,
                           g->ldb, kc, nc - nfull, NR, bbuf);
                for (ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    const float *ap;
                    ptrdiff_t rsa = 1, csa = MR;
                    if (ir >= mfull) ap = abuf + (ptrdiff_t)(ir - mfull) * kc;
                    else if (g->ta) { ap = ablk + ir; csa = g->lda; }
                    else { ap = ablk + (ptrdiff_t)ir * g->lda; rsa = g->lda; csa = 1; }
                    for (jr = 0; jr < nc; jr += NR) {
                        int nr = nc - jr < NR ? nc - jr : NR;
                        const float *bp;
                        ptrdiff_t sb;
                        float *cp = g->c + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr;
                        if (jr < nfull) { bp = bblk + jr; sb = g->ldb; }
                        else { bp = bbuf + (ptrdiff_t)(jr - nfull) * kc; sb = NR; }
                        if (DL__LIKELY(mr == MR && nr == NR)) {
                            d->ukr(kc, ap, rsa, csa, bp, sb, cp, g->ldc, g->alpha, beta);
                        } else if (d->edge) {
                            d->edge(kc, ap, rsa, csa, bp, sb, cp, g->ldc, g->alpha, beta, mr, nr);
                        } else {
                            int i, j;
                            d->ukr(kc, ap, rsa, csa, bp, sb, tile, NR, 1.0f, 0.0f);
                            for (i = 0; i < mr; i++) {
                                float *ci = cp + (ptrdiff_t)i * g->ldc;
                                const float *ti = tile + i * NR;
                                if (beta == 0.0f) for (j = 0; j < nr; j++) ci[j] = g->alpha * ti[j];
                                else for (j = 0; j < nr; j++) ci[j] = g->alpha * ti[j] + beta * ci[j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/* ---- Small-N path (AVX-512): C^T tiles, vectorised over M ------------------------------
   With n <= 16 the regular 12x32 tiles leave most of every B vector empty ((128,10,128)
   uses 10 of 16 lanes) and pay 12 broadcasts per k step. Here the vector runs down M:
   one zmm holds 16 rows of one C column, so a k step costs 1-2 loads of A^T, n broadcasts
   of B(p, j) and n or 2n FMAs on full vectors. A^T is what a transposed A already is; a
   row-major A is transposed 32 rows x 128 steps at a time into the workspace (the chunk
   then sits in L1; the transpose is ~30% of the (128,10,128) time, so n <= 12 only).
   The C^T tile goes back row-major through a 16x16 in-register transpose and masked
   stores. Used below the threading threshold only, so which path runs depends on the
   shape alone. Single thread, Zen 4, ratio to OpenBLAS: (128,10,128) NN 0.84 -> 0.98,
   (32,10,128) NN 0.76 -> 1.04, (128,10,32) TN 0.81 -> 1.37. Tried and dropped: the
   pack as 8x8 ymm transposes (1.1x slower), k chunks of 16-64 (no overlap gained). */
#ifdef DL__X86
/* g++ 12 at -O2 reports the _mm512_undefined_ps() inside the shuffle intrinsics as
   "may be used uninitialized" (a false positive in its own header; the masked forms
   that avoid it ran 1.25x slower). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/* Transposing a row-major A costs about what 3-4 columns of product do (256x256: 6 us of
   pack vs 20-26 us), so with op(A) = A only n <= 12 gains over 12x16 tiles that use
   n/16 of each vector ((256,n,256) NN: n = 12 1.04x, n = 14 0.93x, n = 16 0.85x); A^T
   is read in place and wins up to 16 (n = 16 TN 1.10x). */
#define DL__SN_MAX_N 16
#define DL__SN_MAX_N_PACKED 12

/* r[i] lane j  <->  r[j] lane i. Written out with constant indices (no loops) so the
   arrays live in registers after inlining. */
#define DL__TR_UNPK(i) t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);                            \
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
#define DL__UNPD(f, x, y)                                                                  \
    _mm512_castpd_ps(f(_mm512_castps_pd(x), _mm512_castps_pd(y)))
#define DL__TR_UNPD(i) /* u[i + c]: rows i..i+3, column 4L + c in lane L */               \
    u[i] = DL__UNPD(_mm512_unpacklo_pd, t[i], t[i + 2]);                             \
    u[i + 1] = DL__UNPD(_mm512_unpackhi_pd, t[i], t[i + 2]);                         \
    u[i + 2] = DL__UNPD(_mm512_unpacklo_pd, t[i + 1], t[i + 3]);                     \
    u[i + 3] = DL__UNPD(_mm512_unpackhi_pd, t[i + 1], t[i + 3]);
#define DL__SHUF4(x, y, imm) _mm512_shuffle_f32x4(x, y, imm)
#define DL__TR_LANES(c) {                                                                  \
    __m512 vl = DL__SHUF4(u[c], u[4 + c], 0x44), vh = DL__SHUF4(u[c], u[4 + c], 0xEE);     \
    __m512 wl = DL__SHUF4(u[8 + c], u[12 + c], 0x44), wh = DL__SHUF4(u[8 + c], u[12 + c], 0xEE); \
    r[c] = DL__SHUF4(vl, wl, 0x88); r[4 + c] = DL__SHUF4(vl, wl, 0xDD);                   \
    r[8 + c] = DL__SHUF4(vh, wh, 0x88); r[12 + c] = DL__SHUF4(vh, wh, 0xDD); }
DL__TARGET("avx512f") DL__INLINE_ALWAYS void dl__tr16_avx512(__m512 *r)
{
    __m512 t[16], u[16];
    DL__TR_UNPK(0) DL__TR_UNPK(2) DL__TR_UNPK(4) DL__TR_UNPK(6)
    DL__TR_UNPK(8) DL__TR_UNPK(10) DL__TR_UNPK(12) DL__TR_UNPK(14)
    DL__TR_UNPD(0) DL__TR_UNPD(4) DL__TR_UNPD(8) DL__TR_UNPD(12)
    DL__TR_LANES(0) DL__TR_LANES(1) DL__TR_LANES(2) DL__TR_LANES(3)
}
#define DL__X16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)    \
    M(12) M(13) M(14) M(15)

/* dst[p*w + r] = src[r*ld + p] for r < 16*h, p < kc (w = 16*h, h = 1 or 2; all rows
   present): the row-major A panel turned into A^T, 16x16 blocks through registers. */
#define DL__PK_LD(q) r[q] = _mm512_loadu_ps(s + q * ld);
#define DL__PK_ST(q) _mm512_storeu_ps(d + q * w, r[q]);
DL__TARGET("avx512f")
static void dl__pack_at_avx512(const float *src, ptrdiff_t ld, int h, int kc, float *dst)
{
    const ptrdiff_t w = 16 * h;
    int p = 0, hh;
    /* With a row stride that is a multiple of 64 bytes all rows share one alignment:
       peel to a line boundary, so each load takes one whole cache line. Otherwise the
       half lines left for the next block are gone by then when ld is a power of two
       (all 16 rows fall into one L1 set): (128,10,1024) ran 1.5x slower. */
    if ((ld & 15) == 0) {
        p = (int)((16 - (((uintptr_t)src >> 2) & 15)) & 15);
        if (p > kc) p = kc;
        if (p) dl__pack_transpose(src, ld, (int)w, p, (int)w, dst);
    }
    for (; p + 16 <= kc; p += 16)
        for (hh = 0; hh < h; hh++) {
            __m512 r[16];
            const float *s = src + (ptrdiff_t)16 * hh * ld + p;
            float *d = dst + (ptrdiff_t)p * w + 16 * hh;
            DL__X16(DL__PK_LD)
            dl__tr16_avx512(r);
            DL__X16(DL__PK_ST)
        }
    if (p < kc) dl__pack_transpose(src + p, ld, (int)w, kc - p, (int)w, dst + (ptrdiff_t)p * w);
}

#define DL__SN_COL(j) if (NJ > j) { t = _mm512_set1_ps(b[j]);                              \
    c##j##_0 = _mm512_fmadd_ps(a0, t, c##j##_0);                                         \
    if (H > 1) c##j##_1 = _mm512_fmadd_ps(a1, t, c##j##_1); }
#define DL__SN_GET(j, hh) r[j] = NJ > j ? (hh ? c##j##_1 : c##j##_0) : z;
#define DL__SN_ST(q) if (q < nq) {                                                         \
    float *cq = c + (ptrdiff_t)(16 * hh + q) * ldc;                                       \
    if (beta == 0.0f) _mm512_mask_storeu_ps(cq, mc, _mm512_mul_ps(r[q], va));              \
    else _mm512_mask_storeu_ps(cq, mc, _mm512_fmadd_ps(r[q], va,                          \
                               _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mc, cq)))); }

/* Row-major A panel (rows x kc at src) to A^T in dst with row stride 16*h; the lanes
   past `rows` are not written (the kernel masks them off). */
DL__TARGET("avx512f")
static void dl__sn_pack(const float *src, ptrdiff_t ld, int rows, int h, int kc, float *dst)
{
    if (rows == 16 * h) dl__pack_at_avx512(src, ld, h, kc, dst);
    else dl__pack_transpose_rows(src, ld, rows, kc, 16 * h, dst);
}

/* Packed chunk of k: 32 rows x 128 floats = 16 KiB, half of L1, so the panel is still
   there when the k loop reads it. */
#define DL__SN_KC 128

/* C[r][j] for r < rows (<= 16*H), j < NJ and B(p,j) = b[p*sbp + j]. lda == 0: A(r,p) =
   a[p*sa + r]; lda != 0: A(r,p) = a[r*lda + p], transposed DL__SN_KC steps at a time
   into ws. Lanes past rows are masked off by ma0/ma1 either way. */
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__sn512_body(const int NJ, const int H, int k, const float *a, ptrdiff_t sa,
                    ptrdiff_t lda, float *ws, __mmask16 ma0, __mmask16 ma1, const float *b,
                    ptrdiff_t sbp, float *c, ptrdiff_t ldc, float alpha, float beta, int rows)
{
    __m512 z = _mm512_setzero_ps();
    __m512 c0_0 = z, c0_1 = z, c1_0 = z, c1_1 = z, c2_0 = z, c2_1 = z, c3_0 = z, c3_1 = z,
           c4_0 = z, c4_1 = z, c5_0 = z, c5_1 = z, c6_0 = z, c6_1 = z, c7_0 = z, c7_1 = z,
           c8_0 = z, c8_1 = z, c9_0 = z, c9_1 = z, c10_0 = z, c10_1 = z, c11_0 = z,
           c11_1 = z, c12_0 = z, c12_1 = z, c13_0 = z, c13_1 = z, c14_0 = z, c14_1 = z,
           c15_0 = z, c15_1 = z;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 mc = (__mmask16)((1u << NJ) - 1u);
    int p, p0, hh;
    /* the chunks after the first start on a cache line of A (see dl__pack_at_avx512) */
    int kc1 = DL__SN_KC - (lda ? (int)(((uintptr_t)a >> 2) & 15) : 0);
    for (p0 = 0; p0 < k; p0 += kc1, kc1 = DL__SN_KC) {
        int kc = k - p0 < kc1 ? k - p0 : kc1;
        const float *ap = a + p0 * sa;
        ptrdiff_t s = sa;
        if (lda) { dl__sn_pack(a + p0, lda, rows, H, kc, ws); ap = ws; s = 16 * H; }
        for (p = 0; p < kc; p++, ap += s, b += sbp) {
            __m512 a0 = _mm512_maskz_loadu_ps(ma0, ap), a1 = a0, t;
            if (H > 1) a1 = _mm512_maskz_loadu_ps(ma1, ap + 16);
            DL__SN_COL(0) DL__SN_COL(1) DL__SN_COL(2) DL__SN_COL(3)
            DL__SN_COL(4) DL__SN_COL(5) DL__SN_COL(6) DL__SN_COL(7)
            DL__SN_COL(8) DL__SN_COL(9) DL__SN_COL(10) DL__SN_COL(11)
            DL__SN_COL(12) DL__SN_COL(13) DL__SN_COL(14) DL__SN_COL(15)
        }
    }
    for (hh = 0; hh < H; hh++) {
        __m512 r[16];
        int nq = rows - 16 * hh < 16 ? rows - 16 * hh : 16;
        DL__SN_GET(0, hh) DL__SN_GET(1, hh) DL__SN_GET(2, hh) DL__SN_GET(3, hh)
        DL__SN_GET(4, hh) DL__SN_GET(5, hh) DL__SN_GET(6, hh) DL__SN_GET(7, hh)
        DL__SN_GET(8, hh) DL__SN_GET(9, hh) DL__SN_GET(10, hh) DL__SN_GET(11, hh)
        DL__SN_GET(12, hh) DL__SN_GET(13, hh) DL__SN_GET(14, hh) DL__SN_GET(15, hh)
        dl__tr16_avx512(r);
        DL__X16(DL__SN_ST)
    }
}
typedef void (*dl__sn512_fn)(int, const float *, ptrdiff_t, ptrdiff_t, float *, __mmask16, __mmask16,
                             const float *, ptrdiff_t, float *, ptrdiff_t, float, float, int);
#define DL__SN_INST(NJ, H)                                                                \
DL__TARGET("avx512f") static void dl__sn512_##NJ##_##H(int k, const float *a, ptrdiff_t sa, \
    ptrdiff_t lda, float *ws, __mmask16 ma0, __mmask16 ma1, const float *b, ptrdiff_t sbp, \
    float *c, ptrdiff_t ldc, float alpha, float beta, int rows)                          \
{ dl__sn512_body(NJ, H, k, a, sa, lda, ws, ma0, ma1, b, sbp, c, ldc, alpha, beta, rows); }
#define DL__SN_INST2(NJ) DL__SN_INST(NJ, 1) DL__SN_INST(NJ, 2)
DL__SN_INST2(1) DL__SN_INST2(2) DL__SN_INST2(3) DL__SN_INST2(4) DL__SN_INST2(5)
DL__SN_INST2(6) DL__SN_INST2(7) DL__SN_INST2(8) DL__SN_INST2(9) DL__SN_INST2(10)
DL__SN_INST2(11) DL__SN_INST2(12) DL__SN_INST2(13) DL__SN_INST2(14)
DL__SN_INST(15, 1) DL__SN_INST(16, 1)

/* The whole GEMM for n <= DL__SN_MAX_N on one thread. Returns 0 (nothing done) when the
   workspace cannot be had. */
DL__TARGET("avx512f")
static int dl__smalln_avx512(const dl__gemm_job *g)
{
    static const dl__sn512_fn fns[DL__SN_MAX_N][2] = {
        { dl__sn512_1_1, dl__sn512_1_2 }, { dl__sn512_2_1, dl__sn512_2_2 },
        { dl__sn512_3_1, dl__sn512_3_2 }, { dl__sn512_4_1, dl__sn512_4_2 },
        { dl__sn512_5_1, dl__sn512_5_2 }, { dl__sn512_6_1, dl__sn512_6_2 },
        { dl__sn512_7_1, dl__sn512_7_2 }, { dl__sn512_8_1, dl__sn512_8_2 },
        { dl__sn512_9_1, dl__sn512_9_2 }, { dl__sn512_10_1, dl__sn512_10_2 },
        { dl__sn512_11_1, dl__sn512_11_2 }, { dl__sn512_12_1, dl__sn512_12_2 },
        { dl__sn512_13_1, dl__sn512_13_2 }, { dl__sn512_14_1, dl__sn512_14_2 },
        { dl__sn512_15_1, dl__sn512_15_1 }, { dl__sn512_16_1, dl__sn512_16_1 } };
    const int m = g->m, n = g->n, k = g->k;
    const int step = n <= 14 ? 32 : 16; /* 2n accumulators + 2 loads + 1 broadcast <= 32 */
    float *ws = dl__ws_get((size_t)step * DL__SN_KC + (g->tb ? (size_t)k * n : 0)), *bp;
    const float *b = g->b;
    ptrdiff_t sbp = g->ldb;
    int i0, p, j;
    if (!ws) return 0;
    bp = ws + (size_t)step * DL__SN_KC;
    if (g->tb) { /* B^T is n x k: copy it to k x n so a k step reads n contiguous floats */
        for (p = 0; p < k; p++)
            for (j = 0; j < n; j++) bp[(ptrdiff_t)p * n + j] = g->b[(ptrdiff_t)j * g->ldb + p];
        b = bp; sbp = n;
    }
    for (i0 = 0; i0 < m; i0 += step) {
        int rows = m - i0 < step ? m - i0 : step, h = rows > 16 ? 2 : 1;
        __mmask16 m0 = 0xFFFF, m1 = 0xFFFF;
        if (rows < 16) m0 = (__mmask16)((1u << rows) - 1u);
        if (rows < 32) m1 = (__mmask16)(rows > 16 ? (1u << (rows - 16)) - 1u : 0u);
        if (g->ta) {
            fns[n - 1][h - 1](k, g->a + i0, g->lda, 0, ws, m0, m1, b, sbp,
                              g->c + (ptrdiff_t)i0 * g->ldc, g->ldc, g->alpha, g->beta, rows);
        } else {
            fns[n - 1][h - 1](k, g->a + (ptrdiff_t)i0 * g->lda, 0, g->lda, ws, m0, m1, b, sbp,
                              g->c + (ptrdiff_t)i0 * g->ldc, g->ldc, g->alpha, g->beta, rows);
        }
    }
    return 1;
}
/* The same C^T scheme for AVX2 (no mask registers, 16 ymm): 8 rows of M per ymm, up to
   DL__SN2_MAX_N accumulators + the A vector + a broadcast. The 6x16 tiles otherwise
   compute n = 10 as 16 columns and copy every edge tile through a buffer. Zen 4 with
   DLCORE_ISA=avx2, (256,n,256): n = 4..10 1.2-2x faster for NN/TN/NT, n = 12 NN 1.05x,
   TN 1.28x, NT 0.97x. */
#define DL__SN2_MAX_N 12
/* r[i] lane j  <->  r[j] lane i, for 8 ymm. */
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS void dl__tr8_avx2(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Row-major A panel (rows <= 8 x kc at src) to A^T with row stride 8; rows past `rows`
   zero (AVX2 loads have no cheap lane mask). */
#define DL__P8_LD(q) r[q] = _mm256_loadu_ps(src + q * ld + p);
#define DL__P8_ST(q) _mm256_storeu_ps(dst + (ptrdiff_t)(p + q) * 8, r[q]);
DL__TARGET("avx2,fma")
static void dl__sn2_pack(const float *src, ptrdiff_t ld, int rows, int kc, float *dst)
{
    int p = 0;
    if (rows < 8) { dl__pack_transpose(src, ld, rows, kc, 8, dst); return; }
    if ((ld & 15) == 0) { /* see dl__pack_at_avx512 */
        p = (int)((16 - (((uintptr_t)src >> 2) & 15)) & 15);
        if (p > kc) p = kc;
        if (p) dl__pack_transpose_rows(src, ld, 8, p, 8, dst);
    }
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        DL__P8_LD(0) DL__P8_LD(1) DL__P8_LD(2) DL__P8_LD(3)
        DL__P8_LD(4) DL__P8_LD(5) DL__P8_LD(6) DL__P8_LD(7)
        dl__tr8_avx2(r);
        DL__P8_ST(0) DL__P8_ST(1) DL__P8_ST(2) DL__P8_ST(3)
        DL__P8_ST(4) DL__P8_ST(5) DL__P8_ST(6) DL__P8_ST(7)
    }
    if (p < kc) dl__pack_transpose_rows(src + p, ld, 8, kc - p, 8, dst + (ptrdiff_t)p * 8);
}

#define DL__SN2_COL(j) if (NJ > j) c##j = _mm256_fmadd_ps(a0, _mm256_broadcast_ss(b + j), c##j);
#define DL__SN2_K(LOAD) for (p = 0; p < kc; p++, ap += s, b += sbp) {                     \
    __m256 a0 = LOAD;                                                                    \
    DL__SN2_COL(0) DL__SN2_COL(1) DL__SN2_COL(2) DL__SN2_COL(3) DL__SN2_COL(4)            \
    DL__SN2_COL(5) DL__SN2_COL(6) DL__SN2_COL(7) DL__SN2_COL(8) DL__SN2_COL(9)            \
    DL__SN2_COL(10) DL__SN2_COL(11) }
#define DL__SN2_ST(q) if (q < rows) {                                                      \
    float *cq = c + (ptrdiff_t)q * ldc + j0;                                              \
    if (beta == 0.0f) _mm256_maskstore_ps(cq, mc, _mm256_mul_ps(r[q], va));               \
    else _mm256_maskstore_ps(cq, mc, _mm256_fmadd_ps(r[q], va,                            \
                             _mm256_mul_ps(vb, _mm256_maskload_ps(cq, mc)))); }
/* C[r][j] for r < rows (<= 8), j < NJ; A and B as in dl__sn512_body (lanes past rows:
   masked loads when A^T is read in place, zeros when packed). */
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS
void dl__sn256_body(const int NJ, int k, const float *a, ptrdiff_t sa, ptrdiff_t lda, float *ws,
                    const float *b, ptrdiff_t sbp, float *c, ptrdiff_t ldc, float alpha,
                    float beta, int rows)
{
    __m256 z = _mm256_setzero_ps();
    __m256 c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z, c8 = z, c9 = z,
           c10 = z, c11 = z;
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i ma = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), lane), mc;
    int p, p0, j0, kc1 = 128 - (lda ? (int)(((uintptr_t)a >> 2) & 15) : 0);
    for (p0 = 0; p0 < k; p0 += kc1, kc1 = 128) {
        int kc = k - p0 < kc1 ? k - p0 : kc1;
        const float *ap = a + p0 * sa;
        ptrdiff_t s = sa;
        if (lda) { dl__sn2_pack(a + p0, lda, rows, kc, ws); ap = ws; s = 8; }
        if (rows == 8 || lda) DL__SN2_K(_mm256_loadu_ps(ap))
        else DL__SN2_K(_mm256_maskload_ps(ap, ma))
    }
    for (j0 = 0; j0 < NJ; j0 += 8) {
        __m256 r[8];
        if (j0 == 0) {
            r[0] = c0; r[1] = NJ > 1 ? c1 : z; r[2] = NJ > 2 ? c2 : z; r[3] = NJ > 3 ? c3 : z;
            r[4] = NJ > 4 ? c4 : z; r[5] = NJ > 5 ? c5 : z; r[6] = NJ > 6 ? c6 : z; r[7] = NJ > 7 ? c7 : z;
        } else {
            r[0] = c8; r[1] = NJ > 9 ? c9 : z; r[2] = NJ > 10 ? c10 : z; r[3] = NJ > 11 ? c11 : z;
            r[4] = z; r[5] = z; r[6] = z; r[7] = z;
        }
        mc = _mm256_cmpgt_epi32(_mm256_set1_epi32(NJ - j0), lane);
        dl__tr8_avx2(r);
        DL__SN2_ST(0) DL__SN2_ST(1) DL__SN2_ST(2) DL__SN2_ST(3)
        DL__SN2_ST(4) DL__SN2_ST(5) DL__SN2_ST(6) DL__SN2_ST(7)
    }
}
typedef void (*dl__sn256_fn)(int, const float *, ptrdiff_t, ptrdiff_t, float *, const float *,
                             ptrdiff_t, float *, ptrdiff_t, float, float, int);
#define DL__SN2_INST(NJ)                                                                  \
DL__TARGET("avx2,fma") static void dl__sn256_##NJ(int k, const float *a, ptrdiff_t sa,    \
    ptrdiff_t lda, float *ws, const float *b, ptrdiff_t sbp, float *c, ptrdiff_t ldc,    \
    float alpha, float beta, int rows)                                                   \
{ dl__sn256_body(NJ, k, a, sa, lda, ws, b, sbp, c, ldc, alpha, beta, rows); }
DL__SN2_INST(1) DL__SN2_INST(2) DL__SN2_INST(3) DL__SN2_INST(4) DL__SN2_INST(5)
DL__SN2_INST(6) DL__SN2_INST(7) DL__SN2_INST(8) DL__SN2_INST(9) DL__SN2_INST(10)
DL__SN2_INST(11) DL__SN2_INST(12)

static int dl__smalln_avx2(const dl__gemm_job *g)
{
    static const dl__sn256_fn fns[DL__SN2_MAX_N] = {
        dl__sn256_1, dl__sn256_2, dl__sn256_3, dl__sn256_4, dl__sn256_5, dl__sn256_6,
        dl__sn256_7, dl__sn256_8, dl__sn256_9, dl__sn256_10, dl__sn256_11, dl__sn256_12 };
    const int m = g->m, n = g->n, k = g->k;
    float *ws = dl__ws_get((size_t)8 * 128 + (g->tb ? (size_t)k * n : 0)), *bp;
    const float *b = g->b;
    ptrdiff_t sbp = g->ldb;
    int i0, p, j;
    if (!ws) return 0;
    bp = ws + 8 * 128;
    if (g->tb) {
        for (p = 0; p < k; p++)
            for (j = 0; j < n; j++) bp[(ptrdiff_t)p * n + j] = g->b[(ptrdiff_t)j * g->ldb + p];
        b = bp; sbp = n;
    }
    for (i0 = 0; i0 < m; i0 += 8) {
        int rows = m - i0 < 8 ? m - i0 : 8;
        float *ci = g->c + (ptrdiff_t)i0 * g->ldc;
        if (g->ta) fns[n - 1](k, g->a + i0, g->lda, 0, ws, b, sbp, ci, g->ldc, g->alpha, g->beta, rows);
        else fns[n - 1](k, g->a + (ptrdiff_t)i0 * g->lda, 0, g->lda, ws, b, sbp, ci, g->ldc,
                        g->alpha, g->beta, rows);
    }
    return 1;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif /* DL__X86 */

/* One thread's share: a band of columns (or rows) rounded to whole tiles. */
static void dl__gemm_task(void *ctx, int t)
{
    const dl__gemm_job *g = (const dl__gemm_job *)ctx;
    int total = g->split_n ? g->n : g->m;
    int lo = t * g->chunk, hi = lo + g->chunk;
    if (hi > total) hi = total;
    if (lo >= hi) return;
    if (g->split_n) dl__gemm_block(g, 0, g->m, lo, hi);
    else dl__gemm_block(g, lo, hi, 0, g->n);
}

/* C = beta * C for the cases where the product term vanishes (k == 0 or alpha == 0). */
static void dl__scale_c(int m, int n, float beta, float *c, int ldc)
{
    int i, j;
    for (i = 0; i < m; i++) {
        float *ci = c + (ptrdiff_t)i * ldc;
        if (beta == 0.0f) for (j = 0; j < n; j++) ci[j] = 0.0f;
        else if (beta != 1.0f) for (j = 0; j < n; j++) ci[j] *= beta;
    }
}

/* ==== 1.7 Public entry points =============================================================== */

/* Below this many flops a GEMM stays on the calling thread. Measured on Zen 4 with 2
   threads: 128^3 (4.2 MFLOP) ran 0.87x, 160^3 (8.2 MFLOP) 1.05x, 200^3 (16 MFLOP)
   1.6x, 2048^3 1.96x: waking the pool and splitting costs ~20-40 us. */
#define DL__PAR_MIN_FLOPS 1.0e7

DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc)
{
    dl__gemm_job g;
    int nt;
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) { dl__scale_c(m, n, beta, c, ldc); return; }
    dl__init();
    g.ta = trans_a != 0; g.tb = trans_b != 0;
    g.m = m; g.n = n; g.k = k;
    g.alpha = alpha; g.beta = beta;
    g.a = a; g.b = b; g.c = c;
    g.lda = lda; g.ldb = ldb; g.ldc = ldc;
    g.isa = &dl__isa_table[dl__isa_cur];
    nt = dl__nthreads;
    if (2.0 * m * n * k < DL__PAR_MIN_FLOPS) {
        nt = 1;
#ifdef DL__X86
        if (dl__isa_cur == DL__ISA_AVX512 && n <= (g.ta ? DL__SN_MAX_N : DL__SN_MAX_N_PACKED) &&
            dl__smalln_avx512(&g)) return;
        if (dl__isa_cur == DL__ISA_AVX2 && n <= DL__SN2_MAX_N && dl__smalln_avx2(&g)) return;
#endif
    }
    /* split the larger dimension in whole tiles, so no task gets a ragged middle */
    g.split_n = (n / g.isa->nr) >= (m / g.isa->mr);
    {
        int unit = g.split_n ? g.isa->nr : g.isa->mr, total = g.split_n ? n : m;
        int units = (total + unit - 1) / unit;
        if (nt > units) nt = units;
        g.chunk = (units + nt - 1) / nt * unit;
        g.n_tasks = (total + g.chunk - 1) / g.chunk;
    }
    if (g.n_tasks <= 1) dl__gemm_block(&g, 0, m, 0, n);
    else dl__parallel_for(g.n_tasks, dl__gemm_task, &g);
}

DLDEF const char *dl_isa_name(void)
{
    dl__init();
    return dl__isa_table[dl__isa_cur].name;
}

DLDEF int dl_set_isa(const char *name)
{
    int i;
    dl__init();
    if (!name || strcmp(name, "auto") == 0) { dl__isa_cur = dl__best_isa(); return DL_OK; }
    i = dl__isa_lookup(name);
    if (i < 0) return dl__error("dl_set_isa: unknown ISA '%s' (expected scalar, avx2, avx512, neon or auto)", name);
    if (!dl__isa_have[i])
        return dl__error("dl_set_isa: ISA '%s' is not available on this CPU/build (using '%s')",
                         name, dl__isa_table[dl__isa_cur].name);
    dl__isa_cur = i;
    return DL_OK;
}

DLDEF int dl_set_threads(int n)
{
    dl__init();
    if (n < 0) return dl__error("dl_set_threads: thread count %d is negative (0 means all cores)", n);
    dl__pool_resize(n);
    return DL_OK;
}

DLDEF int dl_get_threads(void)
{
    dl__init();
    return dl__nthreads;
}

DLDEF void dl_shutdown(void)
{
    dl__init();
    dl__pool_stop();
    dl__ws_free();
}
