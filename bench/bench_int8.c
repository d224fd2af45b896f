/* bench_int8.c - the int8 GEMM (u8 activations x s8 weights -> s32) of dlcore against
   oneDNN's int8 matmul, on the MNIST MLP's shapes (batch 256, 32 and 1) and one square:
   dlcore-avx512 is the VNNI kernel (where the CPU has VNNI), dlcore-avx2 the vpmaddubsw
   one; fp32-* is dl_sgemm on the same shape, the figure the int8 kernels must beat.
   Both sides get their weights packed once, outside the timed loop (oneDNN: the layout
   it asks for through format "any", reordered in setup). One thread: oneDNN's OpenMP
   runtime reads OMP_NUM_THREADS, which bench_peer_env sets to 1 when unset.
   Every result is checked against a plain loop in teardown. */
#include "bench.h"
#include "dlcore.h"
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    int m, n, k;
    uint8_t *a;          /* m x k, 0..127 */
    int8_t *b;           /* n x k (row j: output j) */
    int8_t *bp;          /* dl_pack_s8 */
    int32_t *c;
    float *fa, *fb, *fc; /* the fp32 comparison */
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_primitive_t mm;
    dnnl_memory_t ma, mb, mc;
} i8_ctx;

static unsigned i8_seed = 99u;
static unsigned i8_next(void) { i8_seed = i8_seed * 1664525u + 1013904223u; return i8_seed >> 8; }

static int i8_alloc(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)calloc(1, sizeof *x);
    int i;
    if (!x) return -1;
    s->ctx = x;
    x->m = (int)s->c->args[0]; x->n = (int)s->c->args[1]; x->k = (int)s->c->args[2];
    x->a = (uint8_t *)malloc((size_t)x->m * x->k);
    x->b = (int8_t *)malloc((size_t)x->n * x->k);
    x->c = (int32_t *)malloc((size_t)x->m * x->n * 4);
    if (!x->a || !x->b || !x->c) return -1;
    for (i = 0; i < x->m * x->k; i++) x->a[i] = (uint8_t)(i8_next() % 128);
    for (i = 0; i < x->n * x->k; i++) x->b[i] = (int8_t)((int)(i8_next() % 255) - 127);
    return 0;
}

static int i8_check(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)s->ctx;
    int i, j, p;
    for (i = 0; i < x->m; i += 7)
        for (j = 0; j < x->n; j++) {
            int32_t ref = 0;
            for (p = 0; p < x->k; p++) ref += (int32_t)x->a[(size_t)i * x->k + p] * x->b[(size_t)j * x->k + p];
            if (x->c[(size_t)i * x->n + j] != ref) {
                snprintf(s->msg, sizeof s->msg, "C[%d][%d] = %d, expected %d", i, j, x->c[(size_t)i * x->n + j], ref);
                return -1;
            }
        }
    return 0;
}

static int i8_teardown(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)s->ctx;
    int rc = 0;
    if (!x) return 0;
    if (x->c && !x->fc) rc = i8_check(s);
    if (x->mm) dnnl_primitive_destroy(x->mm);
    if (x->ma) dnnl_memory_destroy(x->ma);
    if (x->mb) dnnl_memory_destroy(x->mb);
    if (x->mc) dnnl_memory_destroy(x->mc);
    if (x->st) dnnl_stream_destroy(x->st);
    if (x->eng) dnnl_engine_destroy(x->eng);
    free(x->a); free(x->b); free(x->bp); free(x->c); free(x->fa); free(x->fb); free(x->fc); free(x);
    s->ctx = 0;
    return rc;
}

static const char *i8_dlcore_unavailable(const bench_case *c)
{
    static char why[256];
    if (dl_set_isa(c->param) != DL_OK) {
        snprintf(why, sizeof why, "dl_set_isa(\"%s\") failed: %s", c->param, dl_last_error());
        return why;
    }
    if (!strcmp(c->impl, "dlcore-avx512") && strcmp(dl_int8_kernel_name(), "avx512vnni") != 0)
        return "no AVX-512 VNNI on this CPU (the avx512 choice runs the AVX2 int8 kernel)";
    return 0;
}

static int i8_dlcore_setup(bench_state *s)
{
    i8_ctx *x;
    if (dl_set_isa(s->c->param) != DL_OK || dl_set_threads(1) != DL_OK)
        return snprintf(s->msg, sizeof s->msg, "%s", dl_last_error()), -1;
    if (i8_alloc(s)) return -1;
    x = (i8_ctx *)s->ctx;
    x->bp = (int8_t *)malloc(dl_s8_packed_size(x->n, x->k));
    if (!x->bp) return -1;
    dl_pack_s8(x->n, x->k, x->b, x->k, x->bp);
    return 0;
}

