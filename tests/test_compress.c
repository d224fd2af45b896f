/* Compression: half floats (every half both ways, F16C/NEON against the scalar code,
   narrowing against F16C's rounding), row quantization (AVX2 against scalar), int8
   models (close to fp32, identical on every ISA and batch size, through files bit
   for bit), magnitude pruning (exact sparsity, TF-MOT's polynomial schedule, masks
   that hold through training), every encoding through dl_save/dl_load, files that
   shrink, and damaged encodings rejected with the tensor and offset named; int8 conv
   layers within the rounding bound of float, and int8 CNNs. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include "tests/dltest.h"
#include <stdlib.h>

#define TMP "build/test_compress.tmp.dlc"

/* Three Gaussian blobs in 24 dimensions, labelled 0..2, all values >= 0 (pixels-like)
   or signed. */
static void blobs(dl_dataset *d, int n, uint64_t seed)
{
    dl_rng r;
    int i, j, shape[1] = { 24 };
    dl_dataset_alloc(d, n, 1, shape, 1);
    dl_rng_seed(&r, seed);
    for (i = 0; i < n; i++) {
        int c = (int)dl_rng_below(&r, 3);
        for (j = 0; j < 24; j++) d->x[i * 24 + j] = (j % 3 == c ? 1.5f : 0.0f) + 0.7f * dl_rng_normal(&r);
        d->y[i] = (float)c;
    }
    d->n_classes = 3;
}

static dl_model *mlp(uint64_t seed)
{
    dl_model *m = dl_sequential(DL_SHAPE(24));
    dl_model_seed(m, seed);
    dl_add(m, dl_dense(40, DL_RELU));
    dl_add(m, dl_dropout(0.1f));
    dl_add(m, dl_dense(20, DL_TANH));
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f));
    return m;
}

static dl_model *trained(dl_dataset *train)
{
    dl_model *m = mlp(7);
    dl_fit_opts f;
    memset(&f, 0, sizeof f);
    f.epochs = 3; f.batch = 16; f.progress = DL_PROGRESS_NONE;
    dl_fit(m, train, &f);
    return m;
}

static float *predict(dl_model *m, const dl_dataset *d)
{
    float *out = (float *)malloc((size_t)d->n * 3 * sizeof(float));
    if (dl_predict(m, d->x, d->n, out) != DL_OK) { free(out); return NULL; }
    return out;
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

DL_TEST(f16_every_half)
{
    unsigned h;
    int bad_rt = 0, bad_vec = 0;
    static uint16_t all[65536];
    static float wide[65536], ref[65536];
    for (h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    dl__f16_widen(all, wide, 65536, -1);
    dl__f16_widen(all, ref, 65536, 0);
    for (h = 0; h < 65536; h++) {
        float f = dl_f16_to_f32((uint16_t)h);
        int nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
        if (memcmp(&wide[h], &ref[h], 4) != 0) bad_vec++;
        if (!nan && dl_f32_to_f16(f) != h) bad_rt++;
        if (nan && f == f) bad_rt++;
    }
    DL_CHECK_EQ_INT(bad_rt, 0);
    DL_CHECK_EQ_INT(bad_vec, 0);
    /* known values: the largest half, its overflow boundary, the smallest subnormal */
    DL_CHECK_EQ_INT(dl_f32_to_f16(65504.0f), 0x7bff);
    DL_CHECK_EQ_INT(dl_f32_to_f16(65519.99f), 0x7bff);
    DL_CHECK_EQ_INT(dl_f32_to_f16(65520.0f), 0x7c00);
    DL_CHECK_EQ_INT(dl_f32_to_f16(5.9604644775390625e-8f), 0x0001);
    DL_CHECK_EQ_INT(dl_f32_to_f16(2.98023223876953125e-8f), 0x0000);   /* a tie: to even (0) */
    DL_CHECK_EQ_INT(dl_f32_to_f16(-1.0f), 0xbc00);
    DL_CHECK_EQ_INT(dl_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);     /* a tie: to even */
    DL_CHECK_EQ_INT(dl_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);     /* a tie: to even (up) */
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
/* The test asks the CPU itself, so it holds in DLCORE_NO_SIMD builds too. */
static int cpu_has_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1) && (ecx >> 28 & 1);
}
__attribute__((target("avx,f16c"))) static uint16_t f16c_narrow(float f)
{
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set1_ps(f), 0 /* nearest even */), 0);
}
static int cpu_has_fma(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 12 & 1) && (ecx >> 28 & 1);
}
__attribute__((target("avx,fma"))) static float hw_fma(float a, float b, float c)
{
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}
#define HAVE_HW_FMA() cpu_has_fma()
#elif defined(__aarch64__)
static float hw_fma(float a, float b, float c) { return fmaf(a, b, c); }   /* one fmadd on AArch64 */
#define HAVE_HW_FMA() 1
#else
#define hw_fma(a, b, c) fmaf(a, b, c)   /* not called: HAVE_HW_FMA() is 0 */
#define HAVE_HW_FMA() 0
#endif

/* The scalar narrowing against the hardware's, over random bit patterns. */
DL_TEST(f16_narrow_matches_f16c)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    dl_rng r;
    int i, bad = 0, tried = 0;
    if (!cpu_has_f16c()) { DL_CHECK(printf("  no F16C on this CPU: the every-half test covers the scalar code\n") > 0); return; }
    dl_rng_seed(&r, 3);
    for (i = 0; i < 1000000; i++) {
        uint32_t u = dl_rng_u32(&r);
        float f;
        if (i & 1) u = (u & 0x80ffffffu) | ((uint32_t)(100 + (u >> 24) % 50) << 23);   /* near the half range */
        memcpy(&f, &u, 4);
        if (f != f) continue;
        tried++;
        if (dl_f32_to_f16(f) != f16c_narrow(f)) { if (bad++ < 3) DL_FAILF("%a: %04x vs F16C %04x", (double)f, dl_f32_to_f16(f), f16c_narrow(f)); }
    }
    DL_CHECK(tried > 900000);
    DL_CHECK_EQ_INT(bad, 0);
#else
    DL_CHECK(printf("  not x86: the every-half test covers the scalar code\n") > 0);
#endif
}

