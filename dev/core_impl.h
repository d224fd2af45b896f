/* ---- 2. Shapes, tensors, random numbers ------------------------------------------ */

DLDEF dl_shape dl_shape_make(int d0, int d1, int d2, int d3)
{
    dl_shape s;
    int v[DL_MAX_DIMS], i;
    v[0] = d0; v[1] = d1; v[2] = d2; v[3] = d3;
    memset(&s, 0, sizeof s);
    for (i = 0; i < DL_MAX_DIMS && v[i] > 0; i++) s.d[s.ndim++] = v[i];
    return s;
}

DLDEF size_t dl_shape_numel(dl_shape s)
{
    size_t n = 1;
    int i;
    for (i = 0; i < s.ndim; i++) n *= (size_t)s.d[i];
    return n;
}

DLDEF char *dl_shape_str(dl_shape s, char *buf, size_t size)
{
    size_t used = 0;
    int i;
    if (!size) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (i = 0; i < s.ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ",%d" : "%d", s.d[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

DLDEF void dl_rng_seed(dl_rng *r, uint64_t seed)
{
    r->state = 0;
    r->inc = (seed << 1) | 1u;
    dl_rng_u32(r);
    r->state += 0x853c49e6748fea9bULL ^ seed;
    dl_rng_u32(r);
}

DLDEF uint32_t dl_rng_u32(dl_rng *r)
{
    uint64_t old = r->state;
    uint32_t xorshifted, rot;
    r->state = old * 6364136223846793005ULL + r->inc;
    xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32 - rot) & 31));
}

DLDEF uint32_t dl_rng_below(dl_rng *r, uint32_t n)
{
    /* Rejection keeps the draw unbiased when n does not divide 2^32. */
    uint32_t threshold, x;
    if (n <= 1) return 0;
    threshold = (uint32_t)(-n) % n;
    do x = dl_rng_u32(r); while (x < threshold);
    return x % n;
}

DLDEF float dl_rng_uniform(dl_rng *r)
{
    return (float)(dl_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

DLDEF float dl_rng_normal(dl_rng *r)
{
    /* Box-Muller; 1 - u keeps the log argument in (0, 1]. */
    float u1 = 1.0f - dl_rng_uniform(r), u2 = dl_rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

DLDEF void dl_rng_shuffle(dl_rng *r, int *idx, int n)
{
    int i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)dl_rng_below(r, (uint32_t)i + 1), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* ---- 3. Optimizer kernels ------------------------------------------------------------
   Adam touches every weight once per step, and at batch 32 the MNIST MLP's GEMMs
   take ~120 us per step: a scalar loop with sqrt and divide over 100k weights
   would cost as much again. So the inner loop has a kernel per ISA, side by side:
       m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
       w = w decay - lr (m c1) / (sqrt(v c2) + eps)          (g = grad * scale) */
typedef struct dl__adam_k { float b1, b2, eps, c1, c2, lr, decay, scale; } dl__adam_k;

static void dl__adam_scalar(float *w, float *m, float *v, const float *g, size_t i, size_t n, const dl__adam_k *k)
{
    for (; i < n; i++) {
        float gr = g[i] * k->scale;
        m[i] = k->b1 * m[i] + (1.0f - k->b1) * gr;
        v[i] = k->b2 * v[i] + (1.0f - k->b2) * gr * gr;
        w[i] = w[i] * k->decay - k->lr * (m[i] * k->c1) / (sqrtf(v[i] * k->c2) + k->eps);
    }
}

#ifdef DL__X86
/* The x86 kernels fold the constants: with K = lr c1 / sqrt(c2) and eps' = eps / sqrt(c2),
       w = w decay - K m / (sqrt(v) + eps'),
   and sqrt and divide (~10 cycles each per zmm on Zen 4, the bottleneck of a plain
   version) become rsqrt/rcp estimates refined by one Newton step (~23 bits from
   AVX2's 12-bit estimates, ~27 from AVX-512's 14-bit ones). The floor on v keeps
   v * rsqrt(v) at 0 for v = 0 rather than 0 * inf. */
typedef struct dl__adam_c { float b1, b2, nb1, nb2, k, eps, decay; } dl__adam_c;

static dl__adam_c dl__adam_fold(const dl__adam_k *k)
{
    dl__adam_c c;
    float rc2 = 1.0f / sqrtf(k->c2);
    c.b1 = k->b1; c.b2 = k->b2;
    c.nb1 = (1.0f - k->b1) * k->scale;
    c.nb2 = (1.0f - k->b2) * k->scale * k->scale;
    c.k = k->lr * k->c1 * rc2;
    c.eps = k->eps * rc2;
    c.decay = k->decay;
    return c;
}

DL__TARGET("avx2,fma") static void dl__adam_avx2(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    dl__adam_c c = dl__adam_fold(k);
    const __m256 b1 = _mm256_set1_ps(c.b1), nb1 = _mm256_set1_ps(c.nb1), b2 = _mm256_set1_ps(c.b2);
    const __m256 nb2 = _mm256_set1_ps(c.nb2), kk = _mm256_set1_ps(c.k), eps = _mm256_set1_ps(c.eps);
    const __m256 decay = _mm256_set1_ps(c.decay), tiny = _mm256_set1_ps(1e-30f), half = _mm256_set1_ps(0.5f);
    const __m256 three_halves = _mm256_set1_ps(1.5f), two = _mm256_set1_ps(2.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_fmadd_ps(nb1, gi, _mm256_mul_ps(b1, _mm256_loadu_ps(m + i)));
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(nb2, gi), gi, _mm256_mul_ps(b2, _mm256_loadu_ps(v + i)));
        __m256 x = _mm256_max_ps(vi, tiny), r = _mm256_rsqrt_ps(x), den, q;
        r = _mm256_mul_ps(r, _mm256_fnmadd_ps(_mm256_mul_ps(half, x), _mm256_mul_ps(r, r), three_halves));
        den = _mm256_fmadd_ps(x, r, eps);
        q = _mm256_rcp_ps(den);
        q = _mm256_mul_ps(q, _mm256_fnmadd_ps(den, q, two));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(w + i, _mm256_fmsub_ps(_mm256_loadu_ps(w + i), decay, _mm256_mul_ps(_mm256_mul_ps(kk, mi), q)));
    }
    dl__adam_scalar(w, m, v, g, i, n, k);
}

/* g++ 12 reports its own AVX-512 intrinsics' undefined-vector idiom as
   "may be used uninitialized"; the warning is false. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
DL__TARGET("avx512f") static void dl__adam_avx512(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    dl__adam_c c = dl__adam_fold(k);
    const __m512 b1 = _mm512_set1_ps(c.b1), nb1 = _mm512_set1_ps(c.nb1), b2 = _mm512_set1_ps(c.b2);
    const __m512 nb2 = _mm512_set1_ps(c.nb2), kk = _mm512_set1_ps(c.k), eps = _mm512_set1_ps(c.eps);
    const __m512 decay = _mm512_set1_ps(c.decay), tiny = _mm512_set1_ps(1e-30f), half = _mm512_set1_ps(0.5f);
    const __m512 three_halves = _mm512_set1_ps(1.5f), two = _mm512_set1_ps(2.0f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i);
        __m512 mi = _mm512_fmadd_ps(nb1, gi, _mm512_mul_ps(b1, _mm512_loadu_ps(m + i)));
        __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(nb2, gi), gi, _mm512_mul_ps(b2, _mm512_loadu_ps(v + i)));
        __m512 x = _mm512_max_ps(vi, tiny), r = _mm512_rsqrt14_ps(x), den, q;
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(_mm512_mul_ps(half, x), _mm512_mul_ps(r, r), three_halves));
        den = _mm512_fmadd_ps(x, r, eps);
        q = _mm512_rcp14_ps(den);
        q = _mm512_mul_ps(q, _mm512_fnmadd_ps(den, q, two));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(w + i, _mm512_fmsub_ps(_mm512_loadu_ps(w + i), decay, _mm512_mul_ps(_mm512_mul_ps(kk, mi), q)));
    }
    dl__adam_scalar(w, m, v, g, i, n, k);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

#ifdef DL__NEON
static void dl__adam_neon(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    const float32x4_t b1 = vdupq_n_f32(k->b1), nb1 = vdupq_n_f32(1.0f - k->b1), b2 = vdupq_n_f32(k->b2);
    const float32x4_t nb2 = vdupq_n_f32(1.0f - k->b2), c1 = vdupq_n_f32(k->c1), c2 = vdupq_n_f32(k->c2);
    const float32x4_t eps = vdupq_n_f32(k->eps), lr = vdupq_n_f32(k->lr), decay = vdupq_n_f32(k->decay);
    const float32x4_t scale = vdupq_n_f32(k->scale);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t gr = vmulq_f32(vld1q_f32(g + i), scale);
        float32x4_t mi = vaddq_f32(vmulq_f32(b1, vld1q_f32(m + i)), vmulq_f32(nb1, gr));
        float32x4_t vi = vaddq_f32(vmulq_f32(b2, vld1q_f32(v + i)), vmulq_f32(nb2, vmulq_f32(gr, gr)));
        float32x4_t den = vaddq_f32(vsqrtq_f32(vmulq_f32(vi, c2)), eps);
        float32x4_t step = vdivq_f32(vmulq_f32(lr, vmulq_f32(mi, c1)), den);
        vst1q_f32(m + i, mi);
        vst1q_f32(v + i, vi);
        vst1q_f32(w + i, vsubq_f32(vmulq_f32(vld1q_f32(w + i), decay), step));
    }
    dl__adam_scalar(w, m, v, g, i, n, k);
}
#endif

static void dl__adam(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    dl__init();
    switch (dl__isa_cur) {
#ifdef DL__X86
    case DL__ISA_AVX512: dl__adam_avx512(w, m, v, g, n, k); return;
    case DL__ISA_AVX2:   dl__adam_avx2(w, m, v, g, n, k); return;
#endif
#ifdef DL__NEON
    case DL__ISA_NEON:   dl__adam_neon(w, m, v, g, n, k); return;
#endif
    default:             dl__adam_scalar(w, m, v, g, 0, n, k); return;
    }
}

/* ReLU forward and backward. Written as compares and masks because a branch on
   the sign of an activation is mispredicted half the time: as plain C with a
   ternary it cost ~10 cycles per element. SSE2 is the x86-64 baseline. */
static void dl__relu_fwd(const float *x, float *y, size_t n)
{
    size_t i = 0;
#if defined(DL__X86)
    const __m128 z = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_max_ps(_mm_loadu_ps(x + i), z));
#elif defined(DL__NEON)
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmaxq_f32(vld1q_f32(x + i), z));
#endif
    for (; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void dl__relu_bwd(const float *x, const float *dy, float *dx, size_t n)
{
    size_t i = 0;
#if defined(DL__X86)
    const __m128 z = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        __m128 keep = _mm_and_ps(_mm_loadu_ps(dy + i), _mm_cmpgt_ps(_mm_loadu_ps(x + i), z));
        _mm_storeu_ps(dx + i, _mm_add_ps(_mm_loadu_ps(dx + i), keep));
    }
#elif defined(DL__NEON)
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) {
        uint32x4_t pos = vcgtq_f32(vld1q_f32(x + i), z);
        float32x4_t keep = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(dy + i)), pos));
        vst1q_f32(dx + i, vaddq_f32(vld1q_f32(dx + i), keep));
    }