static void i8_dlcore_run(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)s->ctx;
    dl_gemm_u8s8s32(x->m, x->n, x->k, x->a, x->k, x->bp, x->c, x->n);
}

static int i8_fp32_setup(bench_state *s)
{
    i8_ctx *x;
    int i;
    if (dl_set_isa(s->c->param) != DL_OK || dl_set_threads(1) != DL_OK)
        return snprintf(s->msg, sizeof s->msg, "%s", dl_last_error()), -1;
    if (i8_alloc(s)) return -1;
    x = (i8_ctx *)s->ctx;
    x->fa = (float *)malloc((size_t)x->m * x->k * 4);
    x->fb = (float *)malloc((size_t)x->k * x->n * 4);
    x->fc = (float *)malloc((size_t)x->m * x->n * 4);
    if (!x->fa || !x->fb || !x->fc) return -1;
    for (i = 0; i < x->m * x->k; i++) x->fa[i] = (float)x->a[i];
    for (i = 0; i < x->k * x->n; i++) x->fb[i] = (float)x->b[i];
    return 0;
}

static void i8_fp32_run(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)s->ctx;
    dl_sgemm(0, 0, x->m, x->n, x->k, 1.0f, x->fa, x->k, x->fb, x->n, 0.0f, x->fc, x->n);
}

#define DNNL_TRY(call) do { if ((call) != dnnl_success) { snprintf(s->msg, sizeof s->msg, "oneDNN: %s failed", #call); return -1; } } while (0)

static int i8_onednn_setup(bench_state *s)
{
    i8_ctx *x;
    dnnl_memory_desc_t ad, bd, bany, cd;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd, rpd;
    dnnl_primitive_t reorder;
    dnnl_memory_t braw;
    dnnl_exec_arg_t rargs[2];
    dnnl_dims_t da, db, dc;
    if (i8_alloc(s)) return -1;
    x = (i8_ctx *)s->ctx;
    da[0] = x->m; da[1] = x->k; db[0] = x->k; db[1] = x->n; dc[0] = x->m; dc[1] = x->n;
    DNNL_TRY(dnnl_engine_create(&x->eng, dnnl_cpu, 0));
    DNNL_TRY(dnnl_stream_create(&x->st, x->eng, dnnl_stream_default_flags));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&ad, 2, da, dnnl_u8, dnnl_ab));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bd, 2, db, dnnl_s8, dnnl_ba));   /* our n x k rows */
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bany, 2, db, dnnl_s8, dnnl_format_tag_any));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&cd, 2, dc, dnnl_s32, dnnl_ab));
    DNNL_TRY(dnnl_matmul_desc_init(&desc, &ad, &bany, NULL, &cd));
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &desc, NULL, x->eng, NULL));
    DNNL_TRY(dnnl_primitive_create(&x->mm, pd));
    DNNL_TRY(dnnl_memory_create(&x->ma, &ad, x->eng, x->a));
    DNNL_TRY(dnnl_memory_create(&x->mc, &cd, x->eng, x->c));
    DNNL_TRY(dnnl_memory_create(&x->mb, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), x->eng, DNNL_MEMORY_ALLOCATE));
    DNNL_TRY(dnnl_memory_create(&braw, &bd, x->eng, x->b));
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, &bd, x->eng, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), x->eng, NULL));
    DNNL_TRY(dnnl_primitive_create(&reorder, rpd));
    rargs[0].arg = DNNL_ARG_FROM; rargs[0].memory = braw;
    rargs[1].arg = DNNL_ARG_TO; rargs[1].memory = x->mb;
    DNNL_TRY(dnnl_primitive_execute(reorder, x->st, 2, rargs));
    DNNL_TRY(dnnl_stream_wait(x->st));
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(braw);
    return 0;
}

static void i8_onednn_run(bench_state *s)
{
    i8_ctx *x = (i8_ctx *)s->ctx;
    dnnl_exec_arg_t args[3];
    args[0].arg = DNNL_ARG_SRC; args[0].memory = x->ma;
    args[1].arg = DNNL_ARG_WEIGHTS; args[1].memory = x->mb;
    args[2].arg = DNNL_ARG_DST; args[2].memory = x->mc;
    dnnl_primitive_execute(x->mm, x->st, 3, args);
    dnnl_stream_wait(x->st);
}

/* The int8 ceiling: 12 independent vpdpbusd chains (64 multiply-adds each, counted as
   2 operations like an FMA's), so peak_pct says how it compares with the fp32 FMA
   peak, and each kernel's GOP/s can be read against it. */