/* Codes of the vector quantizer equal the scalar one's, ties and clamps included. */
DL_TEST(quant_rows_simd_matches_scalar)
{
    static const char *const isas[] = { "avx2", "avx512", "neon" };
    float x[203];
    uint8_t q0[203], q1[203];
    int i, t, n;
    dl_rng r;
    dl_rng_seed(&r, 5);
    for (t = 0; t < 3; t++) {
        if (dl_set_isa(isas[t]) != DL_OK) continue;
        for (n = 1; n <= 203; n += 13) {
            float s0, s1, range[2] = { -1.0f, 2.0f };
            int z0, z1;
            for (i = 0; i < n; i++) x[i] = (i % 7 == 0) ? (float)(i % 5) * 0.5f : 4.0f * dl_rng_normal(&r);
            dl__quant_row(x, q1, n, NULL, &s1, &z1);
            dl_set_isa("scalar");
            dl__quant_row(x, q0, n, NULL, &s0, &z0);
            DL_CHECK(memcmp(q0, q1, (size_t)n) == 0 && s0 == s1 && z0 == z1);
            dl__quant_row(x, q0, n, range, &s0, &z0);   /* a fixed range clamps */
            dl_set_isa(isas[t]);
            dl__quant_row(x, q1, n, range, &s1, &z1);
            DL_CHECK(memcmp(q0, q1, (size_t)n) == 0);
        }
        /* far outside a fixed range, where the float-to-int conversion would overflow */
        for (i = 0; i < 203; i++) x[i] = (i % 3 ? 1.0f : -1.0f) * (i % 2 ? 3e37f : 1e10f) * (float)(i % 5);
        {
            float s0, s1, range[2] = { -1.0f, 2.0f };
            int z0, z1;
            DL_CHECK_EQ_INT(dl__quant_row(x, q1, 203, range, &s1, &z1), 0);
            dl_set_isa("scalar");
            dl__quant_row(x, q0, 203, range, &s0, &z0);
            dl_set_isa(isas[t]);
            DL_CHECK(memcmp(q0, q1, 203) == 0);
            DL_CHECK(q0[1] == 127 && q0[3] == 0 && q0[0] == (uint8_t)z0);
            /* a row whose own range is wider than FLT_MAX: scale 1, and the clamp again */
            for (i = 0; i < 203; i++) x[i] = (i % 2 ? 1.5e38f : -1.5e38f) * (float)(i % 3);
            DL_CHECK_EQ_INT(dl__quant_row(x, q1, 203, NULL, &s1, &z1), 0);
            dl_set_isa("scalar");
            dl__quant_row(x, q0, 203, NULL, &s0, &z0);
            dl_set_isa(isas[t]);
            DL_CHECK(memcmp(q0, q1, 203) == 0 && s0 == 1.0f && s1 == 1.0f && z0 == 0 && z1 == 0);
            DL_CHECK(q0[1] == 127 && q0[2] == 0);
        }
    }
    dl_set_isa(NULL);
    /* the codes reproduce x within half a step */
    {
        float s;
        int z;
        for (i = 0; i < 50; i++) x[i] = (float)i * 0.1f - 1.0f;
        dl__quant_row(x, q0, 50, NULL, &s, &z);
        for (i = 0; i < 50; i++) DL_CHECK(fabsf(s * (float)(q0[i] - z) - x[i]) <= 0.5001f * s);
    }
}

/* The int8 path's softmax exp: every ISA's vector loop gives the scalar function's bits
   (whole vectors and tails, results down to denormals and 0, the clamps at 0 and -104),
   and each value is within 2 ulp of e^x in double. */
DL_TEST(exact_exp_same_bits_on_every_isa_and_close_to_exp)
{
    static const char *const isas[] = { "avx2", "avx512", "neon" };
    enum { N = 4099 };
    static float x[N], want[N], got[N];
    int i, t, len, tried = 0, worst_ulp = 0, denormals = 0;
    dl_rng r;
    dl_rng_seed(&r, 11);
    for (i = 0; i < N; i++) {
        switch (i % 4) {
        case 0: x[i] = -120.0f * dl_rng_uniform(&r); break;   /* down past -104 */
        case 1: x[i] = -1.0f * dl_rng_uniform(&r); break;
        case 2: x[i] = -87.0f - 17.0f * dl_rng_uniform(&r); break;   /* denormal results */
        default: x[i] = -10.0f * dl_rng_uniform(&r); break;
        }
    }
    x[0] = 0.0f; x[1] = -0.0f; x[2] = 3.0f; x[3] = -104.0f; x[5] = -200.0f; x[6] = -1e-30f; x[7] = -87.33654f;
    dl_set_isa("scalar");
    memcpy(want, x, sizeof x);
    dl__exps_exact(want, N);
    for (i = 0; i < N; i++) {
        double e = exp(x[i] > 0.0f ? 0.0 : (double)x[i]);
        float ulp = nextafterf((float)e, INFINITY) - (float)e;
        int off = (int)(fabs((double)want[i] - e) / (double)ulp + 0.5);
        if (e < FLT_MIN) {   /* a denormal result: within one step of 2^-149 */
            if (fabs((double)want[i] - e) > ldexp(1.0, -149)) DL_FAILF("e^%a: %a against %a", (double)x[i], (double)want[i], e);
            denormals++;
            continue;
        }
        if (off > worst_ulp) worst_ulp = off;
    }
    printf("  worst error of normal results: %d ulp; %d denormal results\n", worst_ulp, denormals);
    DL_CHECK(worst_ulp <= 2);
    DL_CHECK(denormals > 100);
    DL_CHECK(want[0] == 1.0f && want[1] == 1.0f && want[2] == 1.0f);
    DL_CHECK(want[5] == want[3]);   /* clamped at -104 */
    DL_CHECK(want[7] >= FLT_MIN);   /* e^-87.33655 is just above FLT_MIN */
    for (t = 0; t < 3; t++) {
        if (dl_set_isa(isas[t]) != DL_OK) continue;
        for (len = 1; len <= N; len += len < 40 ? 1 : 397) {
            memcpy(got, x, (size_t)len * sizeof(float));
            dl__exps_exact(got, (size_t)len);
            if (memcmp(got, want, (size_t)len * sizeof(float)) != 0) {
                for (i = 0; i < len && got[i] == want[i]; i++) {}
                DL_FAILF("%s: length %d: e^%a is %a, scalar %a", isas[t], len, (double)x[i], (double)got[i], (double)want[i]);
                break;
            }
            tried++;
        }
    }
    dl_set_isa(NULL);
    printf("  %d lengths compared on the vector ISAs\n", tried);
    for (t = 0; t < 4; t++) {   /* a NaN stays a NaN, and leaves its neighbours alone */
        float v[3] = { -1.0f, NAN, -2.0f };
        if (dl_set_isa(t ? isas[t - 1] : "scalar") != DL_OK) continue;
        dl__exps_exact(v, 3);
        DL_CHECK(v[1] != v[1] && v[0] == dl__exp_exact(-1.0f) && v[2] == dl__exp_exact(-2.0f));
    }
    dl_set_isa(NULL);
}