#endif
    for (; i < n; i++) dx[i] += dy[i] * (float)(x[i] > 0.0f);
}

/* ---- 3. Graph: nodes and the op table --------------------------------------------- */

typedef struct dl__node {
    int      op;
    int      in[3], n_in;
    dl_shape shape;           /* current shape; d[0] is the batch when `batched` */
    int      batched;
    int      is_param, needs_grad, regularize;
    float    fparam;          /* op parameter: leaky slope, dropout rate */
    float   *val, *grad, *aux;
    float   *m, *v;           /* optimizer state (parameters only) */
    size_t   aux_floats;      /* scratch size at max batch */
    size_t   grad_off;        /* placement found by the planner */
    int      last_use;        /* highest node index reading this node */
    unsigned touched;         /* backward pass in which grad was last claimed */
    int      fresh;           /* claimed this pass, not yet written: the first writer overwrites */
    int      keep_grad;       /* asked for with dl_require_grad: never shares its buffer */
    char     name[48];
} dl__node;

struct dl_graph {
    dl__node *nodes;
    int       n, cap;
    int      *params, n_params;
    float    *arena;
    size_t    arena_floats;
    int       max_batch, batch, training, planned;
    unsigned  pass;           /* backward pass counter for lazy gradient zeroing */
    long      opt_t;          /* optimizer steps taken (Adam's bias correction) */
    int       freeze_dropout; /* gradcheck: reuse the last mask */
    uint64_t  dropout_key;    /* from the seed; with the counter, names every mask bit */
    uint64_t  dropout_ctr;
    dl_rng    rng;
};

/* One record per op: how to infer the shape, how much scratch it needs, how to
   run it forward, and how to push gradients back to its inputs. `view` ops share
   their input's values (reshape), so the planner gives them no value buffer. */
typedef struct dl__op {
    const char *name;
    int (*infer)(dl_graph *g, dl__node *n);
    size_t (*aux)(const dl_graph *g, const dl__node *n);   /* floats at max batch */
    int (*forward)(dl_graph *g, dl__node *n);
    void (*backward)(dl_graph *g, dl__node *n);
    int view;
} dl__op;

enum {
    DL__OP_INPUT, DL__OP_PARAM, DL__OP_MATMUL, DL__OP_DENSE, DL__OP_ADD, DL__OP_MUL,
    DL__OP_RELU, DL__OP_LEAKY_RELU, DL__OP_SIGMOID, DL__OP_TANH, DL__OP_SOFTMAX,
    DL__OP_LOG_SOFTMAX, DL__OP_DROPOUT, DL__OP_RESHAPE, DL__OP_SUM, DL__OP_MEAN,
    DL__OP_MSE, DL__OP_BCE_LOGITS, DL__OP_SPARSE_CE
};

static const char *dl__op_name(int op);   /* from the op table, below */
static dl__node *dl__in(dl_graph *g, const dl__node *n, int i) { return &g->nodes[n->in[i]]; }
static size_t dl__numel(const dl__node *n) { return dl_shape_numel(n->shape); }
static int dl__last_dim(const dl__node *n) { return n->shape.ndim ? n->shape.d[n->shape.ndim - 1] : 1; }

/* Gradients accumulate over a node's consumers, and buffers are shared between
   nodes whose lifetimes do not overlap, so the first write of a pass must
   overwrite. A GEMM does that for free with beta = 0 (no memset, no read of C);
   loops that add call dl__grad_acc, which zeroes a fresh buffer first. */
static float *dl__grad_acc(dl__node *n)
{
    if (n->fresh) { memset(n->grad, 0, dl__numel(n) * sizeof(float)); n->fresh = 0; }
    return n->grad;
}

static float dl__grad_beta(dl__node *n)
{
    float beta = n->fresh ? 0.0f : 1.0f;
    n->fresh = 0;
    return beta;
}

/* ---- 3. Ops: shape inference ------------------------------------------------------ */

static int dl__shape_err(const char *op, const char *what, dl_shape a, dl_shape b)
{
    char sa[64], sb[64];
    return dl__error("%s: %s: %s and %s", op, what, dl_shape_str(a, sa, sizeof sa), dl_shape_str(b, sb, sizeof sb));
}

static int dl__infer_same(dl_graph *g, dl__node *n) { n->shape = dl__in(g, n, 0)->shape; return DL_OK; }

