/* bench_peak.c - the fp32 FMA peak of one core, the ceiling every other case is
   quoted against. Twelve independent accumulators hide the FMA latency (4 cycles
   on two pipes on Zen 4 needs at least 8 in flight); each run() does
   args[0] steps of 12 vector FMAs. Compiled without -march: the vector code
   lives in functions that carry their own target attribute. */
#include "bench/bench.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define BENCH_X86 1
#endif

/* The sum of all chains is stored here so that no chain is dead code. */
static volatile float peak_sink;

#ifdef BENCH_X86
#define FMA12(fma, acc, m, c)                                              \
    acc##0 = fma(acc##0, m, c); acc##1 = fma(acc##1, m, c);                \
    acc##2 = fma(acc##2, m, c); acc##3 = fma(acc##3, m, c);                \
    acc##4 = fma(acc##4, m, c); acc##5 = fma(acc##5, m, c);                \
    acc##6 = fma(acc##6, m, c); acc##7 = fma(acc##7, m, c);                \
    acc##8 = fma(acc##8, m, c); acc##9 = fma(acc##9, m, c);                \
    acc##10 = fma(acc##10, m, c); acc##11 = fma(acc##11, m, c)

/* m slightly below 1 and a small c keep the values finite and normal for any
   number of steps, so no denormal or overflow slow path is ever taken. Each
   chain starts from its own value: identical chains would be merged into one
   by the compiler (common subexpressions), leaving a latency-bound loop. */
__attribute__((target("avx2,fma")))
static void fma_chains_ymm(long steps)
{
    __m256 m = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-6f);
    __m256 v0 = _mm256_set1_ps(1.00f), v1 = _mm256_set1_ps(1.01f), v2 = _mm256_set1_ps(1.02f), v3 = _mm256_set1_ps(1.03f);
    __m256 v4 = _mm256_set1_ps(1.04f), v5 = _mm256_set1_ps(1.05f), v6 = _mm256_set1_ps(1.06f), v7 = _mm256_set1_ps(1.07f);
    __m256 v8 = _mm256_set1_ps(1.08f), v9 = _mm256_set1_ps(1.09f), v10 = _mm256_set1_ps(1.10f), v11 = _mm256_set1_ps(1.11f);
    float out[8];
    long i;
    for (i = 0; i < steps; i++) {
        FMA12(_mm256_fmadd_ps, v, m, c);
    }
    v0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3)),
                       _mm256_add_ps(_mm256_add_ps(v4, v5), _mm256_add_ps(v6, v7)));
    v0 = _mm256_add_ps(v0, _mm256_add_ps(_mm256_add_ps(v8, v9), _mm256_add_ps(v10, v11)));
    _mm256_storeu_ps(out, v0);
    peak_sink = out[0];
}

__attribute__((target("avx512f")))
static void fma_chains_zmm(long steps)
{
    __m512 m = _mm512_set1_ps(0.99999f), c = _mm512_set1_ps(1e-6f);
    __m512 v0 = _mm512_set1_ps(1.00f), v1 = _mm512_set1_ps(1.01f), v2 = _mm512_set1_ps(1.02f), v3 = _mm512_set1_ps(1.03f);
    __m512 v4 = _mm512_set1_ps(1.04f), v5 = _mm512_set1_ps(1.05f), v6 = _mm512_set1_ps(1.06f), v7 = _mm512_set1_ps(1.07f);
    __m512 v8 = _mm512_set1_ps(1.08f), v9 = _mm512_set1_ps(1.09f), v10 = _mm512_set1_ps(1.10f), v11 = _mm512_set1_ps(1.11f);
    long i;
    for (i = 0; i < steps; i++) {
        FMA12(_mm512_fmadd_ps, v, m, c);
    }
    v0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3)),
                       _mm512_add_ps(_mm512_add_ps(v4, v5), _mm512_add_ps(v6, v7)));
    v0 = _mm512_add_ps(v0, _mm512_add_ps(_mm512_add_ps(v8, v9), _mm512_add_ps(v10, v11)));
    peak_sink = _mm512_reduce_add_ps(v0);
}
#endif

static const char *lacks_avx2(const bench_case *c)
{
    (void)c;
#ifdef BENCH_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 0;
#endif
    return "the CPU lacks AVX2+FMA";
}

static const char *lacks_avx512(const bench_case *c)
{
    (void)c;
#ifdef BENCH_X86
    if (__builtin_cpu_supports("avx512f")) return 0;
#endif
    return "the CPU lacks AVX-512F";
}

static int peak_setup(bench_state *s) { (void)s; return 0; }
static int peak_teardown(bench_state *s) { (void)s; return 0; }

static void peak_run_ymm(bench_state *s)
{
#ifdef BENCH_X86
    fma_chains_ymm(s->c->args[0]);
#else
    (void)s;
#endif
}

static void peak_run_zmm(bench_state *s)
{
#ifdef BENCH_X86
    fma_chains_zmm(s->c->args[0]);
#else
    (void)s;
#endif
}

/* steps x 12 chains x lanes x 2 flops per FMA. */
static double peak_flops(const bench_case *c)
{
    return (double)c->args[0] * 12.0 * (double)c->args[1] * 2.0;
}

#define PEAK_STEPS 100000L
static const bench_case peak_cases[] = {
    { "fma/t1", "avx2", "peak", 0, 1, lacks_avx2, peak_setup, peak_run_ymm, peak_teardown,
      0, peak_flops, { PEAK_STEPS, 8 } },
    { "fma/t1", "avx512", "peak", 0, 1, lacks_avx512, peak_setup, peak_run_zmm, peak_teardown,
      0, peak_flops, { PEAK_STEPS, 16 } },
};

const bench_suite bench_suite_peak = {
    "peak", 0, 1, peak_cases, (int)(sizeof peak_cases / sizeof peak_cases[0]), 0
};