/* The scalar exp's fused multiply-add without libm against the hardware's: random
   operands over wide exponents (cancellations, tiny addends), and sums that fall a
   hair off a float's midpoint, where rounding to double first and then to float goes
   the wrong way. */
DL_TEST(scalar_fma_equals_the_hardware_fma)
{
    dl_rng r;
    int i, bad = 0, hard = 0, naive_wrong = 0;
    float a = 1.0f + 1.0f / 4096.0f;   /* a a = 1 + 2^-11 + 2^-24: a float midpoint */
    if (!HAVE_HW_FMA()) { DL_CHECK(printf("  no FMA on this CPU: only the midpoint cases\n") > 0); }
    DL_CHECK(dl__fmaf(a, a, ldexpf(1.0f, -60)) == 1.0f + 2.0f / 4096.0f + ldexpf(1.0f, -23));   /* just above: up */
    DL_CHECK(dl__fmaf(a, a, -ldexpf(1.0f, -60)) == 1.0f + 2.0f / 4096.0f);                      /* just below: down */
    DL_CHECK((float)((double)a * a + ldexp(1.0, -60)) == 1.0f + 2.0f / 4096.0f);   /* what double rounding gives */
    if (!HAVE_HW_FMA()) return;
    dl_rng_seed(&r, 21);
    for (i = 0; i < 2000000; i++) {
        float x = ldexpf(dl_rng_uniform(&r) * 2.0f - 1.0f, (int)dl_rng_below(&r, 40) - 20);
        float y = ldexpf(dl_rng_uniform(&r) * 2.0f - 1.0f, (int)dl_rng_below(&r, 40) - 20);
        float z = i % 3 ? ldexpf(dl_rng_uniform(&r) * 2.0f - 1.0f, (int)dl_rng_below(&r, 80) - 50) : -x * y;
        if (i % 5 == 0) {   /* x y with its last bit at 2^-24, a float midpoint, nudged by a tiny z */
            x = 1.0f + (float)(2 * dl_rng_below(&r, 1u << 11) + 1) / 4096.0f;
            y = 1.0f + ldexpf(1.0f, -12);
            z = (i & 1 ? 1.0f : -1.0f) * ldexpf(1.0f, -40 - (int)dl_rng_below(&r, 20));
            hard++;
            naive_wrong += (float)((double)x * y + z) != hw_fma(x, y, z);
        }
        if (dl__fmaf(x, y, z) != hw_fma(x, y, z) && bad++ < 3)
            DL_FAILF("fma(%a, %a, %a): %a, the hardware %a", (double)x, (double)y, (double)z, (double)dl__fmaf(x, y, z), (double)hw_fma(x, y, z));
    }
    printf("  2000000 products compared (%d near a midpoint, where rounding to double first errs %d times)\n", hard, naive_wrong);
    DL_CHECK_EQ_INT(bad, 0);
    DL_CHECK(naive_wrong > hard / 10);   /* the cases are hard ones */
}

/* Quantizing a row by its own range reports an inf or a NaN at any place (the whole
   vectors, the masked or scalar tail), on every ISA, and the codes still agree. */
DL_TEST(quant_row_reports_a_nonfinite_value_on_every_isa)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    static const float bad[] = { NAN, INFINITY, -INFINITY };
    float x[100];
    uint8_t q0[100], q1[100];
    int t, n, at, b, tried = 0;
    for (t = 0; t < 4; t++) {
        if (dl_set_isa(isas[t]) != DL_OK) continue;
        for (n = 1; n <= 100; n += 11)
            for (at = 0; at < n; at += 3)
                for (b = 0; b < 3; b++) {
                    float s0, s1;
                    int z0, z1, i, r0, r1;
                    for (i = 0; i < n; i++) x[i] = (float)(i % 9) - 4.0f;
                    DL_CHECK_EQ_INT(dl__quant_row(x, q1, n, NULL, &s1, &z1), 0);
                    x[at] = bad[b];
                    r1 = dl__quant_row(x, q1, n, NULL, &s1, &z1);
                    dl_set_isa("scalar");
                    r0 = dl__quant_row(x, q0, n, NULL, &s0, &z0);
                    dl_set_isa(isas[t]);
                    if (!r1 || !r0 || memcmp(q0, q1, (size_t)n) || s0 != s1 || z0 != z1) {
                        DL_FAILF("%s: n %d, %g at %d: reported %d (scalar %d), codes %s", isas[t], n, (double)bad[b], at, r1,
                                 r0, memcmp(q0, q1, (size_t)n) ? "differ" : "agree");
                        dl_set_isa(NULL);
                        return;
                    }
                    tried++;
                }
    }
    dl_set_isa(NULL);
    DL_CHECK(tried > 500);
}

DL_TEST(int8_model_close_to_fp32_and_same_everywhere)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    dl_dataset train, test;
    dl_model *m;
    float *p32, *p8, *pi, one[3];
    dl_metrics m32, m8;
    int i, j, worst = 0, t;
    blobs(&train, 600, 1);
    blobs(&test, 300, 2);
    m = trained(&train);
    p32 = predict(m, &test);
    dl_evaluate(m, &test, &m32);
    DL_CHECK_EQ_INT(dl_quantize_int8(m, NULL), DL_OK);
    DL_CHECK(dl_model_is_int8(m));
    DL_CHECK_EQ_INT(dl_quantize_int8(m, NULL), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "already int8");
    p8 = predict(m, &test);
    DL_CHECK(p32 && p8);
    if (!p32 || !p8) return;
    for (i = 0; i < test.n * 3; i++) if (fabsf(p8[i] - p32[i]) > 0.05f) worst++;
    DL_CHECK(worst <= test.n * 3 / 100);
    DL_CHECK_EQ_INT(dl_evaluate(m, &test, &m8), DL_OK);
    printf("  accuracy fp32 %.4f int8 %.4f, loss %.4f / %.4f\n", (double)m32.accuracy, (double)m8.accuracy, (double)m32.loss, (double)m8.loss);
    DL_CHECK(fabsf(m8.accuracy - m32.accuracy) <= 0.02f);
    DL_CHECK(fabsf(m8.loss - m32.loss) <= 0.05f);
    DL_CHECK(m8.accuracy > 0.8f);
    /* integer GEMM + the same epilogue: the same bits on every ISA, and per-row
       quantization makes a row's result independent of the batch around it */
    for (t = 0; t < 4; t++) {
        if (dl_set_isa(isas[t]) != DL_OK) continue;
        pi = predict(m, &test);
        DL_CHECK(pi && memcmp(pi, p8, (size_t)test.n * 3 * sizeof(float)) == 0);
        free(pi);
    }
    dl_set_isa(NULL);
    for (i = 0; i < test.n; i += 37) {
        DL_CHECK_EQ_INT(dl_predict(m, test.x + (size_t)i * 24, 1, one), DL_OK);
        for (j = 0; j < 3; j++) DL_CHECK(one[j] == p8[i * 3 + j]);
    }
    {   /* an int8 model cannot be trained or pruned */
        dl_prune_opts po;
        memset(&po, 0, sizeof po);
        po.sparsity = 0.5f;
        DL_CHECK_EQ_INT(dl_fit(m, &train, NULL), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "int8");
        DL_CHECK_EQ_INT(dl_prune(m, &po, NULL, NULL), DL_ERR);
    }
    free(p32); free(p8);
    dl_model_free(m);
    dl_dataset_free(&train); dl_dataset_free(&test);
}