static int dl__infer_scalar(dl_graph *g, dl__node *n) { (void)g; n->shape.ndim = 0; n->batched = 0; return DL_OK; }

static int dl__infer_matmul(dl_graph *g, dl__node *n)
{
    dl__node *a = dl__in(g, n, 0), *w = dl__in(g, n, 1);
    const char *op = dl__op_name(n->op);
    if (w->shape.ndim != 2 || w->batched) return dl__shape_err(op, "right operand must be a 2-D [k, n] matrix", a->shape, w->shape);
    if (a->shape.ndim < 1 || dl__last_dim(a) != w->shape.d[0])
        return dl__shape_err(op, "inner dimensions differ", a->shape, w->shape);
    n->shape = a->shape;
    n->shape.d[n->shape.ndim - 1] = w->shape.d[1];
    if (n->op == DL__OP_DENSE && n->in[2] != DL_NONE) {
        dl__node *b = dl__in(g, n, 2);
        if (b->shape.ndim != 1 || b->shape.d[0] != w->shape.d[1] || b->batched)
            return dl__shape_err(op, "bias must be 1-D of the output width", n->shape, b->shape);
    }
    return DL_OK;
}

/* b broadcasts onto a when it equals a's trailing dims. */
static int dl__infer_broadcast(dl_graph *g, dl__node *n)
{
    dl__node *a = dl__in(g, n, 0), *b = dl__in(g, n, 1);
    int i, off = a->shape.ndim - b->shape.ndim;
    if (off < 0 || (b->batched && (!a->batched || off != 0)))
        return dl__shape_err(dl__op_name(n->op), "shapes do not broadcast", a->shape, b->shape);
    for (i = 0; i < b->shape.ndim; i++)
        if (b->shape.d[i] != a->shape.d[off + i])
            return dl__shape_err(dl__op_name(n->op), "shapes do not broadcast", a->shape, b->shape);
    n->shape = a->shape;
    return DL_OK;
}

static int dl__infer_reshape(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0);
    dl_shape want = n->shape;   /* the requested sample shape, put there by dl__push */
    size_t have = dl__numel(x) / (x->batched ? (size_t)x->shape.d[0] : 1);
    int i;
    if (!x->batched || dl_shape_numel(want) != have || want.ndim > DL_MAX_DIMS - 1) {
        char s[64];
        return dl__error("reshape: %s holds %zu values per sample, not %s", x->name, have, dl_shape_str(want, s, sizeof s));
    }
    n->shape.ndim = want.ndim + 1;
    n->shape.d[0] = x->shape.d[0];
    for (i = 0; i < want.ndim; i++) n->shape.d[i + 1] = want.d[i];
    return DL_OK;
}

static int dl__infer_loss(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    if (n->op == DL__OP_SPARSE_CE) {
        size_t rows = dl__numel(p) / (size_t)dl__last_dim(p);
        if (p->shape.ndim < 1 || dl__numel(t) != rows || t->batched != p->batched)
            return dl__shape_err("sparse_ce", "needs logits [n, classes] and n labels", p->shape, t->shape);
    } else if (dl__numel(p) != dl__numel(t) || p->batched != t->batched) {
        return dl__shape_err(dl__op_name(n->op), "prediction and target differ in size", p->shape, t->shape);
    }
    return dl__infer_scalar(g, n);
}

/* ---- 3. Ops: forward and backward ------------------------------------------------- */

static void dl__matmul_dims(dl_graph *g, const dl__node *n, int *m, int *k, int *nn)
{
    dl__node *w = dl__in(g, n, 1);
    *k = w->shape.d[0];
    *nn = w->shape.d[1];
    *m = (int)(dl__numel(dl__in(g, n, 0)) / (size_t)*k);
}

static int dl__fwd_matmul(dl_graph *g, dl__node *n)
{
    int m, k, nn;
    dl__matmul_dims(g, n, &m, &k, &nn);
    if (n->op == DL__OP_DENSE && n->in[2] != DL_NONE) {
        /* Seeding C with the bias rows lets the GEMM add x w on top (beta = 1). */
        const float *b = dl__in(g, n, 2)->val;
        int i;
        for (i = 0; i < m; i++) memcpy(n->val + (size_t)i * nn, b, (size_t)nn * sizeof(float));
        dl_sgemm(0, 0, m, nn, k, 1.0f, dl__in(g, n, 0)->val, k, dl__in(g, n, 1)->val, nn, 1.0f, n->val, nn);
    } else {
        dl_sgemm(0, 0, m, nn, k, 1.0f, dl__in(g, n, 0)->val, k, dl__in(g, n, 1)->val, nn, 0.0f, n->val, nn);
    }
    return DL_OK;
}

static void dl__bwd_matmul(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0), *w = dl__in(g, n, 1);
    int m, k, nn;
    dl__matmul_dims(g, n, &m, &k, &nn);
    if (x->needs_grad) dl_sgemm(0, 1, m, k, nn, 1.0f, n->grad, nn, w->val, nn, dl__grad_beta(x), x->grad, k);
    if (w->needs_grad) dl_sgemm(1, 0, k, nn, m, 1.0f, x->val, k, n->grad, nn, dl__grad_beta(w), w->grad, nn);
    if (n->op == DL__OP_DENSE && n->in[2] != DL_NONE && dl__in(g, n, 2)->needs_grad) {
        float *db = dl__grad_acc(dl__in(g, n, 2));
        int i, j;
        for (i = 0; i < m; i++) {
            const float *dy = n->grad + (size_t)i * nn;
            for (j = 0; j < nn; j++) db[j] += dy[j];
        }
    }
}

static int dl__fwd_add(dl_graph *g, dl__node *n)
{
    const float *a = dl__in(g, n, 0)->val, *b = dl__in(g, n, 1)->val;
    size_t i, j, na = dl__numel(n), nb = dl__numel(dl__in(g, n, 1));
    for (i = 0; i < na; i += nb)
        for (j = 0; j < nb; j++) n->val[i + j] = a[i + j] + b[j];
    return DL_OK;
}

static void dl__bwd_add(dl_graph *g, dl__node *n)
{
    dl__node *a = dl__in(g, n, 0), *b = dl__in(g, n, 1);
    size_t i, j, na = dl__numel(n), nb = dl__numel(b);
    if (a->needs_grad) { float *da = dl__grad_acc(a); for (i = 0; i < na; i++) da[i] += n->grad[i]; }
    if (b->needs_grad) {
        float *db = dl__grad_acc(b);
        for (i = 0; i < na; i += nb)
            for (j = 0; j < nb; j++) db[j] += n->grad[i + j];
    }
}

static int dl__fwd_mul(dl_graph *g, dl__node *n)
{
    const float *a = dl__in(g, n, 0)->val, *b = dl__in(g, n, 1)->val;
    size_t i, j, na = dl__numel(n), nb = dl__numel(dl__in(g, n, 1));
    for (i = 0; i < na; i += nb)
        for (j = 0; j < nb; j++) n->val[i + j] = a[i + j] * b[j];
    return DL_OK;
}

static void dl__bwd_mul(dl_graph *g, dl__node *n)
{
    dl__node *a = dl__in(g, n, 0), *b = dl__in(g, n, 1);
    size_t i, j, na = dl__numel(n), nb = dl__numel(b);
    if (a->needs_grad) dl__grad_acc(a);
    if (b->needs_grad) dl__grad_acc(b);
    for (i = 0; i < na; i += nb)
        for (j = 0; j < nb; j++) {
            if (a->needs_grad) a->grad[i + j] += n->grad[i + j] * b->val[j];
            if (b->needs_grad) b->grad[j] += n->grad[i + j] * a->val[i + j];
        }
}