static volatile int i8_peak_sink;
#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f,avx512vnni"))) static void i8_vnni_chains(long steps)
{
    __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01ff01ff);
    __m512i v0 = _mm512_set1_epi32(0), v1 = _mm512_set1_epi32(1), v2 = _mm512_set1_epi32(2), v3 = _mm512_set1_epi32(3);
    __m512i v4 = _mm512_set1_epi32(4), v5 = _mm512_set1_epi32(5), v6 = _mm512_set1_epi32(6), v7 = _mm512_set1_epi32(7);
    __m512i v8 = _mm512_set1_epi32(8), v9 = _mm512_set1_epi32(9), v10 = _mm512_set1_epi32(10), v11 = _mm512_set1_epi32(11);
    long i;
    /* as in dlcore's kernel: with the intrinsic, gcc 12 wraps each vpdpbusd in register copies */
#define I8_DP(v) __asm__("vpdpbusd %2, %1, %0" : "+v"(v) : "v"(a), "v"(b))
    for (i = 0; i < steps; i++) {
        I8_DP(v0); I8_DP(v1); I8_DP(v2); I8_DP(v3); I8_DP(v4); I8_DP(v5);
        I8_DP(v6); I8_DP(v7); I8_DP(v8); I8_DP(v9); I8_DP(v10); I8_DP(v11);
    }
#undef I8_DP
    v0 = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(v0, v1), _mm512_add_epi32(v2, v3)),
                          _mm512_add_epi32(_mm512_add_epi32(v4, v5), _mm512_add_epi32(v6, v7)));
    i8_peak_sink = _mm512_reduce_add_epi32(_mm512_add_epi32(v0, _mm512_add_epi32(_mm512_add_epi32(v8, v9), _mm512_add_epi32(v10, v11))));
}
#endif
static const char *i8_lacks_vnni(const bench_case *c)
{
    (void)c;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx512vnni")) return 0;
#endif
    return "the CPU lacks AVX-512 VNNI";
}
static int i8_peak_setup(bench_state *s) { (void)s; return 0; }
static int i8_peak_teardown(bench_state *s) { (void)s; return 0; }
static void i8_peak_run(bench_state *s)
{
#if defined(__GNUC__) && defined(__x86_64__)
    i8_vnni_chains(s->c->args[0]);
#else
    (void)s;
#endif
}

#define I8_GROUP(set, m, n, k) set "/" #m "x" #n "x" #k "/t1"
#define I8_ONEDNN(m, n, k, set) { I8_GROUP(set, m, n, k), "onednn", set, 0, 1, 0, i8_onednn_setup, \
      i8_onednn_run, i8_teardown, 2.0 * m * n * k, 0, { m, n, k } }
#define I8_DLCORE(isa, m, n, k, set) { I8_GROUP(set, m, n, k), "dlcore-" isa, set, isa, 1, i8_dlcore_unavailable, \
      i8_dlcore_setup, i8_dlcore_run, i8_teardown, 2.0 * m * n * k, 0, { m, n, k } }
#define I8_FP32(isa, m, n, k, set) { I8_GROUP(set, m, n, k), "fp32-sgemm-" isa, set, isa, 1, i8_dlcore_unavailable, \
      i8_fp32_setup, i8_fp32_run, i8_teardown, 2.0 * m * n * k, 0, { m, n, k } }
#define I8_SHAPE(m, n, k, set) I8_ONEDNN(m, n, k, set), I8_DLCORE("avx512", m, n, k, set), \
      I8_DLCORE("avx2", m, n, k, set), I8_FP32("avx512", m, n, k, set), I8_FP32("avx2", m, n, k, set)

static const bench_case int8_cases[] = {
    { "peak/vnni/t1", "vpdpbusd-zmm", "peak", 0, 1, i8_lacks_vnni, i8_peak_setup, i8_peak_run, i8_peak_teardown,
      100000.0 * 12 * 64 * 2, 0, { 100000 } },
    /* 784-128-10 MLP inference: layer 1 and 2 at batch 256, layer 1 at batch 32 and 1 */
    I8_SHAPE(256, 128, 784, "mlp"),
    I8_SHAPE(256, 10, 128, "mlp"),
    I8_SHAPE(32, 128, 784, "mlp"),
    I8_SHAPE(1, 128, 784, "mlp"),
    I8_SHAPE(512, 512, 512, "square"),
};

static const char *onednn_info(void)
{
    static char line[160];
    const dnnl_version_t *v = dnnl_version();
    snprintf(line, sizeof line, "peer: oneDNN %d.%d.%d (%s), u8 x s8 -> s32 matmul, weights in its own layout",
             v->major, v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");
    return line;
}

const bench_suite bench_suite_int8 = {
    "int8", "onednn", 0, int8_cases, (int)(sizeof int8_cases / sizeof int8_cases[0]), onednn_info
};