/* The int8 model saved and loaded gives the same outputs bit for bit; so does a
   statically calibrated one, whose range comes back too. */
/* A dense layer on 2-D samples acts on the last axis, vector by vector: so does its
   int8 form, each vector quantized on its own. */
DL_TEST(int8_dense_on_2d_samples_acts_on_the_last_axis)
{
    dl_model *m = dl_sequential(DL_SHAPE(4, 6)), *f;
    float x[3 * 24], y8[3 * 3], yf[3 * 3], row8[4 * 5], rowf[4 * 5];
    dl_rng r;
    int i;
    dl_add(m, dl_dense(5, DL_RELU));
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(3, DL_SOFTMAX));
    dl_model_seed(m, 9);
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)), DL_OK);
    dl_rng_seed(&r, 4);
    for (i = 0; i < 3 * 24; i++) x[i] = dl_rng_normal(&r);
    DL_CHECK_EQ_INT(dl_quantize_int8(m, NULL), DL_OK);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    f = dl_load(TMP);
    DL_CHECK(f != NULL);
    if (!f) { dl_model_free(m); return; }
    DL_CHECK_EQ_INT(dl_model_dequantize(f), DL_OK);
    DL_CHECK_EQ_INT(dl_predict(m, x, 3, y8), DL_OK);
    DL_CHECK_EQ_INT(dl_predict(f, x, 3, yf), DL_OK);
    for (i = 0; i < 9; i++) DL_CHECK(fabsf(y8[i] - yf[i]) < 0.02f);
    dl_model_free(f);
    /* row by row: one 4x6 sample's first layer equals four 1x6 samples' */
    {
        dl_model *a = dl_sequential(DL_SHAPE(4, 6)), *b = dl_sequential(DL_SHAPE(6));
        int j;
        dl_add(a, dl_dense(5, DL_LINEAR));
        dl_add(b, dl_dense(5, DL_LINEAR));
        dl_model_seed(a, 2); dl_model_seed(b, 2);
        DL_CHECK_EQ_INT(dl_compile(a, DL_LOSS_MSE, dl_adam(1e-3f)), DL_OK);
        DL_CHECK_EQ_INT(dl_compile(b, DL_LOSS_MSE, dl_adam(1e-3f)), DL_OK);
        DL_CHECK_EQ_INT(dl_quantize_int8(a, NULL), DL_OK);
        DL_CHECK_EQ_INT(dl_quantize_int8(b, NULL), DL_OK);
        DL_CHECK_EQ_INT(dl_predict(a, x, 1, row8), DL_OK);
        DL_CHECK_EQ_INT(dl_predict(b, x, 4, rowf), DL_OK);
        for (j = 0; j < 20; j++) DL_CHECK(row8[j] == rowf[j]);
        dl_model_free(a); dl_model_free(b);
    }
    remove(TMP);
    dl_model_free(m);
}

DL_TEST(int8_file_roundtrip_dynamic_and_static)
{
    dl_dataset train, test;
    int st;
    blobs(&train, 400, 3);
    blobs(&test, 200, 4);
    for (st = 0; st < 2; st++) {
        dl_model *m = trained(&train), *back;
        dl_quant_opts qo;
        float *a, *b;
        const float *range = NULL;
        const int8_t *w;
        const float *sc;
        dl_tensor_info info;
        memset(&qo, 0, sizeof qo);
        if (st) { qo.calib = &train; qo.calib_batches = 2; }
        DL_CHECK_EQ_INT(dl_quantize_int8(m, &qo), DL_OK);
        DL_CHECK_EQ_INT(dl_model_int8_weights(m, 0, &w, &sc, &range), DL_OK);
        DL_CHECK(st ? range != NULL && range[0] <= 0.0f && range[1] > 0.0f : range == NULL);
        DL_CHECK_EQ_INT(dl_model_int8_weights(m, 1, &w, &sc, &range), DL_ERR);   /* dropout */
        DL_CHECK_EQ_INT(dl_model_tensor_info(m, 0, &info), DL_OK);
        DL_CHECK_EQ_INT(info.encoding, DL_ENC_INT8);
        DL_CHECK_EQ_INT(info.bytes, 12 + 40 * 4 + 24 * 40);
        DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
        back = dl_load(TMP);
        DL_CHECK(back != NULL);
        if (!back) { dl_model_free(m); continue; }
        DL_CHECK(dl_model_is_int8(back));
        if (st) {
            const float *r2 = NULL;
            dl_model_int8_weights(m, 0, NULL, NULL, &range);
            dl_model_int8_weights(back, 0, NULL, NULL, &r2);
            DL_CHECK(r2 && range[0] == r2[0] && range[1] == r2[1]);
        }
        a = predict(m, &test);
        b = predict(back, &test);
        DL_CHECK(a && b && memcmp(a, b, (size_t)test.n * 3 * sizeof(float)) == 0);
        free(a); free(b);
        dl_model_free(m);
        dl_model_free(back);
    }
    remove(TMP);
    dl_dataset_free(&train); dl_dataset_free(&test);
}