/* Elementwise activations: forward from x, backward from y where that is cheaper. */
static int dl__fwd_unary(dl_graph *g, dl__node *n)
{
    const float *x = dl__in(g, n, 0)->val;
    float *y = n->val, alpha = n->fparam;
    size_t i, len = dl__numel(n);
    switch (n->op) {
    case DL__OP_RELU:       dl__relu_fwd(x, y, len); break;
    case DL__OP_LEAKY_RELU: for (i = 0; i < len; i++) y[i] = x[i] > 0.0f ? x[i] : alpha * x[i]; break;
    case DL__OP_SIGMOID:    for (i = 0; i < len; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case DL__OP_TANH:       for (i = 0; i < len; i++) y[i] = tanhf(x[i]); break;
    default: DLCORE_ASSERT(0);
    }
    return DL_OK;
}

static void dl__bwd_unary(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    const float *x = xn->val, *y = n->val, *dy = n->grad;
    float *dx, alpha = n->fparam;
    size_t i, len = dl__numel(n);
    if (!xn->needs_grad) return;
    dx = dl__grad_acc(xn);
    /* Masks as arithmetic, not branches: the signs of activations are random. */
    switch (n->op) {
    case DL__OP_RELU:       dl__relu_bwd(x, dy, dx, len); break;
    case DL__OP_LEAKY_RELU: for (i = 0; i < len; i++) dx[i] += dy[i] * (x[i] > 0.0f ? 1.0f : alpha); break;
    case DL__OP_SIGMOID:    for (i = 0; i < len; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]); break;
    case DL__OP_TANH:       for (i = 0; i < len; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]); break;
    default: DLCORE_ASSERT(0);
    }
}

/* Row-wise softmax with the max subtracted, so large logits cannot overflow. */
static void dl__softmax_rows(const float *x, float *y, size_t rows, int cols, int log_out)
{
    size_t r;
    int j;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)cols;
        float *yr = y + r * (size_t)cols, mx = xr[0], sum = 0.0f;
        for (j = 1; j < cols; j++) if (xr[j] > mx) mx = xr[j];
        for (j = 0; j < cols; j++) sum += expf(xr[j] - mx);
        if (log_out) {
            float lse = mx + logf(sum);
            for (j = 0; j < cols; j++) yr[j] = xr[j] - lse;
        } else {
            float inv = 1.0f / sum;
            for (j = 0; j < cols; j++) yr[j] = expf(xr[j] - mx) * inv;
        }
    }
}

static int dl__fwd_softmax(dl_graph *g, dl__node *n)
{
    int cols = dl__last_dim(n);
    dl__softmax_rows(dl__in(g, n, 0)->val, n->val, dl__numel(n) / (size_t)cols, cols, n->op == DL__OP_LOG_SOFTMAX);
    return DL_OK;
}

static void dl__bwd_softmax(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    int cols = dl__last_dim(n), j;
    size_t r, rows = dl__numel(n) / (size_t)cols;
    if (!xn->needs_grad) return;
    for (r = 0; r < rows; r++) {
        const float *y = n->val + r * cols, *dy = n->grad + r * cols;
        float *dx = dl__grad_acc(xn) + r * cols, s = 0.0f;
        if (n->op == DL__OP_SOFTMAX) {
            for (j = 0; j < cols; j++) s += dy[j] * y[j];
            for (j = 0; j < cols; j++) dx[j] += y[j] * (dy[j] - s);
        } else {
            for (j = 0; j < cols; j++) s += dy[j];
            for (j = 0; j < cols; j++) dx[j] += dy[j] - expf(y[j]) * s;
        }
    }
}

static size_t dl__aux_dropout(const dl_graph *g, const dl__node *n)
{
    return dl__numel(n) / (n->batched ? (size_t)n->shape.d[0] : 1) * (size_t)(n->batched ? g->max_batch : 1);
}

/* Inverted dropout: survivors are scaled by 1/(1-rate) in training, so
   evaluation is the identity. The mask is kept for backward. Its bits come from
   a counter hashed with SplitMix64's finaliser, four elements of 16 bits per
   hash (the rate is honoured to 1/65536): the hashes are independent of each
   other, so they run in parallel where a sequential generator would chain. */
static uint64_t dl__mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int dl__fwd_dropout(dl_graph *g, dl__node *n)
{
    const float *x = dl__in(g, n, 0)->val;
    size_t i, j, len = dl__numel(n);
    float rate = n->fparam, keep = 1.0f / (1.0f - rate);
    uint32_t cut = (uint32_t)(rate * 65536.0f + 0.5f);
    if (!g->training || rate <= 0.0f) {
        memcpy(n->val, x, len * sizeof(float));
        return DL_OK;
    }
    if (!g->freeze_dropout) {
        uint64_t base = g->dropout_key + g->dropout_ctr * 0x9e3779b97f4a7c15ULL;
        uint32_t keep_bits, bits;
        memcpy(&keep_bits, &keep, 4);
        for (i = 0; i < len; i += 4) {
            uint64_t h = dl__mix64(base + (uint64_t)(i / 4) * 0x9e3779b97f4a7c15ULL);
            /* An integer select: int-to-float conversions here stalled on a
               false dependency and cost more than the hashing. */
            for (j = 0; j < 4 && i + j < len; j++) {
                bits = keep_bits & (0u - (uint32_t)(((h >> (16 * j)) & 0xFFFFu) >= cut));
                memcpy(n->aux + i + j, &bits, 4);
            }
        }
        g->dropout_ctr += (len + 3) / 4;
    }
    for (i = 0; i < len; i++) n->val[i] = x[i] * n->aux[i];
    return DL_OK;
}

static void dl__bwd_dropout(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    size_t i, len = dl__numel(n);
    float *dx;
    if (!xn->needs_grad) return;
    dx = dl__grad_acc(xn);
    if (g->training && n->fparam > 0.0f) for (i = 0; i < len; i++) dx[i] += n->grad[i] * n->aux[i];
    else for (i = 0; i < len; i++) dx[i] += n->grad[i];
}

static int dl__fwd_view(dl_graph *g, dl__node *n) { (void)g; (void)n; return DL_OK; }

static void dl__bwd_view(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    size_t i, len = dl__numel(n);
    if (xn->needs_grad) { float *dx = dl__grad_acc(xn); for (i = 0; i < len; i++) dx[i] += n->grad[i]; }
}

static int dl__fwd_reduce(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    size_t i, len = dl__numel(xn);
    double s = 0.0;   /* double: a sum over a whole batch loses digits in float */
    for (i = 0; i < len; i++) s += xn->val[i];
    n->val[0] = (float)(n->op == DL__OP_MEAN ? s / (double)len : s);
    return DL_OK;
}

static void dl__bwd_reduce(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    size_t i, len = dl__numel(xn);
    float d = n->grad[0] / (n->op == DL__OP_MEAN ? (float)len : 1.0f);
    if (xn->needs_grad) { float *dx = dl__grad_acc(xn); for (i = 0; i < len; i++) dx[i] += d; }
}

static int dl__fwd_mse(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    size_t i, len = dl__numel(p);
    double s = 0.0;
    for (i = 0; i < len; i++) { double d = (double)p->val[i] - t->val[i]; s += d * d; }
    n->val[0] = (float)(s / (double)len);
    return DL_OK;
}

static void dl__bwd_mse(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    size_t i, len = dl__numel(p);
    float s = 2.0f * n->grad[0] / (float)len;
    if (p->needs_grad) { float *dp = dl__grad_acc(p); for (i = 0; i < len; i++) dp[i] += s * (p->val[i] - t->val[i]); }
    if (t->needs_grad) { float *dt = dl__grad_acc(t); for (i = 0; i < len; i++) dt[i] -= s * (p->val[i] - t->val[i]); }
}

/* max(z,0) - z t + log(1 + exp(-|z|)) equals -t log s(z) - (1-t) log(1-s(z))
   without ever taking the log of a rounded-to-zero probability. */