/* PolynomialDecay as TF-MOT writes it, computed here independently. */
DL_TEST(prune_schedule_is_polynomial_decay)
{
    dl__pruner p;
    long t;
    memset(&p, 0, sizeof p);
    p.o.sparsity = 0.8f; p.o.initial_sparsity = 0.1f; p.o.power = 3.0f; p.end_step = 1000;
    for (t = 0; t <= 1200; t += 100) {
        double frac = t < 1000 ? (double)t / 1000.0 : 1.0;
        double want = 0.8 + (0.1 - 0.8) * (1.0 - frac) * (1.0 - frac) * (1.0 - frac);
        p.step = t;
        DL_CHECK_NEAR(dl__prune_sparsity(&p), want, 1e-6);
    }
}

static size_t zeros(const dl_model *m, int i)
{
    dl_tensor t = dl__param_value(m, i);
    size_t k, z = 0;
    for (k = 0; k < dl_shape_numel(t.shape); k++) z += t.data[k] == 0.0f;
    return z;
}

DL_TEST(prune_one_shot_exact_and_smallest)
{
    dl_model *m = mlp(11);
    dl_prune_opts po;
    dl_tensor w = dl__param_value(m, 0);
    size_t n = dl_shape_numel(w.shape), k;
    float *before = (float *)malloc(n * sizeof(float)), kept_min = 1e30f, cut_max = 0.0f;
    memcpy(before, w.data, n * sizeof(float));
    memset(&po, 0, sizeof po);
    po.sparsity = 0.8f;
    DL_CHECK_EQ_INT(dl_prune(m, &po, NULL, NULL), DL_OK);
    DL_CHECK_EQ_INT(zeros(m, 0), (size_t)(0.8 * n + 0.5));
    DL_CHECK_EQ_INT(zeros(m, 1), 40);                       /* biases are not pruned (zero-initialised) */
    for (k = 0; k < n; k++) {
        if (w.data[k] == 0.0f) { if (fabsf(before[k]) > cut_max) cut_max = fabsf(before[k]); }
        else { DL_CHECK(w.data[k] == before[k]); if (fabsf(before[k]) < kept_min) kept_min = fabsf(before[k]); }
    }
    DL_CHECK(cut_max <= kept_min);
    po.sparsity = 1.0f;
    DL_CHECK_EQ_INT(dl_prune(m, &po, NULL, NULL), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "sparsity");
    free(before);
    dl_model_free(m);
}

/* With the final sparsity from step 0 and no mask update until the end, the weights
   pruned at step 0 must still be the zeros after training: the masks held them. */
DL_TEST(prune_masks_hold_through_fine_tuning)
{
    dl_dataset train, test;
    dl_model *m, *ref;
    dl_prune_opts po;
    dl_fit_opts f;
    dl_metrics mt;
    size_t k, n, same = 0;
    int i;
    blobs(&train, 600, 5);
    blobs(&test, 300, 6);
    m = trained(&train);
    ref = trained(&train);
    memset(&po, 0, sizeof po);
    po.sparsity = po.initial_sparsity = 0.6f;
    po.frequency = 1000000;
    DL_CHECK_EQ_INT(dl_prune(ref, &po, NULL, NULL), DL_OK);      /* the step-0 masks */
    memset(&f, 0, sizeof f);
    f.epochs = 2; f.batch = 16; f.progress = DL_PROGRESS_NONE;
    DL_CHECK_EQ_INT(dl_prune(m, &po, &train, &f), DL_OK);
    for (i = 0; i < dl_model_tensor_count(m); i += 2) {
        dl_tensor a = dl__param_value(m, i), b = dl__param_value(ref, i);
        n = dl_shape_numel(a.shape);
        for (same = 0, k = 0; k < n; k++) same += (a.data[k] == 0.0f) == (b.data[k] == 0.0f);
        DL_CHECK_EQ_INT(same, n);
        DL_CHECK_EQ_INT(zeros(m, i), (size_t)(0.6 * n + 0.5));
    }
    dl_evaluate(m, &test, &mt);
    DL_CHECK(mt.accuracy > 0.8f);
    /* the gradual schedule reaches the target exactly at the end */
    dl_model_free(m);
    m = trained(&train);
    po.initial_sparsity = 0.0f; po.sparsity = 0.7f; po.frequency = 10;
    DL_CHECK_EQ_INT(dl_prune(m, &po, &train, &f), DL_OK);
    for (i = 0; i < dl_model_tensor_count(m); i += 2)
        DL_CHECK_EQ_INT(zeros(m, i), (size_t)(0.7 * dl_shape_numel(dl__param_value(m, i).shape) + 0.5));
    dl_model_free(m);
    dl_model_free(ref);
    dl_dataset_free(&train); dl_dataset_free(&test);
}

/* Every encoding through a file: values back exactly as in memory, sizes as the
   encodings promise, and the file smaller than the fp32 one. */
DL_TEST(encodings_roundtrip_and_shrink)
{
    dl_dataset train, test;
    size_t f32_size = 0, f32_payload = 0, payload;
    int variant;
    blobs(&train, 300, 8);
    blobs(&test, 100, 9);
    for (variant = 0; variant < 5; variant++) {   /* f32, fp16, prune, prune+fp16, prune+int8 */
        dl_model *m = trained(&train), *back;
        dl_prune_opts po;
        float *a, *b;
        int i, want0;
        memset(&po, 0, sizeof po);
        po.sparsity = 0.8f;
        if (variant >= 2) dl_prune(m, &po, NULL, NULL);
        if (variant == 1 || variant == 3) DL_CHECK_EQ_INT(dl_model_to_fp16(m), DL_OK);
        if (variant == 4) DL_CHECK_EQ_INT(dl_quantize_int8(m, NULL), DL_OK);
        want0 = variant == 0 ? DL_ENC_F32 : variant == 1 ? DL_ENC_F16 : variant == 2 ? DL_ENC_SPARSE_F32
              : variant == 3 ? DL_ENC_SPARSE_F16 : DL_ENC_SPARSE_INT8;
        payload = 0;
        for (i = 0; i < dl_model_tensor_count(m); i++) {
            dl_tensor_info info;
            dl_model_tensor_info(m, i, &info);
            payload += info.bytes;
            if (i % 2 == 0) DL_CHECK_EQ_INT(info.encoding, want0);
            else DL_CHECK_EQ_INT(info.encoding, variant == 1 || variant == 3 ? DL_ENC_F16 : DL_ENC_F32);
        }
        DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
        if (variant == 0) { f32_size = file_size(TMP); f32_payload = payload; }
        else {
            /* the tensors' bytes shrink by the encoding's ratio; the file by the same
               bytes (its layer records and names are the same in every variant) */
            printf("  variant %d (%s): %zu bytes, fp32 %zu; tensors %zu bytes, fp32 %zu\n", variant,
                   dl_encoding_name(want0), file_size(TMP), f32_size, payload, f32_payload);
            DL_CHECK(payload < f32_payload * (variant == 1 ? 0.55 : variant == 4 ? 0.2 : 0.5));
            DL_CHECK_EQ_INT((int)(f32_size - file_size(TMP)), (int)(f32_payload - payload));
        }
        back = dl_load(TMP);
        DL_CHECK(back != NULL);
        if (!back) { dl_model_free(m); continue; }
        for (i = 0; i < dl_model_tensor_count(m); i++) {
            dl_tensor x = dl__param_value(m, i), y = dl__param_value(back, i);
            dl_tensor_info ia, ib;
            dl_model_tensor_info(m, i, &ia);
            dl_model_tensor_info(back, i, &ib);
            DL_CHECK(memcmp(x.data, y.data, dl_shape_numel(x.shape) * sizeof(float)) == 0);
            DL_CHECK(ia.encoding == ib.encoding && ia.bytes == ib.bytes && ia.nonzeros == ib.nonzeros);
        }
        a = predict(m, &test);
        b = predict(back, &test);
        DL_CHECK(a && b && memcmp(a, b, (size_t)test.n * 3 * sizeof(float)) == 0);
        free(a); free(b);
        dl_model_free(m);
        dl_model_free(back);
    }
    remove(TMP);
    dl_dataset_free(&train); dl_dataset_free(&test);
}

/* ---- damaged encodings ---- */

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p;
    *len = file_size(path);
    p = (unsigned char *)malloc(*len + 1);
    if (!f || fread(p, 1, *len, f) != *len) *len = 0;
    if (f) fclose(f);
    return p;
}

static void put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24); }

/* Writes p with a patched CRC, so only the encoding is wrong. */
static void spit(const char *path, unsigned char *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    put32(p + len - 4, dl_crc32(0, p, len - 4));
    fwrite(p, 1, len, f);
    fclose(f);
}

/* Offset of the dtype field of the tensor called name. */
static size_t find_dtype(const unsigned char *p, size_t len, const char *name)
{
    size_t i, n = strlen(name);
    for (i = 4; i + n + 4 < len; i++)
        if (p[i - 4] == n && !p[i - 3] && memcmp(p + i, name, n) == 0) return i + n;
    return 0;
}

static void expect_reject(unsigned char *p, size_t len, const char *what1, const char *what2)
{
    dl_model *m;
    spit(TMP, p, len);
    m = dl_load(TMP);
    DL_CHECK(m == NULL);
    DL_CHECK_STR_CONTAINS(dl_last_error(), what1);
    DL_CHECK_STR_CONTAINS(dl_last_error(), what2);
    dl_model_free(m);
}

/* tests/data/v1-f32.dlc was written by dlcore before the new encodings existed
   (a 6-5-3 MLP, seed 42): it loads, and saving it again (as the current format
   version, whose layer records are longer) gives the same tensor bytes, so the f32
   encoding did not change. Version 1's header before the layer records is 112 bytes,
   each layer record 20. */
DL_TEST(old_f32_file_loads_and_resaves_identically)
{
    size_t la, lb;
    unsigned char *a = slurp("tests/data/v1-f32.dlc", &la), *b;
    dl_model *m = dl_load("tests/data/v1-f32.dlc");
    dl_tensor_info info;
    DL_CHECK(la > 100);
    DL_CHECK(m != NULL);
    if (!m) { free(a); return; }
    DL_CHECK_EQ_INT(dl_model_tensor_info(m, 0, &info), DL_OK);
    DL_CHECK_EQ_INT(info.encoding, DL_ENC_F32);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    b = slurp(TMP, &lb);
    {
        size_t tensors = la - 4 - (112 + 20 * (size_t)m->n_layers);
        DL_CHECK(lb > tensors + 4 && memcmp(a + la - 4 - tensors, b + lb - 4 - tensors, tensors) == 0);
    }
    free(a); free(b);
    remove(TMP);
    dl_model_free(m);
}

DL_TEST(bad_encodings_rejected)
{
    dl_model *m = mlp(13);
    dl_prune_opts po;
    unsigned char *orig, *p;
    size_t len, d1, d2, d3;
    memset(&po, 0, sizeof po);
    po.sparsity = 0.5f;
    dl_prune(m, &po, NULL, NULL);
    dl_quantize_int8(m, NULL);
    dl_save(m, TMP);
    orig = slurp(TMP, &len);
    p = (unsigned char *)malloc(len);
    d1 = find_dtype(orig, len, "dense_1.w");
    d2 = find_dtype(orig, len, "dense_1.b");
    d3 = find_dtype(orig, len, "dense_2.w");
    DL_CHECK(len > 100 && d1 && d2 && d3);
    DL_CHECK_EQ_INT(orig[d1], DL_ENC_SPARSE_INT8);
    /* an unknown dtype */
    memcpy(p, orig, len); put32(p + d1, 9);
    expect_reject(p, len, "tensor 'dense_1.w' has dtype 9 at offset", "known");
    /* int8 on a bias */
    memcpy(p, orig, len); put32(p + d2, DL_ENC_INT8);
    expect_reject(p, len, "'dense_1.b' is int8", "offset");
    /* the non-zero count disagrees with the bitmask (count sits after dtype, rank, 2 dims) */
    memcpy(p, orig, len); put32(p + d1 + 16, (uint32_t)(orig[d1 + 16] | orig[d1 + 17] << 8) + 1);
    expect_reject(p, len, "'dense_1.w' has a bitmask at offset", "bits set");
    /* more non-zeros than elements */
    memcpy(p, orig, len); put32(p + d1 + 16, 100000);
    expect_reject(p, len, "'dense_1.w' claims 100000 non-zeros", "offset");
    /* a negative scale: after count (4), bitmask (ceil(960 / 8) = 120), flags and range (12) */
    memcpy(p, orig, len); put32(p + d1 + 20 + 120 + 12, 0xbf800000u);
    expect_reject(p, len, "'dense_1.w' has scale -1 for output 0 at offset", "positive");
    /* bad flags */
    memcpy(p, orig, len); put32(p + d1 + 20 + 120, 7);
    expect_reject(p, len, "'dense_1.w' has int8 flags 7", "offset");
    /* the file cut inside the values: header says a smaller size, CRC right */
    memcpy(p, orig, len);
    {
        size_t cut = d1 + 20 + 120 + 12 + 40 * 4 + 10, i;
        memcpy(p + cut, orig + len - 4, 4);
        for (i = 0; i < 8; i++) p[8 + i] = (unsigned char)((uint64_t)(cut + 4) >> (8 * i));
        expect_reject(p, cut + 4, "tensor 'dense_1.w' data needs", "at offset");
    }
    /* the original still loads */
    spit(TMP, orig, len);
    {
        dl_model *b = dl_load(TMP);
        DL_CHECK(b != NULL && dl_model_is_int8(b));
        dl_model_free(b);
    }
    remove(TMP);
    free(orig); free(p);
    dl_model_free(m);
}