static int dl__fwd_bce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    size_t i, len = dl__numel(p);
    double s = 0.0;
    for (i = 0; i < len; i++) {
        float z = p->val[i];
        s += (z > 0.0f ? z : 0.0f) - z * t->val[i] + log1pf(expf(-fabsf(z)));
    }
    n->val[0] = (float)(s / (double)len);
    return DL_OK;
}

static void dl__bwd_bce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    size_t i, len = dl__numel(p);
    float s = n->grad[0] / (float)len;
    if (p->needs_grad) dl__grad_acc(p);
    if (t->needs_grad) dl__grad_acc(t);
    for (i = 0; i < len; i++) {
        float z = p->val[i];
        if (p->needs_grad) p->grad[i] += s * (1.0f / (1.0f + expf(-z)) - t->val[i]);
        if (t->needs_grad) t->grad[i] -= s * z;
    }
}

static size_t dl__aux_sparse_ce(const dl_graph *g, const dl__node *n)
{
    const dl__node *p = &g->nodes[n->in[0]];
    return dl__numel(p) / (p->batched ? (size_t)p->shape.d[0] : 1) * (size_t)(p->batched ? g->max_batch : 1);
}

/* Mean over rows of logsumexp(z) - z[label]; softmax probabilities are kept in
   the scratch buffer because backward is (p - onehot) / rows. */
static int dl__fwd_sparse_ce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    int cols = dl__last_dim(p);
    size_t r, rows = dl__numel(p) / (size_t)cols;
    double s = 0.0;
    dl__softmax_rows(p->val, n->aux, rows, cols, 1);
    for (r = 0; r < rows; r++) {
        float lf = t->val[r];
        int label = (int)lf;
        if (!(lf >= 0.0f) || (float)label != lf || label >= cols)
            return dl__error("sparse_ce: label %g of row %zu is not a class in [0, %d)", (double)lf, r, cols);
        s -= n->aux[r * cols + label];
    }
    for (r = 0; r < rows * (size_t)cols; r++) n->aux[r] = expf(n->aux[r]);
    n->val[0] = (float)(s / (double)rows);
    return DL_OK;
}

static void dl__bwd_sparse_ce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    int cols = dl__last_dim(p), j;
    size_t r, rows = dl__numel(p) / (size_t)cols;
    float s = n->grad[0] / (float)rows;
    if (!p->needs_grad) return;
    dl__grad_acc(p);
    for (r = 0; r < rows; r++) {
        float *dz = p->grad + r * cols;
        const float *pr = n->aux + r * cols;
        int label = (int)t->val[r];
        for (j = 0; j < cols; j++) dz[j] += s * (pr[j] - (j == label ? 1.0f : 0.0f));
    }
}

static const dl__op dl__ops[] = {
    /* name          infer                 aux                forward          backward        view */
    { "input",       NULL,                 NULL,              NULL,            NULL,           0 },
    { "param",       NULL,                 NULL,              NULL,            NULL,           0 },
    { "matmul",      dl__infer_matmul,     NULL,              dl__fwd_matmul,  dl__bwd_matmul, 0 },
    { "dense",       dl__infer_matmul,     NULL,              dl__fwd_matmul,  dl__bwd_matmul, 0 },
    { "add",         dl__infer_broadcast,  NULL,              dl__fwd_add,     dl__bwd_add,    0 },
    { "mul",         dl__infer_broadcast,  NULL,              dl__fwd_mul,     dl__bwd_mul,    0 },
    { "relu",        dl__infer_same,       NULL,              dl__fwd_unary,   dl__bwd_unary,  0 },
    { "leaky_relu",  dl__infer_same,       NULL,              dl__fwd_unary,   dl__bwd_unary,  0 },
    { "sigmoid",     dl__infer_same,       NULL,              dl__fwd_unary,   dl__bwd_unary,  0 },
    { "tanh",        dl__infer_same,       NULL,              dl__fwd_unary,   dl__bwd_unary,  0 },
    { "softmax",     dl__infer_same,       NULL,              dl__fwd_softmax, dl__bwd_softmax, 0 },
    { "log_softmax", dl__infer_same,       NULL,              dl__fwd_softmax, dl__bwd_softmax, 0 },
    { "dropout",     dl__infer_same,       dl__aux_dropout,   dl__fwd_dropout, dl__bwd_dropout, 0 },
    { "reshape",     dl__infer_reshape,    NULL,              dl__fwd_view,    dl__bwd_view,   1 },
    { "sum",         dl__infer_scalar,     NULL,              dl__fwd_reduce,  dl__bwd_reduce, 0 },
    { "mean",        dl__infer_scalar,     NULL,              dl__fwd_reduce,  dl__bwd_reduce, 0 },
    { "mse",         dl__infer_loss,       NULL,              dl__fwd_mse,     dl__bwd_mse,    0 },
    { "bce_logits",  dl__infer_loss,       NULL,              dl__fwd_bce,     dl__bwd_bce,    0 },
    { "sparse_ce",   dl__infer_loss,       dl__aux_sparse_ce, dl__fwd_sparse_ce, dl__bwd_sparse_ce, 0 }
};

static const char *dl__op_name(int op) { return dl__ops[op].name; }

/* ---- 3. Graph building ---------------------------------------------------------- */

DLDEF dl_graph *dl_graph_new(uint64_t seed)
{
    dl_graph *g = (dl_graph *)DLCORE_MALLOC(sizeof *g);
    if (!g) { dl__error("dl_graph_new: out of memory"); return NULL; }
    memset(g, 0, sizeof *g);
    dl_rng_seed(&g->rng, seed);
    g->dropout_key = dl__mix64(seed ^ 0x6a09e667f3bcc909ULL);
    g->batch = 1;
    return g;
}

DLDEF void dl_graph_free(dl_graph *g)
{
    int i;
    if (!g) return;
    for (i = 0; i < g->n; i++)
        if (g->nodes[i].is_param) { DLCORE_FREE(g->nodes[i].val); DLCORE_FREE(g->nodes[i].grad); }
    DLCORE_FREE(g->nodes);
    DLCORE_FREE(g->params);
    DLCORE_FREE(g->arena);
    DLCORE_FREE(g);
}

static int dl__valid(const dl_graph *g, int id) { return id >= 0 && id < g->n; }

/* Appends a node for `op` over `ins`, infers its shape; returns its handle or a
   negative value (the first failing handle passes through unchanged). */
static int dl__push(dl_graph *g, int op, const int *ins, int n_in, float fparam,
                    const dl_shape *want, const char *name)
{
    dl__node *n;
    int i;
    if (!g) return dl__error("dl_graph: NULL graph");
    for (i = 0; i < n_in; i++) {
        if (ins[i] == DL_NONE && !(op == DL__OP_DENSE && i == 2))
            return dl__error("%s: input %d may not be DL_NONE", dl__ops[op].name, i);
        if (ins[i] < 0 && ins[i] != DL_NONE) return ins[i];
        if (ins[i] != DL_NONE && !dl__valid(g, ins[i]))
            return dl__error("%s: input %d is not a node of this graph", dl__ops[op].name, ins[i]);
    }
    if (g->planned) return dl__error("%s: the graph is already planned; build it completely first", dl__ops[op].name);
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 32;
        dl__node *nn = (dl__node *)DLCORE_REALLOC(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return dl__error("dl_graph: out of memory for %d nodes", cap);
        g->nodes = nn;
        g->cap = cap;
    }
    n = &g->nodes[g->n];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->n_in = n_in;
    n->fparam = fparam;
    if (want) n->shape = *want;   /* read by infer (reshape) */
    for (i = 0; i < n_in; i++) {
        n->in[i] = ins[i];
        if (ins[i] == DL_NONE) continue;
        if (g->nodes[ins[i]].batched) n->batched = 1;
        if (g->nodes[ins[i]].needs_grad) n->needs_grad = 1;
    }
    if (name) snprintf(n->name, sizeof n->name, "%s", name);
    else snprintf(n->name, sizeof n->name, "%s_%d", dl__ops[op].name, g->n);
    if (dl__ops[op].infer && dl__ops[op].infer(g, n) != DL_OK) return DL_ERR;
    return g->n++;
}