/* ---- int8 convolutional networks ---- */

/* One conv layer, int8 against the same layer with the dequantized weights in float.
   Each input value is rounded to the image's grid of step s = (max(x, 0) - min(x, 0))
   / 127, by at most s / 2; so an output moves by at most s / 2 times the sum of |w|
   over its patch. A patch gathered from the wrong pixels, a wrong pad value or a
   wrong stride breaks that bound by far. */
static void int8_conv_case(dl_shape in, dl_layer conv, const char *what)
{
    dl_model *m = dl_sequential(in), *f;
    dl_rng r;
    float *x, *y8, *yf;
    int n = 5, i, ins, outs, bad = 0, kh = conv.kh, kw = conv.kw;
    dl_add(m, conv);
    dl_add(m, dl_flatten());
    dl_model_seed(m, 11);
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_MSE, dl_adam(1e-3f)), DL_OK);
    ins = dl_input_size(m);
    outs = dl_output_size(m);
    x = (float *)malloc((size_t)n * ins * sizeof(float));
    y8 = (float *)malloc((size_t)n * outs * sizeof(float));
    yf = (float *)malloc((size_t)n * outs * sizeof(float));
    dl_rng_seed(&r, 5);
    for (i = 0; i < n * ins; i++) x[i] = dl_rng_normal(&r) + 0.3f;
    DL_CHECK_EQ_INT(dl_quantize_int8(m, NULL), DL_OK);
    DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
    f = dl_load(TMP);
    DL_CHECK(f != NULL && dl_model_is_int8(f));
    if (!f) { dl_model_free(m); free(x); free(y8); free(yf); return; }
    DL_CHECK_EQ_INT(dl_model_dequantize(f), DL_OK);   /* float, with the dequantized weights */
    DL_CHECK_EQ_INT(dl_predict(m, x, n, y8), DL_OK);
    DL_CHECK_EQ_INT(dl_predict(f, x, n, yf), DL_OK);
    {
        const int8_t *w8 = NULL;
        const float *sc = NULL;
        int c = in.ndim == 3 ? in.d[2] : 1, oc = conv.units, K = kh * kw * c, b, o, k;
        double wabs_max = 0.0;
        DL_CHECK_EQ_INT(dl_model_int8_weights(m, 0, &w8, &sc, NULL), DL_OK);
        for (o = 0; o < oc; o++) {   /* the whole patch's sum bounds any output's */
            double sum = 0.0;
            for (k = 0; k < K; k++) sum += fabs((double)w8[(size_t)k * oc + o] * sc[o]);
            if (sum > wabs_max) wabs_max = sum;
        }
        for (b = 0; b < n; b++) {
            float lo = 0.0f, hi = 0.0f, s;
            for (i = 0; i < ins; i++) { lo = fminf(lo, x[b * ins + i]); hi = fmaxf(hi, x[b * ins + i]); }
            s = (hi - lo) / 127.0f;
            for (i = 0; i < outs; i++) {
                double d = fabs((double)y8[b * outs + i] - yf[b * outs + i]);
                if (d > 0.5 * s * wabs_max * 1.001 + 1e-5) bad++;
            }
        }
    }
    if (bad) printf("  %s: %d of %d outputs outside the rounding bound\n", what, bad, n * outs);
    DL_CHECK_EQ_INT(bad, 0);
    {   /* and not the float result by chance: the int8 path rounds */
        int differ = 0;
        for (i = 0; i < n * outs; i++) differ += y8[i] != yf[i];
        DL_CHECK(differ > 0);
    }
    remove(TMP);
    dl_model_free(m); dl_model_free(f);
    free(x); free(y8); free(yf);
}

DL_TEST(int8_conv_within_the_rounding_bound_of_float)
{
    dl_conv2d_opts o;
    memset(&o, 0, sizeof o);
    o.padding = DL_PAD_EXPLICIT; o.pad_top = 1; o.pad_bottom = 2; o.pad_left = 0; o.pad_right = 1;
    o.stride_h = 2; o.dil_w = 2;
    int8_conv_case(DL_SHAPE(9, 8, 3), dl_conv2d(6, 3, 2, DL_LINEAR, &o), "explicit pads, stride 2, dilation 2");
    memset(&o, 0, sizeof o);
    o.padding = DL_PAD_SAME;
    int8_conv_case(DL_SHAPE(7, 7, 16), dl_conv2d(20, 3, 3, DL_RELU, &o), "same, relu, 16 channels");
    int8_conv_case(DL_SHAPE(10, 12), dl_conv2d(4, 5, 5, DL_LINEAR, NULL), "2-D samples, 5x5 valid");
    memset(&o, 0, sizeof o);
    o.stride_h = o.stride_w = 3; o.no_bias = 1; o.padding = DL_PAD_SAME;
    int8_conv_case(DL_SHAPE(11, 13, 5), dl_conv2d(7, 4, 4, DL_LINEAR, &o), "same with stride 3, even kernel, no bias");
}

/* 8x8 grey images with a bright 3x3 square in one of three places, plus noise. */
static void squares(dl_dataset *d, int n, uint64_t seed)
{
    dl_rng r;
    int i, j, shape[2] = { 8, 8 };
    dl_dataset_alloc(d, n, 2, shape, 1);
    dl_rng_seed(&r, seed);
    for (i = 0; i < n; i++) {
        int c = (int)dl_rng_below(&r, 3), y0 = c == 0 ? 0 : 4, x0 = c == 1 ? 0 : 4;
        for (j = 0; j < 64; j++) {
            int y = j / 8, x = j % 8, in = y >= y0 && y < y0 + 3 && x >= x0 && x < x0 + 3;
            d->x[i * 64 + j] = (in ? 0.8f : 0.1f) + 0.15f * dl_rng_normal(&r);
        }
        d->y[i] = (float)c;
    }
    d->n_classes = 3;
}

/* A trained CNN (batch norm, pooling, a depthwise conv that stays float) quantized:
   close to fp32, the same on every ISA (to float rounding) and batch size (bits), the kernels int8 in the
   file and the grouped one f32, and bit for bit back from a file, dynamic and static. */
DL_TEST(int8_cnn_close_to_fp32_and_through_files)
{
    static const char *const isas[] = { "scalar", "avx2", "avx512", "neon" };
    dl_dataset train, test;
    dl_metrics m32, m8;
    int st, i, t;
    squares(&train, 600, 21);
    squares(&test, 300, 22);
    for (st = 0; st < 2; st++) {
        dl_model *m = dl_sequential(DL_SHAPE(8, 8)), *back;
        dl_conv2d_opts same, dw;
        dl_fit_opts fo;
        dl_quant_opts qo;
        dl_tensor_info info;
        float *p32, *p8, *pb, one[3];
        int worst = 0;
        memset(&same, 0, sizeof same); same.padding = DL_PAD_SAME;
        memset(&dw, 0, sizeof dw); dw.padding = DL_PAD_SAME; dw.groups = 8;
        memset(&fo, 0, sizeof fo); fo.epochs = 3; fo.batch = 16; fo.progress = DL_PROGRESS_NONE;
        memset(&qo, 0, sizeof qo);
        if (st) { qo.calib = &train; qo.calib_batches = 1; }
        dl_model_seed(m, 3);
        dl_add(m, dl_conv2d(8, 3, 3, DL_RELU, &same));
        dl_add(m, dl_batch_norm(NULL));
        dl_add(m, dl_max_pool2d(2, 2, NULL));
        dl_add(m, dl_conv2d(8, 3, 3, DL_RELU, &dw));
        dl_add(m, dl_conv2d(12, 3, 3, DL_RELU, NULL));
        dl_add(m, dl_avg_pool2d(2, 2, NULL));
        dl_add(m, dl_global_avg_pool2d());
        dl_add(m, dl_dense(3, DL_SOFTMAX));
        DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-2f)), DL_OK);
        DL_CHECK_EQ_INT(dl_fit(m, &train, &fo), DL_OK);
        DL_CHECK_EQ_INT(dl_evaluate(m, &test, &m32), DL_OK);
        p32 = (float *)malloc((size_t)test.n * 3 * sizeof(float));
        p8 = (float *)malloc((size_t)test.n * 3 * sizeof(float));
        pb = (float *)malloc((size_t)test.n * 3 * sizeof(float));
        DL_CHECK_EQ_INT(dl_predict(m, test.x, test.n, p32), DL_OK);
        DL_CHECK_EQ_INT(dl_quantize_int8(m, &qo), DL_OK);
        DL_CHECK_EQ_INT(dl_predict(m, test.x, test.n, p8), DL_OK);
        DL_CHECK_EQ_INT(dl_evaluate(m, &test, &m8), DL_OK);
        printf("  %s: accuracy fp32 %.4f int8 %.4f\n", st ? "static" : "dynamic", (double)m32.accuracy, (double)m8.accuracy);
        DL_CHECK(m32.accuracy > 0.9f);
        DL_CHECK(fabsf(m8.accuracy - m32.accuracy) <= 0.02f);
        for (i = 0; i < test.n * 3; i++) if (fabsf(p8[i] - p32[i]) > 0.05f) worst++;
        DL_CHECK(worst <= test.n * 3 / 50);
        /* conv2d_1.w int8, the depthwise conv2d_2.w f32, conv2d_3.w int8 (graph order:
           w, b per conv, BN's gamma and beta after the first) */
        for (i = 0; i < dl_model_tensor_count(m); i++) {
            DL_CHECK_EQ_INT(dl_model_tensor_info(m, i, &info), DL_OK);
            if (!strcmp(info.name, "conv2d_1.w") || !strcmp(info.name, "conv2d_3.w") || !strcmp(info.name, "dense_1.w"))
                DL_CHECK_EQ_INT(info.encoding, DL_ENC_INT8);
            else
                DL_CHECK_EQ_INT(info.encoding, DL_ENC_F32);
        }
        DL_CHECK_EQ_INT(dl_model_int8_weights(m, 3, NULL, NULL, NULL), DL_ERR);   /* the depthwise conv */
        DL_CHECK_EQ_INT(dl_model_int8_weights(m, 4, NULL, NULL, NULL), DL_OK);
        for (t = 0; t < 4; t++) {   /* the float depthwise conv rounds differently per ISA */
            float diff = 0.0f;
            if (dl_set_isa(isas[t]) != DL_OK) continue;
            DL_CHECK_EQ_INT(dl_predict(m, test.x, test.n, pb), DL_OK);
            for (i = 0; i < test.n * 3; i++) diff = fmaxf(diff, fabsf(pb[i] - p8[i]));
            DL_CHECK(diff <= 1e-5f);
        }
        dl_set_isa(NULL);
        for (t = 1; t <= 2; t++) {   /* an image's work is the same on any thread */
            dl_set_threads(t);
            DL_CHECK_EQ_INT(dl_predict(m, test.x, test.n, pb), DL_OK);
            DL_CHECK(memcmp(pb, p8, (size_t)test.n * 3 * sizeof(float)) == 0);
        }
        dl_set_threads(0);
        for (i = 0; i < test.n; i += 41) {
            DL_CHECK_EQ_INT(dl_predict(m, test.x + (size_t)i * 64, 1, one), DL_OK);
            DL_CHECK(memcmp(one, p8 + i * 3, sizeof one) == 0);
        }
        DL_CHECK_EQ_INT(dl_save(m, TMP), DL_OK);
        back = dl_load(TMP);
        DL_CHECK(back != NULL && dl_model_is_int8(back));
        if (back) {
            DL_CHECK_EQ_INT(dl_predict(back, test.x, test.n, pb), DL_OK);
            DL_CHECK(memcmp(pb, p8, (size_t)test.n * 3 * sizeof(float)) == 0);
            dl_model_free(back);
        }
        if (st == 0) {   /* int8 on the depthwise kernel is refused, naming it */
            size_t len, d;
            unsigned char *p = slurp(TMP, &len);
            d = find_dtype(p, len, "conv2d_2.w");
            DL_CHECK(d != 0);
            if (d) { put32(p + d, DL_ENC_INT8); expect_reject(p, len, "'conv2d_2.w' is int8", "ungrouped conv2d"); }
            free(p);
        }
        remove(TMP);
        free(p32); free(p8); free(pb);
        dl_model_free(m);
    }
    dl_dataset_free(&train); dl_dataset_free(&test);
}

DL_TEST_MAIN()