DLDEF int dl_input(dl_graph *g, const char *name, dl_shape s)
{
    int id, i;
    if (s.ndim > DL_MAX_DIMS - 1 || (s.ndim && dl_shape_numel(s) == 0))
        return dl__error("dl_input '%s': a sample has 0 to 3 positive dims", name ? name : "?");
    id = dl__push(g, DL__OP_INPUT, NULL, 0, 0, NULL, name);
    if (id < 0) return id;
    g->nodes[id].batched = 1;
    g->nodes[id].shape.ndim = s.ndim + 1;
    g->nodes[id].shape.d[0] = g->batch;
    for (i = 0; i < s.ndim; i++) g->nodes[id].shape.d[i + 1] = s.d[i];
    return id;
}

static void dl__fans(dl_shape s, float *fan_in, float *fan_out)
{
    size_t rf = 1;
    int i;
    if (s.ndim == 1) { *fan_in = *fan_out = (float)s.d[0]; return; }
    if (s.ndim == 2) { *fan_in = (float)s.d[0]; *fan_out = (float)s.d[1]; return; }
    for (i = 2; i < s.ndim; i++) rf *= (size_t)s.d[i];
    *fan_in = (float)((size_t)s.d[1] * rf);
    *fan_out = (float)((size_t)s.d[0] * rf);
}

DLDEF int dl_param(dl_graph *g, const char *name, dl_shape s, int init)
{
    dl__node *n;
    size_t i, numel = dl_shape_numel(s);
    float fan_in, fan_out, lim;
    int id;
    if (s.ndim < 1 || numel == 0)
        return dl__error("dl_param '%s': needs 1 to 4 positive dims", name ? name : "?");
    id = dl__push(g, DL__OP_PARAM, NULL, 0, 0, NULL, name);
    if (id < 0) return id;
    n = &g->nodes[id];
    n->shape = s;
    n->is_param = n->needs_grad = 1;
    n->regularize = s.ndim >= 2;
    n->val = (float *)DLCORE_MALLOC(numel * sizeof(float));
    if (!n->val) { g->n--; return dl__error("dl_param '%s': out of memory", n->name); }
    {
        int *p = (int *)DLCORE_REALLOC(g->params, (size_t)(g->n_params + 1) * sizeof(int));
        if (!p) { DLCORE_FREE(n->val); g->n--; return dl__error("dl_param: out of memory"); }
        g->params = p;
        g->params[g->n_params++] = id;
    }
    dl__fans(s, &fan_in, &fan_out);
    for (i = 0; i < numel; i++) {
        switch (init) {
        case DL_INIT_GLOROT_UNIFORM:
            lim = sqrtf(6.0f / (fan_in + fan_out));
            n->val[i] = (2.0f * dl_rng_uniform(&g->rng) - 1.0f) * lim; break;
        case DL_INIT_HE_UNIFORM:
            lim = sqrtf(6.0f / fan_in);
            n->val[i] = (2.0f * dl_rng_uniform(&g->rng) - 1.0f) * lim; break;
        case DL_INIT_HE_NORMAL:
            n->val[i] = dl_rng_normal(&g->rng) * sqrtf(2.0f / fan_in); break;
        case DL_INIT_ONES: n->val[i] = 1.0f; break;
        default: n->val[i] = 0.0f; break;
        }
    }
    return id;
}

DLDEF int dl_require_grad(dl_graph *g, int node)
{
    if (!g || !dl__valid(g, node)) return dl__error("dl_require_grad: no node %d", node);
    if (g->planned) return dl__error("dl_require_grad: call it before dl_graph_plan");
    g->nodes[node].needs_grad = g->nodes[node].keep_grad = 1;
    return DL_OK;
}

/* ---- 3. Op builders --------------------------------------------------------------- */

static int dl__op1(dl_graph *g, int op, int x, float f)
{
    int ins[1];
    ins[0] = x;
    return dl__push(g, op, ins, 1, f, NULL, NULL);
}

static int dl__op2(dl_graph *g, int op, int a, int b)
{
    int ins[2];
    ins[0] = a; ins[1] = b;
    return dl__push(g, op, ins, 2, 0, NULL, NULL);
}

DLDEF int dl_op_matmul(dl_graph *g, int a, int b) { return dl__op2(g, DL__OP_MATMUL, a, b); }
DLDEF int dl_op_add(dl_graph *g, int a, int b)    { return dl__op2(g, DL__OP_ADD, a, b); }
DLDEF int dl_op_mul(dl_graph *g, int a, int b)    { return dl__op2(g, DL__OP_MUL, a, b); }
DLDEF int dl_op_relu(dl_graph *g, int x)          { return dl__op1(g, DL__OP_RELU, x, 0); }
DLDEF int dl_op_leaky_relu(dl_graph *g, int x, float alpha) { return dl__op1(g, DL__OP_LEAKY_RELU, x, alpha); }
DLDEF int dl_op_sigmoid(dl_graph *g, int x)       { return dl__op1(g, DL__OP_SIGMOID, x, 0); }
DLDEF int dl_op_tanh(dl_graph *g, int x)          { return dl__op1(g, DL__OP_TANH, x, 0); }
DLDEF int dl_op_softmax(dl_graph *g, int x)       { return dl__op1(g, DL__OP_SOFTMAX, x, 0); }
DLDEF int dl_op_log_softmax(dl_graph *g, int x)   { return dl__op1(g, DL__OP_LOG_SOFTMAX, x, 0); }
DLDEF int dl_op_sum(dl_graph *g, int x)           { return dl__op1(g, DL__OP_SUM, x, 0); }
DLDEF int dl_op_mean(dl_graph *g, int x)          { return dl__op1(g, DL__OP_MEAN, x, 0); }
DLDEF int dl_loss_mse(dl_graph *g, int p, int t)        { return dl__op2(g, DL__OP_MSE, p, t); }
DLDEF int dl_loss_bce_logits(dl_graph *g, int z, int t) { return dl__op2(g, DL__OP_BCE_LOGITS, z, t); }
DLDEF int dl_loss_sparse_ce(dl_graph *g, int z, int y)  { return dl__op2(g, DL__OP_SPARSE_CE, z, y); }

DLDEF int dl_op_dropout(dl_graph *g, int x, float rate)
{
    if (!(rate >= 0.0f && rate < 1.0f)) return dl__error("dl_op_dropout: rate %g is not in [0, 1)", (double)rate);
    return dl__op1(g, DL__OP_DROPOUT, x, rate);
}

DLDEF int dl_op_dense(dl_graph *g, int x, int w, int bias)
{
    int ins[3];
    ins[0] = x; ins[1] = w; ins[2] = bias;
    return dl__push(g, DL__OP_DENSE, ins, 3, 0, NULL, NULL);
}

DLDEF int dl_op_reshape(dl_graph *g, int x, dl_shape sample_shape)
{
    int ins[1];
    ins[0] = x;
    return dl__push(g, DL__OP_RESHAPE, ins, 1, 0, &sample_shape, NULL);
}

DLDEF int dl_op_flatten(dl_graph *g, int x)
{
    dl_shape s;
    if (!g) return dl__error("dl_op_flatten: NULL graph");
    if (x < 0) return x;
    if (!dl__valid(g, x) || !g->nodes[x].batched) return dl__error("dl_op_flatten: node %d is not a batched node", x);
    s = dl_shape_make((int)(dl__numel(&g->nodes[x]) / (size_t)g->nodes[x].shape.d[0]), 0, 0, 0);
    return dl_op_reshape(g, x, s);
}

/* ---- 3. Planner: one arena for everything a step touches --------------------------- */

static size_t dl__round16(size_t n) { return (n + 15) & ~(size_t)15; }   /* 64-byte slots */

/* Floats the node needs at the largest batch. */
static size_t dl__numel_at(const dl__node *n, int batch)
{
    return n->batched ? dl__numel(n) / (size_t)n->shape.d[0] * (size_t)batch : dl__numel(n);
}

/* Gradients of intermediate nodes live only from their last consumer's backward
   step down to their own, so two nodes whose index intervals [i, last_use] do not
   overlap share memory. Placement: largest first, at the lowest offset free of
   every already placed, time-overlapping buffer. Returns the floats used. */
static size_t dl__place_grads(dl_graph *g, const int *order, int count)
{
    size_t top = 0;
    int a, b;
    for (a = 0; a < count; a++) {
        dl__node *na = &g->nodes[order[a]];
        size_t size = dl__round16(dl__numel_at(na, g->max_batch)), off = 0;
        int moved = 1;
        while (moved) {
            moved = 0;
            for (b = 0; b < a; b++) {
                dl__node *nb = &g->nodes[order[b]];
                size_t nbsize = dl__round16(dl__numel_at(nb, g->max_batch));
                int overlap_time = order[a] <= nb->last_use && order[b] <= na->last_use;
                if (overlap_time && off < nb->grad_off + nbsize && nb->grad_off < off + size) {
                    off = nb->grad_off + nbsize;
                    moved = 1;
                }
            }
        }
        na->grad_off = off;
        if (off + size > top) top = off + size;
    }
    return top;
}

DLDEF int dl_graph_plan(dl_graph *g, int max_batch)
{
    size_t total = 0, grads_at, grad_floats;
    int i, j, count = 0, *order;
    float *arena;
    if (!g || g->n == 0) return dl__error("dl_graph_plan: empty graph");
    if (max_batch < 1) return dl__error("dl_graph_plan: max_batch %d must be >= 1", max_batch);
    g->max_batch = max_batch;
    for (i = 0; i < g->n; i++) {
        dl__node *n = &g->nodes[i];
        n->last_use = n->keep_grad ? g->n : i;
        for (j = 0; j < n->n_in; j++)
            if (n->in[j] != DL_NONE && g->nodes[n->in[j]].last_use < i && !g->nodes[n->in[j]].keep_grad)
                g->nodes[n->in[j]].last_use = i;
        n->aux_floats = dl__ops[n->op].aux ? dl__ops[n->op].aux(g, n) : 0;
    }
    /* Values and scratch: everything stays alive for backward, so no sharing. */
    for (i = 0; i < g->n; i++) {
        dl__node *n = &g->nodes[i];
        if (!n->is_param && !dl__ops[n->op].view) total += dl__round16(dl__numel_at(n, max_batch));
        total += dl__round16(n->aux_floats);
    }
    order = (int *)DLCORE_MALLOC((size_t)g->n * sizeof(int));
    if (!order) return dl__error("dl_graph_plan: out of memory");
    for (i = 0; i < g->n; i++)
        if (g->nodes[i].needs_grad && !g->nodes[i].is_param) order[count++] = i;
    for (i = 1; i < count; i++) {   /* insertion sort, largest first */
        int v = order[i];
        size_t sv = dl__numel_at(&g->nodes[v], max_batch);
        for (j = i; j > 0 && dl__numel_at(&g->nodes[order[j - 1]], max_batch) < sv; j--) order[j] = order[j - 1];
        order[j] = v;
    }
    grad_floats = dl__place_grads(g, order, count);
    DLCORE_FREE(order);
    grads_at = total;
    total += grad_floats;
    /* Parameters keep grad, m and v in one block of their own, so re-planning for a
       larger batch never loses optimizer state. */
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (!p->grad) {
            size_t len = dl__numel(p);
            p->grad = (float *)DLCORE_MALLOC(3 * len * sizeof(float));
            if (!p->grad) return dl__error("dl_graph_plan: out of memory for '%s'", p->name);
            memset(p->grad, 0, 3 * len * sizeof(float));
            p->m = p->grad + len;
            p->v = p->grad + 2 * len;
        }
    }
    arena = (float *)DLCORE_MALLOC((total ? total : 1) * sizeof(float));
    if (!arena) return dl__error("dl_graph_plan: out of memory for a %zu-byte arena", total * sizeof(float));
    memset(arena, 0, total * sizeof(float));
    DLCORE_FREE(g->arena);
    g->arena = arena;
    g->arena_floats = total;
    total = 0;
    for (i = 0; i < g->n; i++) {
        dl__node *n = &g->nodes[i];
        if (n->is_param) continue;
        if (dl__ops[n->op].view) n->val = g->nodes[n->in[0]].val;
        else { n->val = arena + total; total += dl__round16(dl__numel_at(n, max_batch)); }
        n->aux = n->aux_floats ? arena + total : NULL;
        total += dl__round16(n->aux_floats);
        n->grad = n->needs_grad ? arena + grads_at + n->grad_off : NULL;
        n->touched = 0;
    }
    g->planned = 1;
    g->pass = 0;
    if (g->batch > max_batch) g->batch = max_batch;
    return dl_graph_set_batch(g, g->batch);
}

DLDEF size_t dl_graph_arena_bytes(const dl_graph *g) { return g ? g->arena_floats * sizeof(float) : 0; }

DLDEF int dl_graph_set_batch(dl_graph *g, int batch)
{
    int i;
    if (!g || !g->planned) return dl__error("dl_graph_set_batch: plan the graph first");
    if (batch < 1 || batch > g->max_batch)
        return dl__error("dl_graph_set_batch: batch %d is outside 1..%d (the planned maximum)", batch, g->max_batch);
    g->batch = batch;
    for (i = 0; i < g->n; i++)
        if (g->nodes[i].batched) g->nodes[i].shape.d[0] = batch;
    return DL_OK;
}

DLDEF void dl_graph_set_training(dl_graph *g, int training) { if (g) g->training = training != 0; }

/* ---- 3. Running: forward, backward, gradient check ------------------------------- */

DLDEF int dl_forward(dl_graph *g, int upto)
{
    int i;
    if (!g || !g->planned) return dl__error("dl_forward: plan the graph first (dl_graph_plan)");
    if (!dl__valid(g, upto)) return dl__error("dl_forward: no node %d", upto);
    for (i = 0; i <= upto; i++) {
        dl__node *n = &g->nodes[i];
        if (dl__ops[n->op].forward && dl__ops[n->op].forward(g, n) != DL_OK) return DL_ERR;
    }
    return DL_OK;
}

/* Claims a gradient buffer for this pass; its first writer overwrites it
   (dl__grad_beta / dl__grad_acc), so nothing is zeroed twice. */
static void dl__touch_grad(dl_graph *g, dl__node *n)
{
    if (n->touched == g->pass) return;
    n->touched = g->pass;
    n->fresh = 1;
}

DLDEF int dl_backward(dl_graph *g, int loss)
{
    int i, j;
    dl__node *l;
    if (!g || !g->planned) return dl__error("dl_backward: plan the graph first (dl_graph_plan)");
    if (!dl__valid(g, loss)) return dl__error("dl_backward: no node %d", loss);
    l = &g->nodes[loss];
    if (dl__numel(l) != 1 || l->batched) return dl__error("dl_backward: node '%s' is not a scalar", l->name);
    if (!l->needs_grad) return dl__error("dl_backward: '%s' depends on no parameter", l->name);
    g->pass++;
    dl__touch_grad(g, l);
    l->grad[0] = 1.0f;
    l->fresh = 0;
    for (i = loss; i >= 0; i--) {
        dl__node *n = &g->nodes[i];
        if (!n->needs_grad || n->touched != g->pass || !dl__ops[n->op].backward) continue;
        for (j = 0; j < n->n_in; j++)
            if (n->in[j] != DL_NONE && g->nodes[n->in[j]].needs_grad) dl__touch_grad(g, &g->nodes[n->in[j]]);
        dl__ops[n->op].backward(g, n);
    }
    /* An op that had no gradient to give an input (labels, say) left it fresh. */
    for (i = 0; i <= loss; i++)
        if (g->nodes[i].needs_grad && g->nodes[i].touched == g->pass) dl__grad_acc(&g->nodes[i]);
    return DL_OK;
}

static float dl__loss_at(dl_graph *g, int loss)
{
    if (dl_forward(g, loss) != DL_OK) return NAN;
    return g->nodes[loss].val[0];
}

DLDEF float dl_gradcheck(dl_graph *g, int loss, float eps)
{
    float worst = 0.0f;
    int i;
    if (dl_forward(g, loss) != DL_OK || dl_backward(g, loss) != DL_OK) return INFINITY;
    g->freeze_dropout = 1;
    for (i = 0; i <= loss; i++) {
        dl__node *n = &g->nodes[i];
        size_t k, len = dl__numel(n);
        if (!(n->is_param || n->keep_grad)) continue;
        for (k = 0; k < len; k++) {
            /* Parameters not reached by this loss have stale gradients: read as 0. */
            float analytic = n->touched == g->pass ? n->grad[k] : 0.0f, saved = n->val[k], num, err;
            double fp, fm;
            n->val[k] = saved + eps; fp = dl__loss_at(g, loss);
            n->val[k] = saved - eps; fm = dl__loss_at(g, loss);
            n->val[k] = saved;
            num = (float)((fp - fm) / (2.0 * eps));
            err = fabsf(analytic - num) / fmaxf(1e-2f, fabsf(analytic) + fabsf(num));
            if (!(err <= worst)) worst = err;   /* NaN wins */
        }
    }
    g->freeze_dropout = 0;
    return worst;
}

/* ---- 3. Accessors ----------------------------------------------------------------- */

DLDEF int dl_graph_node_count(const dl_graph *g) { return g ? g->n : 0; }
DLDEF int dl_graph_param_count(const dl_graph *g) { return g ? g->n_params : 0; }
DLDEF int dl_graph_param(const dl_graph *g, int i) { return g && i >= 0 && i < g->n_params ? g->params[i] : -1; }
DLDEF const char *dl_node_name(const dl_graph *g, int node) { return g && dl__valid(g, node) ? g->nodes[node].name : ""; }

DLDEF dl_tensor dl_node_value(const dl_graph *g, int node)
{
    dl_tensor t;
    memset(&t, 0, sizeof t);
    if (g && dl__valid(g, node)) { t.shape = g->nodes[node].shape; t.data = g->nodes[node].val; }
    return t;
}

DLDEF dl_tensor dl_node_grad(const dl_graph *g, int node)
{
    dl_tensor t = dl_node_value(g, node);
    t.data = g && dl__valid(g, node) ? g->nodes[node].grad : NULL;
    return t;
}

/* ---- 3. Optimizers ---------------------------------------------------------------- */

DLDEF dl_optimizer dl_sgd(float lr, float momentum)
{
    dl_optimizer o;
    memset(&o, 0, sizeof o);
    o.kind = DL_SGD; o.lr = lr; o.momentum = momentum;
    return o;
}

DLDEF dl_optimizer dl_adam(float lr)
{
    dl_optimizer o;
    memset(&o, 0, sizeof o);
    o.kind = DL_ADAM; o.lr = lr;
    return o;
}

DLDEF dl_optimizer dl_adamw(float lr, float weight_decay)
{
    dl_optimizer o = dl_adam(lr);
    o.kind = DL_ADAMW; o.weight_decay = weight_decay;
    return o;
}

DLDEF float dl_lr_at(const dl_optimizer *o, int epoch)
{
    if (o->schedule == DL_SCHED_STEP && o->step_size > 0)
        return o->lr * powf(o->gamma > 0.0f ? o->gamma : 0.1f, (float)(epoch / o->step_size));
    if (o->schedule == DL_SCHED_COSINE && o->t_max > 0) {
        float e = (float)(epoch < o->t_max ? epoch : o->t_max);
        return o->lr_min + (o->lr - o->lr_min) * 0.5f * (1.0f + cosf(3.14159265358979f * e / (float)o->t_max));
    }
    return o->lr;
}

/* The gradient the update sees: the loss gradient plus the L1/L2 penalty's. */
static float dl__reg_grad(const dl__node *p, size_t i, const dl_optimizer *o, int reached)
{
    float gr = reached ? p->grad[i] : 0.0f, w = p->val[i];
    if (p->regularize) gr += o->l1 * (float)((w > 0.0f) - (w < 0.0f)) + 2.0f * o->l2 * w;
    return gr;
}

DLDEF int dl_graph_update(dl_graph *g, const dl_optimizer *o, int epoch)
{
    float lr, scale = 1.0f, b1, b2, eps, c1 = 1.0f, c2 = 1.0f;
    int i;
    if (!g || !g->planned) return dl__error("dl_graph_update: plan the graph first");
    if (!o || o->kind < DL_SGD || o->kind > DL_ADAMW) return dl__error("dl_graph_update: unknown optimizer kind");
    lr = dl_lr_at(o, epoch);
    if (!(lr >= 0.0f) || !isfinite(lr)) return dl__error("dl_graph_update: learning rate %g is not a finite value >= 0", (double)lr);
    if (o->clip_norm > 0.0f) {
        double sq = 0.0;
        for (i = 0; i < g->n_params; i++) {
            dl__node *p = &g->nodes[g->params[i]];
            size_t k, len = dl__numel(p);
            for (k = 0; k < len; k++) { float gr = dl__reg_grad(p, k, o, p->touched == g->pass); sq += (double)gr * gr; }
        }
        if (sqrt(sq) > o->clip_norm) scale = (float)(o->clip_norm / sqrt(sq));
    }
    b1 = o->beta1 > 0.0f ? o->beta1 : 0.9f;
    b2 = o->beta2 > 0.0f ? o->beta2 : 0.999f;
    eps = o->eps > 0.0f ? o->eps : 1e-7f;
    g->opt_t++;
    if (o->kind != DL_SGD) {
        c1 = 1.0f / (1.0f - powf(b1, (float)g->opt_t));
        c2 = 1.0f / (1.0f - powf(b2, (float)g->opt_t));
    }
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        size_t k, len = dl__numel(p);
        int reached = p->touched == g->pass;
        float *w = p->val, *m = p->m, *v = p->v;
        if (o->kind == DL_SGD) {
            for (k = 0; k < len; k++) {
                float gr = dl__reg_grad(p, k, o, reached) * scale, step = gr;
                if (o->momentum > 0.0f) {
                    m[k] = o->momentum * m[k] + gr;
                    step = o->nesterov ? gr + o->momentum * m[k] : m[k];
                }
                w[k] -= lr * step;
            }
        } else {
            float decay = o->kind == DL_ADAMW ? 1.0f - lr * o->weight_decay : 1.0f;
#ifdef DL__TARGET
            if (reached && !(p->regularize && (o->l1 != 0.0f || o->l2 != 0.0f))) {
                dl__adam_k ak;
                ak.b1 = b1; ak.b2 = b2; ak.eps = eps; ak.c1 = c1; ak.c2 = c2; ak.lr = lr; ak.decay = decay; ak.scale = scale;
                dl__adam(w, m, v, p->grad, len, &ak);
                continue;
            }
#endif
            for (k = 0; k < len; k++) {
                float gr = dl__reg_grad(p, k, o, reached) * scale;
                m[k] = b1 * m[k] + (1.0f - b1) * gr;
                v[k] = b2 * v[k] + (1.0f - b2) * gr * gr;
                w[k] = w[k] * decay - lr * (m[k] * c1) / (sqrtf(v[k] * c2) + eps);
            }
        }
    }
    return DL_OK;
}
