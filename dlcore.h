/* dlcore.h - a single-header deep-learning library in C99.      MIT or public domain
 *
 * What it is
 *   Tensors, a define-once/run-many reverse-mode autograd graph, the layers,
 *   losses and optimizers of a Keras/PyTorch user, MNIST-format data loading, and
 *   versioned model files; underneath, an SGEMM with hand-written AVX2+FMA,
 *   AVX-512 and NEON microkernels picked at run time, and a small thread pool.
 *   libc (+ pthreads) only.
 *
 * How to include
 *   In exactly ONE .c file:          #define DLCORE_IMPLEMENTATION
 *                                    #include "dlcore.h"
 *   Everywhere else just #include "dlcore.h". Compile with plain -O2: SIMD
 *   kernels are chosen at run time. Link with -lm -lpthread (on Windows -lm:
 *   the pool uses Win32 threads; tested with mingw-w64 under wine).
 *
 * Configuration (define before the implementation's #include)
 *   DLCORE_MALLOC(sz) DLCORE_REALLOC(p,sz) DLCORE_FREE(p)  all three, or none
 *   DLCORE_ASSERT(x)      internal invariants only, never user input (assert)
 *   DLCORE_STATIC         every function static (private to one file)
 *   DLCORE_NO_SIMD        scalar kernels only
 *   DLCORE_NO_THREADS     no thread pool, no pthreads
 *   DL_MAX_CLASSES        size of dl_metrics' confusion matrix (32)
 *   DLCORE_MAX_ARENA      bytes one graph's activation arena may take (default 4 GiB,
 *                         1 GiB with a 32-bit size_t); a larger plan is DL_ERR, so a
 *                         model file cannot make dl_load's user allocate more than
 *                         this plus the weights (and their optimizer state) it holds
 *   DLCORE_FUZZ_NO_CRC    fuzz builds only: model files' checksums are not checked,
 *                         so mutated files reach the parser
 * Environment
 *   DLCORE_ISA=scalar|avx2|avx512|neon   force a kernel set (tests, benchmarks)
 *   DLCORE_THREADS=N                     default thread count (unset or 0: all cores)
 *
 * Example: the Keras MNIST MLP
 *   dl_dataset train, test;
 *   dl_metrics mt;
 *   dl_fit_opts fit = { 0 };
 *   if (dl_idx_load(&train, "data/fashion-mnist", "train") || dl_idx_load(&test, "data/fashion-mnist", "t10k"))
 *       return fprintf(stderr, "%s\n", dl_last_error()), 1;
 *   dl_model *m = dl_sequential(DL_SHAPE(28, 28));
 *   dl_add(m, dl_flatten());
 *   dl_add(m, dl_dense(128, DL_RELU));
 *   dl_add(m, dl_dropout(0.2f));
 *   dl_add(m, dl_dense(10, DL_SOFTMAX));
 *   dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f));
 *   fit.epochs = 5; fit.batch = 32;
 *   dl_fit(m, &train, &fit);
 *   dl_evaluate(m, &test, &mt);
 *   printf("test accuracy %.4f\n", mt.accuracy);
 *   dl_save(m, "mnist.dlc");
 *
 * Errors
 *   Calls that can fail on user input return DL_OK (0) / DL_ERR (-1) or NULL,
 *   and dl_last_error() (per thread) says what and where, e.g.
 *   "mnist.dlc: tensor 'dense_1.w' claims 1000000000000 elements (...) but the file has 407 bytes left".
 *
 * Contents (public API first, then the implementation in the same order)
 *   0. Conventions: status codes, errors
 *   1. Kernels: dl_sgemm, ISA dispatch, threads, SIMD Adam and ReLU, int8 GEMM
 *   2. Shapes, tensors, random numbers
 *   3. Graph, ops (dense, conv2d, pooling, batch norm, ...), autograd, planner,
 *      optimizers, fused backward + update, the data-parallel hook (dl_comm:
 *      MPI or any other transport, outside)
 *   4. IO: CRC-32, gzip, IDX files, data sets
 *   5. Models: Keras-named layers, fit (with augmentation)/evaluate/predict, model files
 */
#ifndef DLCORE_H
#define DLCORE_H

/* The implementation uses a few POSIX calls (threads, a monotonic clock, isatty)
   that strict -std=c99 headers hide unless asked for before the first include. */
#if defined(DLCORE_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef DLDEF
#if defined(DLCORE_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define DLDEF static __attribute__((unused))   /* a user need not call every function */
#elif defined(DLCORE_STATIC)
#define DLDEF static
#else
#define DLDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 0. Conventions: status codes and errors ==================================== */

enum { DL_OK = 0, DL_ERR = -1 };

/* The message of the last failed call on this thread ("" if none). */
DLDEF const char *dl_last_error(void);

/* ==== 1. Kernels ================================================================== */
/* C = alpha * op(A) * op(B) + beta * C, row-major, BLAS semantics.
   op(A) is m x k, op(B) is k x n, C is m x n. trans_* != 0 means transposed.
   beta == 0 overwrites C without reading it (NaN garbage in C is not propagated).
   After the first call with a given shape and thread count it allocates nothing
   (per-thread packing workspaces only grow). */
DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc);

/* The instruction set the kernels use now: "scalar", "avx2", "avx512" or "neon".
   Chosen at first use: the best one the CPU has, or $DLCORE_ISA if set and supported. */
DLDEF const char *dl_isa_name(void);

/* Forces one instruction set for all later calls. NULL or "auto" picks the best
   available. An unknown name or one this CPU/build lacks returns DL_ERR (message in
   dl_last_error()) and keeps the current choice. Not to be called while another
   thread is inside a dlcore kernel. */
DLDEF int dl_set_isa(const char *name);

/* Number of threads the kernels may use (the caller counts as one); 0 means all
   online cores. Default: $DLCORE_THREADS if set, else all cores. With DLCORE_NO_THREADS the
   count stays 1. Returns DL_ERR for n < 0. */
DLDEF int dl_set_threads(int n);
DLDEF int dl_get_threads(void);

/* Stops the thread pool and frees the calling thread's packing workspace (worker
   threads free their own). Optional; later kernel calls work, on one thread until
   dl_set_threads starts a pool again. */
DLDEF void dl_shutdown(void);
/* Frees the calling thread's packing workspace, and nothing else: for a thread of
   the caller's own (a server's worker, say) that ran kernels and is about to exit. */
DLDEF void dl_thread_release(void);

/* ---- 1. Convolution kernels ------------------------------------------------------- */
/* Convolution, channels-last. x: n x h x w x c; w (filters): kh x kw x (c/groups) x oc
   (Keras HWIO); y: n x oh x ow x oc. Padding is given explicitly (pad_top, pad_left;
   bottom/right implied by oh/ow). Group g reads input channels g*c/groups.. and writes
   output channels g*oc/groups... The entry points allocate nothing after the first call
   with a given shape and thread count, and give the same bits for a given ISA and thread
   count. Parameters that dl_conv2d_check rejects make them do nothing (message in
   dl_last_error()). */
typedef struct dl_conv2d_params {
    int n, h, w, c;            /* input */
    int oc, kh, kw;            /* filters */
    int stride_h, stride_w;    /* 0 means 1 */
    int dil_h, dil_w;          /* 0 means 1 */
    int pad_top, pad_left;
    int oh, ow;                /* output size (caller computes, e.g. with dl_conv2d_out_size) */
    int groups;                /* 0 means 1; groups == c == oc is depthwise */
} dl_conv2d_params;
/* Output length along one axis, (in + pads - dil*(k-1) - 1) / stride + 1; <= 0 if none
   (input shorter than the dilated kernel, or a non-positive size/negative pad). */
DLDEF int  dl_conv2d_out_size(int in, int k, int stride, int dil, int pad_begin, int pad_end);
/* DL_OK, or DL_ERR with a message: non-positive sizes, c or oc not divisible by groups,
   a pad of the dilated kernel's extent or more, an output size that no bottom/right
   pad below the kernel's extent gives, tensors too large to index. */
DLDEF int  dl_conv2d_check(const dl_conv2d_params *p);
/* y = conv(x, w) (+ bias[oc] if bias != NULL); y overwritten. */
DLDEF void dl_conv2d_fwd(const dl_conv2d_params *p, const float *x, const float *w, const float *bias, float *y);
/* dx = conv^T(dy, w); dx overwritten (accumulate=0) or added to (accumulate=1). */
DLDEF void dl_conv2d_bwd_data(const dl_conv2d_params *p, const float *dy, const float *w, float *dx, int accumulate);
/* dw = sum over batch of x (*) dy; dbias[oc] = sum of dy (if dbias != NULL); both
   overwritten (accumulate=0) or added to (1). */
DLDEF void dl_conv2d_bwd_weights(const dl_conv2d_params *p, const float *x, const float *dy, float *dw,
                                 float *dbias, int accumulate);

/* int8 GEMM: C[i][j] = sum_p A[i][p] * B[j][p] in int32, exact, the same bits on every
   ISA. A: m x k bytes, row-major (lda), values 0..127 (7-bit activations; see 1.9).
   B: n x k int8 (row j = output j's weights), packed once by dl_pack_s8 into
   dl_s8_packed_size(n, k) bytes. C: m x n int32 (ldc). Variants: AVX2 (vpmaddubsw),
   AVX-512 VNNI (vpdpbusd), NEON (smull) and NEON dot product (sdot, ARMv8.2, found at
   run time), following dl_set_isa / $DLCORE_ISA. */
DLDEF size_t dl_s8_packed_size(int n, int k);
DLDEF void dl_pack_s8(int n, int k, const int8_t *b, int ldb, int8_t *packed);
DLDEF void dl_gemm_u8s8s32(int m, int n, int k, const uint8_t *a, int lda, const int8_t *packed_b,
                           int32_t *c, int ldc);
/* "scalar", "avx2", "avx512vnni", "neon" or "neon-dotprod": the int8 kernel in use. */
DLDEF const char *dl_int8_kernel_name(void);

/* IEEE half <-> float, round to nearest even (storage: dl_model_to_fp16, model files). */
DLDEF uint16_t dl_f32_to_f16(float f);
DLDEF float    dl_f16_to_f32(uint16_t h);

/* ==== 2-3. Tensors, graph, autograd, optimizers ==================================== */
/* ---- 2. Shapes, tensors, random numbers ----------------------------------------- */

#define DL_MAX_DIMS 4

/* A shape of 0..4 dimensions; unused trailing dims are 0. */
typedef struct dl_shape { int ndim; int d[DL_MAX_DIMS]; } dl_shape;

/* dl_shape_make(28, 28, 0, 0) is the 2-D shape 28x28: zeros end the list.
   DL_SHAPE(28, 28) says the same. */
DLDEF dl_shape dl_shape_make(int d0, int d1, int d2, int d3);
#define DL_SHAPE(...) DL__SHAPE4(__VA_ARGS__, 0, 0, 0, 0)
#define DL__SHAPE4(a, b, c, d, ...) dl_shape_make(a, b, c, d)
DLDEF size_t dl_shape_numel(dl_shape s);
/* Writes "[32,784]" into buf; returns buf. */
DLDEF char *dl_shape_str(dl_shape s, char *buf, size_t size);

/* A view of float32 data: contiguous, row-major. */
typedef struct dl_tensor { dl_shape shape; float *data; } dl_tensor;

/* PCG32: small, fast, statistically sound; the same seed gives the same stream
   on every platform, which is what makes training reproducible. */
typedef struct dl_rng { uint64_t state, inc; } dl_rng;
DLDEF void     dl_rng_seed(dl_rng *r, uint64_t seed);
DLDEF uint32_t dl_rng_u32(dl_rng *r);
DLDEF uint32_t dl_rng_below(dl_rng *r, uint32_t n);   /* uniform in [0, n), unbiased */
DLDEF float    dl_rng_uniform(dl_rng *r);             /* uniform in [0, 1) */
DLDEF float    dl_rng_normal(dl_rng *r);              /* standard normal */
/* Fisher-Yates shuffle of idx[0..n). */
DLDEF void     dl_rng_shuffle(dl_rng *r, int *idx, int n);

/* ---- 3. Graph: define once, run many ---------------------------------------------

   A graph is built once from inputs, parameters and ops; node handles are ints
   (a negative handle means the op failed: dl_last_error() says why, and ops given
   a negative handle pass it on, so a builder can check once at the end).
   dl_graph_plan() then places every activation, scratch buffer and gradient in
   one arena sized for max_batch; after it, forward/backward/update allocate
   nothing. Batched nodes (those that depend on a dl_input) take the batch size
   set by dl_graph_set_batch(), which may change between steps up to max_batch. */

typedef struct dl_graph dl_graph;

enum dl_init {
    DL_INIT_ZEROS = 0,
    DL_INIT_GLOROT_UNIFORM,   /* U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Keras' Dense default */
    DL_INIT_HE_UNIFORM,       /* U(-l, l), l = sqrt(6 / fan_in) */
    DL_INIT_HE_NORMAL,        /* N(0, 2 / fan_in) */
    DL_INIT_ONES
};

DLDEF dl_graph *dl_graph_new(uint64_t seed);
DLDEF void      dl_graph_free(dl_graph *g);

/* A batched input: its shape is [batch, sample_shape...] (sample_shape <= 3 dims). */
DLDEF int dl_input(dl_graph *g, const char *name, dl_shape sample_shape);
/* A trainable parameter, initialised now with `init` from the graph's RNG.
   Fans: 2-D [in, out]; 4-D [kh, kw, in, out] (a conv2d kernel); 1-D params (biases) are never
   regularised by L1/L2, as with Keras' kernel_regularizer. */
DLDEF int dl_param(dl_graph *g, const char *name, dl_shape shape, int init);
/* Asks for d(loss)/d(node) of a non-parameter node (inputs have none by default). */
DLDEF int dl_require_grad(dl_graph *g, int node);

/* Ops. Broadcasting in add/mul: b equals a's shape, or a's trailing dims. */
DLDEF int dl_op_matmul(dl_graph *g, int a, int b);            /* [..., k] x [k, n] */
DLDEF int dl_op_dense(dl_graph *g, int x, int w, int bias);   /* x w + bias; bias DL_NONE: none */
DLDEF int dl_op_add(dl_graph *g, int a, int b);
DLDEF int dl_op_mul(dl_graph *g, int a, int b);
DLDEF int dl_op_relu(dl_graph *g, int x);
DLDEF int dl_op_leaky_relu(dl_graph *g, int x, float alpha);
DLDEF int dl_op_sigmoid(dl_graph *g, int x);
DLDEF int dl_op_tanh(dl_graph *g, int x);
DLDEF int dl_op_softmax(dl_graph *g, int x);                  /* over the last dim */
DLDEF int dl_op_log_softmax(dl_graph *g, int x);              /* over the last dim */
DLDEF int dl_op_dropout(dl_graph *g, int x, float rate);      /* identity when not training */
DLDEF int dl_op_reshape(dl_graph *g, int x, dl_shape sample_shape); /* keeps the batch dim */
DLDEF int dl_op_flatten(dl_graph *g, int x);                  /* [batch, prod(rest)] */
DLDEF int dl_op_sum(dl_graph *g, int x);                      /* all elements -> scalar */
DLDEF int dl_op_mean(dl_graph *g, int x);                     /* all elements -> scalar */

/* Convolution and pooling take channels-last batches [n, h, w, c] (Keras' layout).
   Padding: DL_PAD_VALID (none), DL_PAD_SAME (Keras/TensorFlow: out = ceil(in / stride),
   the odd pixel of padding at the bottom/right), DL_PAD_EXPLICIT (pad_top .. pad_right). */
enum dl_padding { DL_PAD_VALID = 0, DL_PAD_SAME, DL_PAD_EXPLICIT };

typedef struct dl_conv2d_opts {
    int stride_h, stride_w;   /* 0 = 1 */
    int dil_h, dil_w;         /* dilation; 0 = 1 */
    int groups;               /* 0 = 1; c and filters are multiples of it (groups = c: depthwise) */
    int padding;              /* DL_PAD_* */
    int pad_top, pad_bottom, pad_left, pad_right;   /* DL_PAD_EXPLICIT */
    int no_bias;              /* dl_conv2d layer: 1 = no bias (dl_op_conv2d takes bias DL_NONE) */
    int relu;                 /* dl_op_conv2d: apply ReLU inside the op (no activation buffer of its own) */
} dl_conv2d_opts;

typedef struct dl_pool2d_opts {
    int stride_h, stride_w;   /* 0 = the pool size, as in Keras */
    int padding;              /* DL_PAD_*; explicit pads must be smaller than the pool size */
    int pad_top, pad_bottom, pad_left, pad_right;
} dl_pool2d_opts;

typedef struct dl_batch_norm_opts {
    float momentum;           /* moving statistics: m = momentum m + (1 - momentum) batch; 0 = 0.99 */
    float eps;                /* 0 = 1e-3 */
} dl_batch_norm_opts;

/* x [n, h, w, c], w [kh, kw, c / groups, filters] (HWIO), bias [filters] or DL_NONE;
   o NULL = defaults. */
DLDEF int dl_op_conv2d(dl_graph *g, int x, int w, int bias, const dl_conv2d_opts *o);
/* Max: the gradient goes to the first largest pixel of a window (row-major order).
   Average: over the window's pixels inside the image (padding is not counted). */
DLDEF int dl_op_max_pool2d(dl_graph *g, int x, int size_h, int size_w, const dl_pool2d_opts *o);
DLDEF int dl_op_avg_pool2d(dl_graph *g, int x, int size_h, int size_w, const dl_pool2d_opts *o);
DLDEF int dl_op_global_avg_pool2d(dl_graph *g, int x);        /* [n, h, w, c] -> [n, c] */
/* A tensor the graph keeps but does not train (batch norm's moving statistics):
   no gradient, no optimizer state; saved in model files beside the parameters. */
DLDEF int dl_state(dl_graph *g, const char *name, dl_shape shape, int init);
/* Per channel (the last dim of x) over all other dims. Training: the batch's mean and
   variance normalise, and the moving statistics (dl_state nodes [c]) move towards
   them (the variance unbiased, as Keras and PyTorch keep it). Evaluation: the moving
   statistics normalise. y = gamma (x - mean) / sqrt(var + eps) + beta; gamma, beta [c]. */
DLDEF int dl_op_batch_norm(dl_graph *g, int x, int gamma, int beta, int moving_mean, int moving_var,
                           const dl_batch_norm_opts *o);
/* Losses: scalars, averaged over the batch (and over elements for MSE/BCE). */
DLDEF int dl_loss_mse(dl_graph *g, int pred, int target);
DLDEF int dl_loss_bce_logits(dl_graph *g, int logits, int target);   /* stable for any logit */
DLDEF int dl_loss_sparse_ce(dl_graph *g, int logits, int labels);    /* labels: class ids as floats */

#define DL_NONE (-1000000)   /* "no node", e.g. a dense op without bias */

/* Places all buffers for batches up to max_batch (may be called again to grow).
   An arena over DLCORE_MAX_ARENA bytes is DL_ERR, allocating nothing; a plan already
   made then stays in force. */
DLDEF int dl_graph_plan(dl_graph *g, int max_batch);
DLDEF int dl_graph_set_batch(dl_graph *g, int batch);
DLDEF void dl_graph_set_training(dl_graph *g, int training);  /* dropout on/off */
DLDEF int dl_forward(dl_graph *g, int upto);                  /* computes nodes 0..upto */
DLDEF int dl_backward(dl_graph *g, int loss);                 /* gradients of a scalar node */
/* Bytes in the arena (activations, scratch, gradients, optimizer state). */
DLDEF size_t dl_graph_arena_bytes(const dl_graph *g);

DLDEF int       dl_graph_node_count(const dl_graph *g);
DLDEF dl_tensor dl_node_value(const dl_graph *g, int node);  /* current shape */
DLDEF dl_tensor dl_node_grad(const dl_graph *g, int node);   /* data NULL if none */
DLDEF const char *dl_node_name(const dl_graph *g, int node);
DLDEF int       dl_graph_param_count(const dl_graph *g);
DLDEF int       dl_graph_param(const dl_graph *g, int i);    /* i-th parameter's node */
DLDEF int       dl_graph_state_count(const dl_graph *g);
DLDEF int       dl_graph_state(const dl_graph *g, int i);    /* i-th dl_state node */

/* Compares every parameter gradient (and those asked for with dl_require_grad)
   with central finite differences of the scalar node `loss`; returns the largest
   relative error |analytic - numeric| / max(1e-2, |analytic| + |numeric|).
   Evaluates with dropout's mask frozen, so dropout is checkable too. */
DLDEF float dl_gradcheck(dl_graph *g, int loss, float eps);

/* ---- 3. Optimizers ----------------------------------------------------------------
   Zero fields mean defaults, so dl_adam(1e-3f) with .clip_norm = 1 set afterwards
   reads like keyword arguments. */

enum dl_opt_kind { DL_SGD = 1, DL_ADAM, DL_ADAMW };
enum dl_schedule { DL_SCHED_CONSTANT = 0, DL_SCHED_STEP, DL_SCHED_COSINE };

typedef struct dl_optimizer {
    int   kind;          /* DL_SGD, DL_ADAM, DL_ADAMW */
    float lr;
    float momentum;      /* SGD: v = momentum v + g; w -= lr v (PyTorch's form) */
    int   nesterov;      /* SGD: w -= lr (g + momentum v) */
    float beta1, beta2, eps;   /* Adam/AdamW; 0 = 0.9, 0.999, 1e-7 (Keras' defaults) */
    float weight_decay;  /* AdamW: decoupled, w -= lr wd w */
    float l1, l2;        /* penalty l1 sum|w| + l2 sum w^2 on weights (not biases) */
    float clip_norm;     /* > 0: scale all gradients so their global L2 norm <= clip_norm */
    int   schedule;      /* DL_SCHED_*: learning rate by epoch */
    int   step_size;     /* STEP: lr * gamma^floor(epoch / step_size) */
    float gamma;
    int   t_max;         /* COSINE: lr_min + (lr - lr_min)(1 + cos(pi e / t_max)) / 2 */
    float lr_min;
} dl_optimizer;

DLDEF dl_optimizer dl_sgd(float lr, float momentum);
DLDEF dl_optimizer dl_adam(float lr);
DLDEF dl_optimizer dl_adamw(float lr, float weight_decay);
/* The learning rate the schedule gives for a 0-based epoch. */
DLDEF float dl_lr_at(const dl_optimizer *o, int epoch);
/* One update of every parameter from its current gradient. */
DLDEF int dl_graph_update(dl_graph *g, const dl_optimizer *o, int epoch);
/* dl_backward(g, loss) and then dl_graph_update(g, o, epoch), with the same result
   (within rounding), faster: a weight whose only user is a matmul/dense is updated
   while its gradient is computed, and that gradient is not stored (dl_node_grad on it
   reads stale values afterwards) unless dl_require_grad asked for it. Use the two
   calls when you need all the gradients. */
DLDEF int dl_graph_step(dl_graph *g, int loss, const dl_optimizer *o, int epoch);

/* ---- 3. Data parallelism: the communication hook ---------------------------------
   dlcore does no networking. To train one model on several processes (MPI ranks,
   say), fill a dl_comm with the collectives below and pass it to dl_fit
   (dl_fit_opts.comm) or dl_graph_set_comm. Every rank runs the same program on the
   same data with the same seed; every callback is collective (all ranks call it in
   the same order with the same counts) and returns DL_OK or DL_ERR. */
enum { DL_COMM_F32 = 1, DL_COMM_F64 };   /* element types: float, double */
typedef struct dl_comm {
    int   rank, size;      /* this process, and how many there are (rank 0 leads) */
    void *user;            /* passed to every callback */
    /* Sums `count` elements over all ranks, in place: every rank gets the sum. */
    int (*allreduce)(void *user, void *buf, size_t count, int dtype);
    /* Copies rank 0's `bytes` bytes at buf into every other rank's buf. */
    int (*bcast)(void *user, void *buf, size_t bytes);
    /* Optional (both or neither): allreduce started now and finished by wait(*req),
       so a layer's gradient travels while the next layer's backward runs. dlcore
       leaves buf alone in between. */
    int (*iallreduce)(void *user, void *buf, size_t count, int dtype, void **req);
    int (*wait)(void *user, void *req);
    /* Optional (both or neither): the update split over the ranks, as ZeRO stage 1
       (PyTorch's ZeroRedundancyOptimizer) splits it. reduce_scatter sums `count`
       floats over the ranks and leaves at least this rank's shard of the sum
       (dl_comm_shard) in buf, the rest of buf undefined; allgather copies every
       rank's shard of buf into every rank's buf. A parameter of at least shard_min
       elements (0: 4096) is then summed with reduce_scatter, each rank updates its
       shard of it, and allgather shares the result: each rank does 1/size of the
       optimizer's work, and the bytes moved are those of an allreduce. Not used with
       clip_norm (the norm needs the whole gradient). A rank's optimizer state is
       whole only in its shards until dl_fit ends or dl_graph_set_comm is called
       again, which gather it. */
    int (*reduce_scatter)(void *user, float *buf, size_t count);
    int (*allgather)(void *user, float *buf, size_t count);
    /* Also the size under which gradients are small: without iallreduce they are
       summed together in one allreduce at the end of backward (a bucket), which
       also carries dl_fit's loss and hits for the batch. */
    size_t shard_min;
} dl_comm;

/* Rank `rank`'s shard [*lo, *hi) of `count` elements over `size` ranks: contiguous,
   in rank order, cut at multiples of 16 elements (64 bytes: no two ranks write one
   cache line), the last rank taking the remainder. */
DLDEF void dl_comm_shard(size_t count, int rank, int size, size_t *lo, size_t *hi);

/* With a comm (NULL: none), dl_graph_step sums every parameter gradient over the
   ranks before its update, each rank's weighted by its share of the global batch
   (dl_graph_set_rows), so all ranks apply the same update. The fused update is then
   off: each gradient of shard_min elements or more is reduced as soon as its
   backward is done, while the earlier layers' backward runs (all of them with
   iallreduce); the smaller ones are summed together after the pass, in one call.
   dl_backward and dl_graph_update do not communicate.
   Setting a comm is collective: it first makes whole the optimizer state that
   sharded updates (dl_comm.reduce_scatter) over the previous comm left in shards,
   then copies rank 0's parameters, optimizer state and dropout stream to every rank.
   dl_graph_set_comm(g, NULL) after a sharded run leaves each rank the whole state. */
DLDEF int dl_graph_set_comm(dl_graph *g, const dl_comm *comm);
/* This step's batch holds rows [first, first + batch) of a global batch of `total`
   rows split over ranks: dropout draws each entry's mask from its place in the
   global batch, so the masks do not depend on the split, and the loss gradient is
   weighted batch / total.
   dl_graph_set_batch clears it; without it a rank's rows are taken to be
   [rank * batch, (rank + 1) * batch) of size * batch (size 1 without a comm). */
DLDEF int dl_graph_set_rows(dl_graph *g, int first, int total);

/* ==== 4. IO: checksums, gzip, IDX datasets ========================================= */
/* A data set in memory: n samples, each x_size floats (shape[0..ndim-1]) and
   y_size floats of target. Class labels are stored as floats (exact up to 2^24),
   y_size == 1, n_classes > 0; regression targets have n_classes == 0.
   The inputs are either floats (x) or, after dl_dataset_pack_u8, bytes (x8, and x
   is NULL): value i is then x8[i] / 255. dl_dataset_get_x reads either as floats.
   owned == 1: x (or x8) and y were allocated by dlcore and dl_dataset_free releases
   them; owned == 0: a view into another data set (dl_dataset_split) or caller
   memory, which dl_dataset_free only clears. A view lives no longer than its source. */
typedef struct dl_dataset {
    int n;
    int ndim, shape[3];
    int x_size, y_size;
    int n_classes;
    float *x, *y;
    int owned;
    unsigned char *x8;
} dl_dataset;

/* Allocates x and y for n samples of the given per-sample shape (zeros fill). On Linux
   with the default allocator, x asks for transparent huge pages: training reads it in
   shuffled rows, and 4 KiB pages made nearly every row a TLB miss. */
DLDEF int  dl_dataset_alloc(dl_dataset *ds, int n, int ndim, const int *shape, int y_size);
DLDEF void dl_dataset_free(dl_dataset *ds);

/* A non-owning view of rows [first, first + count) of src (no copy). */
DLDEF int  dl_dataset_split(const dl_dataset *src, int first, int count, dl_dataset *view);

/* Stores the inputs as one byte each (x8, x becomes NULL) when every value is k/255
   for an integer k in 0..255, as dl_idx_load makes pixels: a quarter of the memory,
   and training gathers its shuffled batches from a quarter of the bytes (MNIST at
   batch 128: 28.5 -> 20.6 us of a ~300 us step). The values read back bit for bit, so
   training gives the same weights. Any other value (normalised data, say): DL_ERR
   naming it, and the data set is unchanged. Only for a data set that owns its
   memory, not a view. */
DLDEF int  dl_dataset_pack_u8(dl_dataset *ds);

/* Rows [first, first + count) of the inputs as floats, whichever way they are stored. */
DLDEF int  dl_dataset_get_x(const dl_dataset *ds, int first, int count, float *out);

/* Loads an MNIST-format pair <dir>/<prefix>-images-idx3-ubyte and
   <dir>/<prefix>-labels-idx1-ubyte (also the "<prefix>-images.idx3-ubyte" spelling,
   each raw or with ".gz"). Pixels become floats in [0,1] (ds->x, shape
   [rows][cols]), labels floats in ds->y, n_classes = largest label + 1. */
DLDEF int  dl_idx_load(dl_dataset *ds, const char *dir, const char *prefix);

/* One IDX file, raw or gzip-compressed (detected by content, not by name).
   data points at count elements of the file's type, big-endian as stored. */
typedef struct dl_idx {
    int type;                   /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int ndim;                   /* 1 .. 4 */
    int dims[4];
    size_t count;               /* product of dims */
    const unsigned char *data;
    unsigned char *buf_;        /* the whole file; owned */
} dl_idx;

DLDEF int    dl_idx_read(dl_idx *idx, const char *path);
DLDEF double dl_idx_value(const dl_idx *idx, size_t i);   /* element i, any type; NaN if i >= count */
DLDEF void   dl_idx_free(dl_idx *idx);

/* Reads a whole file into memory (DLCORE_MALLOC; release with dl_free). */
DLDEF int  dl_read_file(const char *path, unsigned char **data, size_t *len);

/* CRC-32 as in gzip, zlib and PNG. Start with crc = 0; feed pieces in order:
   dl_crc32(dl_crc32(0, a, na), b, nb) == CRC of a followed by b. */
DLDEF uint32_t dl_crc32(uint32_t crc, const void *data, size_t n);

/* Decompresses a gzip file image (RFC 1952; concatenated members are joined).
   *out is allocated with DLCORE_MALLOC (release with dl_free / DLCORE_FREE) and
   is NUL-terminated one byte past *out_len. Output beyond max_out bytes is an
   error; dl_gunzip uses DLCORE_GUNZIP_MAX (default 1 GiB). */
DLDEF int  dl_gunzip(const void *in, size_t in_len, unsigned char **out, size_t *out_len);
DLDEF int  dl_gunzip_limit(const void *in, size_t in_len, unsigned char **out,
                           size_t *out_len, size_t max_out);
/* Raw deflate (RFC 1951). *in_used receives the bytes consumed (may be NULL). */
DLDEF int  dl_inflate(const void *in, size_t in_len, size_t *in_used,
                      unsigned char **out, size_t *out_len, size_t max_out);

/* Releases memory returned by dlcore (DLCORE_FREE). */
DLDEF void dl_free(void *p);

/* ==== 5. Models ==================================================================== */
/* ---- 5. Models: Keras-style sequential models -------------------------------------

   dl_model *m = dl_sequential(DL_SHAPE(28, 28));
   dl_add(m, dl_flatten());
   dl_add(m, dl_dense(128, DL_RELU));
   dl_add(m, dl_dense(10, DL_SOFTMAX));
   dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f));
   dl_fit(m, &train, &opts);  dl_evaluate(m, &test, &metrics);  dl_save(m, "m.dlc");

   A final softmax with sparse categorical cross-entropy (or a final sigmoid with
   binary cross-entropy) is fused into the loss, which then works on the logits:
   exact and stable where log(softmax) would round to -inf. dl_predict still
   returns probabilities. Without such a final activation the outputs are taken
   as logits (Keras' from_logits=True). */

enum dl_activation { DL_LINEAR = 0, DL_RELU, DL_SIGMOID, DL_TANH, DL_SOFTMAX, DL_LEAKY_RELU };
enum dl_loss { DL_LOSS_MSE = 1, DL_LOSS_BCE, DL_LOSS_SPARSE_CE };
enum dl_layer_kind { DL_LAYER_DENSE = 1, DL_LAYER_DROPOUT, DL_LAYER_FLATTEN, DL_LAYER_ACTIVATION,
                     DL_LAYER_CONV2D, DL_LAYER_MAX_POOL2D, DL_LAYER_AVG_POOL2D, DL_LAYER_GLOBAL_AVG_POOL2D,
                     DL_LAYER_BATCH_NORM, DL_LAYER_RESHAPE };

/* A layer description; the constructors below fill it. */
typedef struct dl_layer {
    int   kind;        /* DL_LAYER_* */
    int   units;       /* dense: output width; conv2d: filters */
    int   activation;  /* DL_LINEAR, DL_RELU, ... */
    float rate;        /* dropout: fraction dropped in training */
    float alpha;       /* leaky relu: slope for x < 0 (0 = 0.01) */
    int   kh, kw;      /* conv2d: kernel; pooling: window */
    dl_conv2d_opts conv;
    dl_pool2d_opts pool;
    dl_batch_norm_opts bn;
    dl_shape shape;    /* reshape: the new sample shape */
} dl_layer;

DLDEF dl_layer dl_dense(int units, int activation);   /* Glorot-uniform kernel, zero bias */
DLDEF dl_layer dl_dropout(float rate);
DLDEF dl_layer dl_flatten(void);
DLDEF dl_layer dl_activation(int activation);
/* Keras' Conv2D(filters, (kh, kw), activation=...): Glorot-uniform kernel, zero bias;
   o NULL = stride 1, 'valid' padding, bias. Samples (h, w) are taken as (h, w, 1). */
DLDEF dl_layer dl_conv2d(int filters, int kh, int kw, int activation, const dl_conv2d_opts *o);
DLDEF dl_layer dl_max_pool2d(int size_h, int size_w, const dl_pool2d_opts *o);
DLDEF dl_layer dl_avg_pool2d(int size_h, int size_w, const dl_pool2d_opts *o);
DLDEF dl_layer dl_global_avg_pool2d(void);
/* Keras' BatchNormalization() over the last axis: gamma ones, beta zeros, moving
   mean zeros, moving variance ones. */
DLDEF dl_layer dl_batch_norm(const dl_batch_norm_opts *o);
DLDEF dl_layer dl_reshape(dl_shape sample_shape);

typedef struct dl_model dl_model;

DLDEF dl_model *dl_sequential(dl_shape input);        /* one sample's shape */
DLDEF void      dl_model_free(dl_model *m);
DLDEF int       dl_add(dl_model *m, dl_layer layer);
/* Seed for weight initialisation, shuffling and dropout (default 0). Call it
   before dl_compile: same seed and thread count => bit-identical training. */
DLDEF void      dl_model_seed(dl_model *m, uint64_t seed);
/* Builds the graph and initialises the weights. Every optimizer field is checked
   (a NaN or negative rate, beta1 outside [0, 1), an unknown schedule: DL_ERR naming
   it). The activation arena is planned at the first dl_fit / dl_evaluate /
   dl_predict, for the batch it uses, within DLCORE_MAX_ARENA. */
DLDEF int       dl_compile(dl_model *m, int loss, dl_optimizer opt);
/* Prints the layers, output shapes and parameter counts. */
DLDEF void      dl_summary(const dl_model *m, FILE *out);
DLDEF size_t    dl_model_param_count(const dl_model *m);

enum { DL_PROGRESS_AUTO = 0, DL_PROGRESS_LINES, DL_PROGRESS_BAR, DL_PROGRESS_NONE };

typedef struct dl_fit_opts {
    int   epochs;            /* 0 = 1 (negative: DL_ERR) */
    int   batch;             /* 0 = 32 (negative: DL_ERR) */
    float validation_split;  /* the last fraction of the data is held out, as in Keras */
    const dl_dataset *validation;  /* or an explicit validation set */
    int   no_shuffle;        /* 1: keep the data order (shuffled every epoch otherwise) */
    int   progress;          /* DL_PROGRESS_*: AUTO = a bar on a terminal, lines otherwise */
    FILE *out;               /* where progress goes (NULL = stdout) */
    const char *csv_log;     /* epoch,loss,accuracy,val_loss,val_accuracy,seconds */
    int   profile;           /* 1: after training, print to `out` where a step's time went:
                                batch gather, each node's forward and backward, the updates */
    int   augment_shift;     /* > 0: each training sample moves by a random whole number of
                                pixels in [-N, N] down and across, zero fill */
    int   augment_flip;      /* 1: each training sample is mirrored left-right with probability 1/2.
                                Both need (h, w) or (h, w, c) samples; drawn from the model's
                                seed, so the same seed gives the same run */
    const dl_comm *comm;     /* data parallel over ranks (NULL: one process); see below */
} dl_fit_opts;

/* With opts.comm, dl_fit trains one model on all ranks and gives (up to the order
   of floating-point sums) the weights one process gets with the same global batch:
   it broadcasts rank 0's weights, optimizer state and seed; splits each `batch` rows
   of the shuffled order (the same on every rank) into one contiguous part per rank;
   sums the weighted gradients before every update; keys dropout masks by a row's
   position in the epoch; and reduces the loss and accuracy, training and validation,
   so every rank's history holds the global figures. Only rank 0 prints, writes the
   CSV log and the profile. A failing callback fails dl_fit on that rank. */

/* Per-epoch figures of the last dl_fit (NaN where not applicable). */
typedef struct dl_history_row { float loss, accuracy, val_loss, val_accuracy, seconds; } dl_history_row;

/* The data are checked once per call before training starts: a non-finite input,
   a label that is not a class of the output, a BCE target outside [0, 1] or a
   non-finite regression target is DL_ERR naming the sample (and feature). The
   weights are checked once an epoch: a non-finite one stops training, named. A
   failed call leaves dl_history() consistent (this call's rows so far, or the
   previous call's if it failed before training). */
DLDEF int dl_fit(dl_model *m, const dl_dataset *train, const dl_fit_opts *opts);
DLDEF int dl_history(const dl_model *m, const dl_history_row **rows);  /* returns the count */

#ifndef DL_MAX_CLASSES
#define DL_MAX_CLASSES 32
#endif

typedef struct dl_metrics {
    int   n;                 /* samples evaluated */
    float loss;
    float accuracy;          /* NaN for regression (MSE) */
    int   n_classes;         /* classification: confusion is n_classes^2 (0 if > DL_MAX_CLASSES) */
    int   confusion[DL_MAX_CLASSES][DL_MAX_CLASSES];   /* [true][predicted] */
    float precision[DL_MAX_CLASSES], recall[DL_MAX_CLASSES], f1[DL_MAX_CLASSES];
} dl_metrics;

DLDEF int dl_evaluate(dl_model *m, const dl_dataset *data, dl_metrics *out);
/* The same, each rank evaluating its contiguous share of data (every rank passes
   all of it) and the sums reduced over comm: every rank gets the whole set's metrics. */
DLDEF int dl_evaluate_comm(dl_model *m, const dl_dataset *data, dl_metrics *out, const dl_comm *comm);
DLDEF void dl_metrics_print(const dl_metrics *mt, FILE *out);
/* Outputs for n samples (x: n * input size floats) into out (n * output size):
   probabilities after a final softmax/sigmoid, raw values otherwise.
   Row i's outputs depend on row i alone, bit for bit, whatever n is. A model's
   activations live in its graph's arena: one thread at a time per model. An inf or
   NaN in x is refused, naming the sample and feature; an int8 model finds it while it
   quantizes the rows, so out may then hold the outputs of the chunks (up to 256 rows)
   before it. */
DLDEF int dl_predict(dl_model *m, const float *x, int n, float *out);
DLDEF int dl_output_size(const dl_model *m);
DLDEF int dl_input_size(const dl_model *m);
/* One sample's shape, as given to dl_sequential (ndim 0 for NULL). */
DLDEF dl_shape dl_input_shape(const dl_model *m);

/* ---- 5. Compression: int8 quantization, magnitude pruning, fp16 storage ----------------

   Each changes the model in memory and how dl_save stores it:
   - dl_quantize_int8: dense and conv2d kernels symmetric int8 per output channel;
     activations quantized at run time, per row (a dense layer's input vector, a conv
     layer's input image) as PyTorch's quantize_dynamic does, or, with calibration data,
     with one fixed range per layer (min/max over the calibration batches). dl_predict
     and dl_evaluate then run the int8 GEMM (dl_gemm_u8s8s32) with a fused epilogue:
     y = sx sw (acc - zx colsum(w)) + bias, then the activation; a conv layer gathers
     each output pixel's patch of codes first (padding is the zero point, exactly 0.0).
     Grouped and depthwise convs, pooling and batch norm (with its moving statistics)
     run in float between them. The float weights become the dequantized ones. An int8
     model cannot be trained further.
   - dl_prune: zeroes the smallest-magnitude weights of every dense kernel until the
     target sparsity, while fine-tuning with dl_fit: the sparsity follows TF Model
     Optimization's PolynomialDecay, s(t) = s_f + (s_i - s_f) (1 - t / T)^power over
     the T training steps, the masks are recomputed every `frequency` steps and keep
     the pruned weights at zero through every update. Without data it prunes at once.
     Pruned tensors are stored sparse (a bitmask and the non-zero values).
   - dl_model_to_fp16: weights rounded to IEEE half and stored as half.
   They combine: prune, then int8 and/or fp16 (int8 wins for dense kernels; fp16 then
   applies to the biases). */

/* Tensor encodings, also the dtype codes of model files. */
enum dl_encoding { DL_ENC_F32 = 1, DL_ENC_F16, DL_ENC_INT8, DL_ENC_SPARSE_F32, DL_ENC_SPARSE_F16, DL_ENC_SPARSE_INT8 };

typedef struct dl_quant_opts {
    const dl_dataset *calib;   /* NULL: dynamic per-row activation ranges */
    int calib_batches;         /* 0 = 8 batches of 256 samples */
} dl_quant_opts;

typedef struct dl_prune_opts {
    float sparsity;            /* target fraction of zeros per dense kernel, in [0, 1) */
    float initial_sparsity;    /* 0 by default, as PolynomialDecay's */
    float power;               /* 0 = 3 */
    int   frequency;           /* steps between mask updates (0 = 100) */
} dl_prune_opts;

DLDEF int dl_quantize_int8(dl_model *m, const dl_quant_opts *opts);
/* train NULL: one-shot pruning; else fine-tuning with dl_fit(m, train, fit). */
DLDEF int dl_prune(dl_model *m, const dl_prune_opts *opts, const dl_dataset *train, const dl_fit_opts *fit);
DLDEF int dl_model_to_fp16(dl_model *m);
DLDEF int dl_model_is_int8(const dl_model *m);
/* Drops the int8 form: the model runs (and trains, and saves) in float again, with the
   dequantized weights. */
DLDEF int dl_model_dequantize(dl_model *m);

/* What dl_save writes for the i-th parameter tensor (graph order). */
typedef struct dl_tensor_info {
    const char *name;
    dl_shape shape;
    int encoding;        /* DL_ENC_* */
    size_t bytes;        /* payload bytes in the file (after name, dtype and dims) */
    size_t nonzeros;
} dl_tensor_info;
DLDEF int dl_model_tensor_count(const dl_model *m);
DLDEF int dl_model_tensor_info(const dl_model *m, int i, dl_tensor_info *info);
DLDEF const char *dl_encoding_name(int encoding);   /* "f32", "f16", "int8", "sparse-f32", ... */
/* The int8 form of layer `layer` (an index into the layers): weights [in][out] (a conv
   kernel's [kh kw c][oc]) as the float tensor is laid out, one scale per output, and the
   static activation range
   (range[0] <= 0 <= range[1]) or NULL when dynamic. DL_ERR if the layer has none. */
DLDEF int dl_model_int8_weights(const dl_model *m, int layer, const int8_t **w, const float **scales,
                                const float **range);
/* The i-th layer's description (0 <= i < dl_model_layer_count). */
DLDEF int dl_model_layer_count(const dl_model *m);
DLDEF dl_layer dl_model_layer(const dl_model *m, int i);
DLDEF int dl_model_loss(const dl_model *m);
DLDEF dl_shape dl_model_input_shape(const dl_model *m);

/* Model files: architecture, loss, optimizer settings and weights (not the
   optimizer's moment estimates), little-endian, versioned, CRC-32 protected.
   dl_save writes "<path>.tmp" and renames it, so the target is never partial.
   dl_load validates every field against the file before allocating, and the
   range of each (counts, enums, optimizer floats, finite weights), naming it; it
   allocates the weights the file holds and no activation arena (see dl_compile).
   dl_evaluate and dl_predict scan their inputs as dl_fit does.

   Format version 1 (all integers u32 unless noted, floats IEEE f32):
     "DLCM" | version | u64 file size | input ndim | 4 x dims |
     loss | optimizer: kind nesterov schedule step_size t_max, then f32 lr momentum
     beta1 beta2 eps weight_decay l1 l2 clip_norm gamma lr_min | epochs trained |
     layer count | per layer: kind units activation f32 rate f32 alpha |
     tensor count | per tensor: name length (1..47) | name bytes | dtype | ndim (1..4) |
     dims | data | u32 CRC-32 of every byte before it.
   Format version 2 (written now; version 1 files still load): the same, but each layer
   record goes on after alpha with kh kw | conv: stride_h stride_w dil_h dil_w groups
   padding pad_top pad_bottom pad_left pad_right no_bias | pool: stride_h stride_w padding
   pad_top pad_bottom pad_left pad_right | f32 bn momentum | f32 bn eps | reshape: ndim
   4 x dims | 2 x u32 0 (reserved) (136 bytes a layer), and the tensors are the parameters followed by the
   dl_state tensors (batch norm's moving mean and variance), in graph order.
   dtype (enum dl_encoding) and data:
     1 f32: the values.   2 f16: u16 IEEE halves.
     3 int8 (dense kernels [in, out] and ungrouped conv2d kernels [kh, kw, c, oc] only):
       u32 flags (1: static activation range) |
       f32 range lo, hi | out x f32 scales | the s8 codes (value = code * scale[column]).
     4, 5, 6 sparse f32, f16, int8: u32 non-zero count | bitmask of ceil(n / 8) bytes
       (bit e % 8 of byte e / 8 set: element e is non-zero) | the int8 header (6 only) |
       the non-zero values in the base encoding, in order.
   dl_state tensors are always f32. */
#define DL_MODEL_FORMAT_VERSION 2
DLDEF int       dl_save(const dl_model *m, const char *path);
DLDEF dl_model *dl_load(const char *path);

/* The graph underneath, for users who want to go beyond sequential models. */
DLDEF dl_graph *dl_model_graph(dl_model *m);

#ifdef __cplusplus
}
#endif
#endif /* DLCORE_H */

/* ================================================================================== */
/*                               IMPLEMENTATION                                       */
/* ================================================================================== */
#ifdef DLCORE_IMPLEMENTATION
#ifndef DLCORE_IMPLEMENTATION_DONE
#define DLCORE_IMPLEMENTATION_DONE

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <math.h>
#include <assert.h>
#include <time.h>
#include <limits.h>
#include <float.h>

#if !defined(DLCORE_MALLOC) && !defined(DLCORE_FREE) && !defined(DLCORE_REALLOC)
#define DL__DEFAULT_MALLOC 1
#define DLCORE_MALLOC(sz) malloc(sz)
#define DLCORE_REALLOC(p, sz) realloc(p, sz)
#define DLCORE_FREE(p) free(p)
#elif !defined(DLCORE_MALLOC) || !defined(DLCORE_FREE) || !defined(DLCORE_REALLOC)
#error "dlcore: define all of DLCORE_MALLOC, DLCORE_REALLOC and DLCORE_FREE, or none"
#endif
#ifndef DLCORE_ASSERT
#define DLCORE_ASSERT(x) assert(x)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#define DL__THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define DL__THREAD_LOCAL __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define DL__THREAD_LOCAL __thread
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define DL__THREAD_LOCAL _Thread_local
#else
#define DL__THREAD_LOCAL
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 0. Conventions ============================================================== */

static DL__THREAD_LOCAL char dl__errbuf[512];

DLDEF const char *dl_last_error(void) { return dl__errbuf; }

/* Records a printf-style message for dl_last_error() and returns DL_ERR, so a
   failing call reads `return dl__error("%s: bad magic", path);`. */
#if defined(__GNUC__) || defined(__clang__)
#define DL__UNUSED __attribute__((unused))
/* On MinGW the `printf` archetype means msvcrt's printf, which rejects %zu; under C99
   (__USE_MINGW_ANSI_STDIO, on by default) or UCRT the vsnprintf below is C99's. */
#if defined(__MINGW32__) && (__USE_MINGW_ANSI_STDIO || defined(_UCRT))
__attribute__((format(gnu_printf, 1, 2)))
#else
__attribute__((format(printf, 1, 2)))
#endif
#else
#define DL__UNUSED
#endif
DL__UNUSED static int dl__error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dl__errbuf, sizeof dl__errbuf, fmt, ap);
    va_end(ap);
    return DL_ERR;
}

/* ==== 1. Kernels ================================================================== */
/* ---- 1.0 Platform headers ------------------------------------------------------------
   This section sits inside the header's extern "C" block; system headers (intrinsics
   above all) must not be, so the block is closed around them. */
#ifdef __cplusplus
}
#endif
#if !defined(DLCORE_NO_SIMD) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define DL__X86 1
#include <immintrin.h>
#include <cpuid.h>
#endif
#if !defined(DLCORE_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define DL__NEON 1
#include <arm_neon.h>
#ifdef __linux__
#include <sys/auxv.h>
#endif
#endif
/* Windows gets <windows.h> even without threads: dl_save's replacing rename and the
   fit timer need it too. */
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#elif !defined(DLCORE_NO_THREADS)
#include <pthread.h>
#include <unistd.h>
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
/* g++ 12 at -O2 reports the _mm512_undefined_ps() idiom inside its own AVX-512 and AVX2
   intrinsics (shuffles, max, widening, shifts) as "(may be) used uninitialized"; the
   warning is false, so the kernels that use them sit between these two. */
#if defined(__GNUC__) && !defined(__clang__)
#define DL__GXX_UNINIT_OFF _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
    _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define DL__GXX_UNINIT_ON _Pragma("GCC diagnostic pop")
#else
#define DL__GXX_UNINIT_OFF
#define DL__GXX_UNINIT_ON
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
   where the ISA has an edge kernel (AVX2, AVX-512: masks) that writes a partial tile itself.

   The A values are broadcast and the B row is the vector operand, so one k step costs
   MR broadcasts + NR/W vector loads for MR*NR/W FMAs (W = lanes per vector).

   Denormals: the kernels do not touch MXCSR/FPCR (no flush-to-zero). Changing the FP
   environment inside a library call would make results depend on which path ran and
   would leak into or fight the caller's own setting; Zen 4 and AArch64 cores run FMAs
   on subnormals at full speed, and trained MLP weights/activations are not subnormal
   in bulk anyway. A caller who wants FTZ sets it for their own thread. */

#if defined(__GNUC__) || defined(__clang__)
#define DL__INLINE_ALWAYS static inline __attribute__((always_inline))
#else
#define DL__INLINE_ALWAYS static inline
#endif

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
/* -- AVX2 edge tiles: any mr <= 6 rows and nr <= 16 columns, straight into C. Rows are
      rounded up to 2, 4 or 6 (packed panels are zero-padded, so the extra rows read
      zeros and are not stored); a ragged column vector is loaded and stored with
      vmaskmovps, which does not fault on the masked-off lanes, so an unpacked B is
      read in place. Without it a batch of 32 ran its last 2 rows as a whole 6-row tile
      through a buffer. Instances with only full vectors keep plain loads and stores. */
#define DL__E256_ROW(i) if (R > i) { t = _mm256_broadcast_ss(a + i * rsa);                \
    c##i##_0 = _mm256_fmadd_ps(t, b0, c##i##_0);                                         \
    if (V > 1) c##i##_1 = _mm256_fmadd_ps(t, b1, c##i##_1); }
#define DL__E256_STORE1(ci, acc, mk) do {                                                 \
    if (F) {                                                                             \
        if (beta == 0.0f) _mm256_storeu_ps(ci, _mm256_mul_ps(acc, va));                  \
        else _mm256_storeu_ps(ci, _mm256_fmadd_ps(acc, va, _mm256_mul_ps(vb, _mm256_loadu_ps(ci)))); \
    } else if (beta == 0.0f) {                                                           \
        _mm256_maskstore_ps(ci, mk, _mm256_mul_ps(acc, va));                             \
    } else {                                                                             \
        _mm256_maskstore_ps(ci, mk, _mm256_fmadd_ps(acc, va,                             \
                            _mm256_mul_ps(vb, _mm256_maskload_ps(ci, mk))));             \
    } } while (0)
#define DL__E256_STORE(i) if (R > i && mr > i) {                                          \
    DL__E256_STORE1(c + i * ldc, c##i##_0, m0);                                          \
    if (V > 1) DL__E256_STORE1(c + i * ldc + 8, c##i##_1, m1); }
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS
void dl__edge256_body(const int R, const int V, const int F, int k, const float *a, ptrdiff_t rsa,
                      ptrdiff_t csa, const float *b, ptrdiff_t sb, float *c, ptrdiff_t ldc,
                      float alpha, float beta, int mr, int nr)
{
    __m256 c0_0 = _mm256_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
           c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0,
           c5_1 = c0_0;
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    int p;
    for (p = 0; p < k; p++, a += csa, b += sb) {
        __m256 b0, b1, t;
        if (F) { b0 = _mm256_loadu_ps(b); b1 = V > 1 ? _mm256_loadu_ps(b + 8) : b0; }
        else { b0 = _mm256_maskload_ps(b, m0); b1 = V > 1 ? _mm256_maskload_ps(b + 8, m1) : b0; }
        DL__E256_ROW(0) DL__E256_ROW(1) DL__E256_ROW(2)
        DL__E256_ROW(3) DL__E256_ROW(4) DL__E256_ROW(5)
    }
    DL__E256_STORE(0) DL__E256_STORE(1) DL__E256_STORE(2)
    DL__E256_STORE(3) DL__E256_STORE(4) DL__E256_STORE(5)
}
#define DL__E256_INST(R, V, F)                                                            \
DL__TARGET("avx2,fma") static void dl__edge256_##R##x##V##F(int k, const float *a,        \
    ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb, float *c, ptrdiff_t ldc, \
    float alpha, float beta, int mr, int nr)                                             \
{ dl__edge256_body(R, V, F, k, a, rsa, csa, b, sb, c, ldc, alpha, beta, mr, nr); }
DL__E256_INST(2, 1, 0) DL__E256_INST(4, 1, 0) DL__E256_INST(6, 1, 0)
DL__E256_INST(2, 2, 0) DL__E256_INST(4, 2, 0) DL__E256_INST(6, 2, 0)
DL__E256_INST(2, 1, 1) DL__E256_INST(4, 1, 1) DL__E256_INST(6, 1, 1)
DL__E256_INST(2, 2, 1) DL__E256_INST(4, 2, 1) DL__E256_INST(6, 2, 1)

DL__TARGET("avx2,fma")
static void dl__edge_avx2(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                          ptrdiff_t sb, float *c, ptrdiff_t ldc, float alpha, float beta,
                          int mr, int nr)
{
    typedef void (*inst_fn)(int, const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            float *, ptrdiff_t, float, float, int, int);
    static const inst_fn inst[2][2][3] = {
        { { dl__edge256_2x10, dl__edge256_4x10, dl__edge256_6x10 },
          { dl__edge256_2x20, dl__edge256_4x20, dl__edge256_6x20 } },
        { { dl__edge256_2x11, dl__edge256_4x11, dl__edge256_6x11 },
          { dl__edge256_2x21, dl__edge256_4x21, dl__edge256_6x21 } } };
    int v = nr > 8;
    inst[nr == 8 * (v + 1)][v][(mr - 1) / 2](k, a, rsa, csa, b, sb, c, ldc, alpha, beta, mr, nr);
}

/* The first and last line of each row of a C tile (width floats), asked for before a
   full-tile k loop so that the tile arrives while it runs. */
DL__INLINE_ALWAYS void dl__prefetch_c_tile(const float *c, ptrdiff_t ldc, int rows, int width)
{
    int i;
    for (i = 0; i < rows; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + width - 1), _MM_HINT_T0);
    }
}

/* The full tile is the edge kernel's 6-row, 2-vector, full-column instance (below);
   only the C prefetch is its own. */
DL__TARGET("avx2,fma")
static void dl__ukr_avx2(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                         float *c, ptrdiff_t ldc, float alpha, float beta)
{
    dl__prefetch_c_tile(c, ldc, DL__AVX2_MR, DL__AVX2_NR);
    dl__edge256_body(6, 2, 1, k, a, rsa, csa, b, sb, c, ldc, alpha, beta, 6, 16);
}

/* -- AVX-512 12x32: 24 zmm accumulators + 2 for the B row + 1 broadcast = 27 of 32.
      Per k step 2 loads + 12 broadcasts feed 24 FMAs, well under the load ports. */
#define DL__AVX512_MR 12
#define DL__AVX512_NR 32
#define DL__C_PF_AHEAD 16   /* the full tile asks for C this many k steps before its end */
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
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__edge512_body(const int R, const int V, const int PF, int k, const float *a, ptrdiff_t rsa,
                      ptrdiff_t csa, const float *b, ptrdiff_t sb, float *c, ptrdiff_t ldc,
                      float alpha, float beta, int mr, __mmask16 m0, __mmask16 m1)
{
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, c1_0 = c0_0, c1_1 = c0_0, c2_0 = c0_0,
           c2_1 = c0_0, c3_0 = c0_0, c3_1 = c0_0, c4_0 = c0_0, c4_1 = c0_0, c5_0 = c0_0,
           c5_1 = c0_0, c6_0 = c0_0, c6_1 = c0_0, c7_0 = c0_0, c7_1 = c0_0, c8_0 = c0_0,
           c8_1 = c0_0, c9_0 = c0_0, c9_1 = c0_0, c10_0 = c0_0, c10_1 = c0_0, c11_0 = c0_0,
           c11_1 = c0_0;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    int p, p_c = k > DL__C_PF_AHEAD ? k - DL__C_PF_AHEAD : 0;
    for (p = 0; p < k; p++, a += csa, b += sb) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = b0, t;
        if (PF && p == p_c) dl__prefetch_c_tile(c, ldc, R, 16 * V);
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
{ dl__edge512_body(R, V, 0, k, a, rsa, csa, b, sb, c, ldc, alpha, beta, mr, m0, m1); }
DL__E512_INST(4, 1) DL__E512_INST(8, 1) DL__E512_INST(12, 1)
DL__E512_INST(4, 2) DL__E512_INST(8, 2) DL__E512_INST(12, 2)

/* The full tile is the edge kernel's 12-row, 2-vector instance with all-ones masks
   (above), plus two things of its own:
   - The C tile is prefetched DL__C_PF_AHEAD k steps before the end, not at the start:
     asked for at the start, its 24 lines came into L1 only to be pushed out again by the
     32 KiB of B that stream through during the tile. Zen 5, 2048^3, medians of
     interleaved runs (make bench-ab) against the start prefetch: 1.01-1.05x (the most
     when the host was noisy); 1024^3 and the MLP shapes within the noise, none slower.
     The AVX2 tile (half the FMA rate, so more time per line of B) measured no change
     and keeps its prefetch at the start.
   - rsa == 1 (packed A, or A^T read in place) gets its own instance, where the 12 row
     offsets are constants: with rsa a variable they took 11 registers and, short of
     registers, three reloads from the stack per k step (2048^3: 1.01x). */
DL__TARGET("avx512f")
static void dl__ukr_avx512(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                           float *c, ptrdiff_t ldc, float alpha, float beta)
{
    if (rsa == 1)
        dl__edge512_body(12, 2, 1, k, a, 1, csa, b, sb, c, ldc, alpha, beta, 12, (__mmask16)0xffff,
                         (__mmask16)0xffff);
    else
        dl__edge512_body(12, 2, 1, k, a, rsa, csa, b, sb, c, ldc, alpha, beta, 12,
                         (__mmask16)0xffff, (__mmask16)0xffff);
}

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
   Loop nest (section 1.6), in the row-major view where A is broadcast and B is the vector
   operand:  for MC rows { for KC { pack A block; for NC cols { pack B block;
                 for MR rows { for NR cols { microkernel } } } } }
   What each block size pays for, on a big GEMM:
   - KC: every pass over K reads and writes all of C, so K / KC passes of C traffic (at
     2048^3 with KC = 256: 8 x 32 MiB). Larger is better until the A micro-panel
     (MR x KC) stops fitting in L1 beside the B micro-panel each tile streams past it:
     then A is re-read from L2 by every tile, which costs little (AVX-512, KC = 512: 24 KiB
     of A per 6144-cycle tile against 64 KiB of B).
   - NC: the packed A block (MC x KC, megabytes) lives in L3, and the whole of it is
     streamed again for every NC block of columns; each A micro-panel comes from L3
     once per NC / NR tiles (32 AVX-512 tiles at NC = 1024), which is where a tile
     waits on memory most, so fewer, wider column blocks win. (Not for a rectangle of
     at most 256 rows, whose A block is small enough for L2: NC = 256 there, 1.6.)
   - The B block (KC x NC) then outgrows L2, so part of each B micro-panel comes from
     L3: at KC = 512 a tile reads 64 KiB of B in 6144 cycles, ~11 bytes a cycle of a
     contiguous stream, and measured no slower than an L2-sized B block (below).
   - MC: the A block is packed once per KC pass and reused by every B block: MC*KC*4 B
     <= a few MiB (a core's share of a shared L3): 3072 x 512 x 4 = 6 MiB.
   - kc_at: the KC of a job that reads A^T in place instead of packing it (dl__job_kc).
   The textbook rule (A micro-panel in L1, B block in half of L2) gives KC = 256-320,
   NC = 256-384 on Zen 4/5; on Zen 5 those ran 5-8% slower at 2048^3 than 512/1024, and
   ~18% slower under a streaming load on the other core (the table's avx512 row has
   the figures). The AVX2 row (6 x 16 tiles) took the same KC and NC on measurement.
   The table is fixed per ISA rather than read from sysconf/cpuid at run time: KC sets
   the summation order, so a fixed table makes an ISA give the same bits on every
   machine; cache sizes inside one ISA class vary little (32-48 KiB L1d, 1-2 MiB L2);
   and VMs/containers often report missing or host-wide cache sizes. */
enum { DL__ISA_SCALAR, DL__ISA_AVX2, DL__ISA_AVX512, DL__ISA_NEON, DL__ISA_COUNT };

typedef struct {
    const char *name;
    int mr, nr, kc, nc, mc;
    int kc_at;       /* KC instead when op(A) = A^T is read in place (dl__job_kc) */
    int a_rows;      /* kernel accepts a row stride for A (reads row-major A in place) */
    dl__ukr_fn ukr;  /* NULL: not compiled into this build */
    /* optional: any mr <= MR x nr <= NR tile straight into C, reading only nr columns
       of B (so a ragged B panel need not be packed); NULL: edges go through a tile */
    void (*edge)(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t sb,
                 float *c, ptrdiff_t ldc, float alpha, float beta, int mr, int nr);
    int edge_rows;   /* edge reads mr rounded up to a multiple of this many rows of A */
} dl__isa_desc;

#define DL__MAX_MR 12
#define DL__MAX_NR 32

static const dl__isa_desc dl__isa_table[DL__ISA_COUNT] = {
    /* scalar 4x8: L1 panel 4*256*4 = 4 KiB, B block 256x256 = 256 KiB */
    { "scalar", DL__SC_MR, DL__SC_NR, 256, 256, 1024, 256, 1, dl__ukr_scalar, NULL, 0 },
#ifdef DL__X86
    /* Zen 5, AVX2 forced, against OpenBLAS's AVX2 (Haswell) kernels (make bench-ab):
       NC 256 -> 1024 made 2048^3 1.03-1.04x and 1024^3 1.035x faster, the MLP shapes
       unchanged. Earlier, on Zen 3 (L2 512 KiB), KC/NC = 512/256, 512/128, 256/256 and
       384/168 all measured 70-76 GFLOP/s at 2048^3, inside that VM's noise. */
    { "avx2", DL__AVX2_MR, DL__AVX2_NR, 512, 1024, 2046, 512, 1, dl__ukr_avx2, dl__edge_avx2, 2 },
    /* Zen 5, interleaved with OpenBLAS's AVX-512 kernels in one process (make bench-ab),
       2048^3: KC/NC 512/1024 against the earlier 256/256 1.05-1.08x on a quiet host,
       1.12-1.19x on a busy one, 1.18x with a 64 MiB streaming loop on the other core;
       against 512/384 1.08x, 512/512 1.05x; 512/2048 and 768/1024 the same. 1024^3,
       512^3 and the MLP shapes (k = 784 now runs 2 KC passes instead of 4) within the
       noise, the MNIST training step unchanged. MC = 1536 or 768 measured no better.
       Before the C prefetch moved to the end of the tile (section 1.1), KC = 512 had
       measured 0.92-0.98x of 256 with NC = 256. On Zen 4 (32 KiB L1d, double-pumped
       FMA) a sweep of KC 256..512, NC 192..768, MC 192..3072 found every KC >= 256 with
       NC >= 256 within 1-2% of each other, MC = 192 or NC = 192 5-25% behind. */
    { "avx512", DL__AVX512_MR, DL__AVX512_NR, 512, 1024, 3072, 256, 1, dl__ukr_avx512,
      dl__edge_avx512, 4 },
#else
    { "avx2", 6, 16, 512, 1024, 2046, 512, 1, NULL, NULL, 0 },
    { "avx512", 12, 32, 512, 1024, 3072, 256, 1, NULL, NULL, 0 },
#endif
#ifdef DL__NEON
    /* AArch64 servers/phones (L1d 32-64 KiB, L2 1 MiB on Neoverse N1/V1): KC = 16K/32
       = 512 (the 8 x KC A panel is 16 KiB, half of the smaller L1), NC = 512K/2048 = 256
       -> 240 (20 x NR); MC = 1024 (2 MiB packed A, inside a cluster's L3/SLC). */
    { "neon", DL__NEON_MR, DL__NEON_NR, 512, 240, 1024, 512, 0, dl__ukr_neon, NULL, 0 },
#else
    { "neon", 8, 12, 512, 240, 1024, 512, 0, NULL, NULL, 0 },
#endif
};

/* ==== 1.3 Dispatch and lazy initialisation ===============================================
   One-time init (CPU features, $DLCORE_ISA, $DLCORE_THREADS, the pool) runs on the first
   call of any public kernel function; with threads it is guarded by pthread_once /
   InitOnceExecuteOnce, so racing first calls are safe. */
static int dl__isa_cur = DL__ISA_SCALAR;
static int dl__isa_have[DL__ISA_COUNT];
#ifdef DL__X86
static int dl__have_avx512bwdq;   /* AVX-512 BW+DQ too (every AVX-512 CPU since Skylake-SP) */
static int dl__have_vnni;         /* AVX-512 VNNI (vpdpbusd) with BW: the int8 GEMM of 1.9 */
static int dl__have_f16c;         /* F16C half <-> float conversions */
#endif
#ifdef DL__NEON
static int dl__have_dotprod;      /* ARMv8.2 sdot/udot (HWCAP_ASIMDDP) */
#endif
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
    dl__have_avx512bwdq = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    dl__have_vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    {   /* clang 14's __builtin_cpu_supports does not know "f16c": CPUID.1:ECX bit 29 */
        unsigned eax, ebx, ecx = 0, edx;
        dl__have_f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1) && __builtin_cpu_supports("avx");
    }
#endif
#ifdef DL__NEON
    dl__isa_have[DL__ISA_NEON] = 1;
#if defined(__linux__) && defined(AT_HWCAP)
    dl__have_dotprod = (getauxval(AT_HWCAP) >> 20 & 1) != 0;   /* HWCAP_ASIMDDP */
#endif
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
   dl__parallel_for while one is running (another user thread, or nested) runs inline.
   A job names the most workspace one of its tasks takes, and every thread of the pool
   grows its own to that before taking tasks: which tasks a thread gets varies from call
   to call, and after the first call with a shape no thread may allocate. */

/* Per-thread grow-only packing workspace. A second one holds what a convolution call
   prepares on the calling thread and shares read-only with its tasks (section 1.9),
   since those tasks use the first one of whichever thread runs them. */
static DL__THREAD_LOCAL char *dl__ws_raw;
static DL__THREAD_LOCAL size_t dl__ws_cap;
static DL__THREAD_LOCAL char *dl__ws2_raw;
static DL__THREAD_LOCAL size_t dl__ws2_cap;

static void dl__ws_free(void)
{
    if (dl__ws_raw) DLCORE_FREE(dl__ws_raw);
    dl__ws_raw = NULL;
    dl__ws_cap = 0;
    if (dl__ws2_raw) DLCORE_FREE(dl__ws2_raw);
    dl__ws2_raw = NULL;
    dl__ws2_cap = 0;
}

/* At least `floats` floats, 64-byte aligned; NULL if the allocator fails. */
static float *dl__ws_get(size_t floats)
{
    size_t bytes = floats * sizeof(float) + 64;
    if (bytes > dl__ws_cap) {
        char *p = (char *)DLCORE_MALLOC(bytes);
        if (!p) return NULL;
        if (dl__ws_raw) DLCORE_FREE(dl__ws_raw);
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
DL__UNUSED static void dl__parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx, size_t ws_floats)
{
    int t;
    (void)ws_floats;
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
    size_t ws_floats;
    void (*fn)(void *ctx, int task);
    void *ctx;
    dl__mutex mu;   /* guards everything below it in time: job fields, gen, counters */
    dl__mutex busy; /* held by the one dl__parallel_for (or resize) using the pool */
    dl__cond wake, done;
} dl__pool;

/* Before sleeping on a condition variable, a worker waiting for the next job and the
   caller waiting for the workers spin a while (about 50-150 us) on the counter they
   wait for: in a training step jobs follow each other within microseconds, and a
   wake-up through the condition variable costs tens of microseconds on a VM. With the
   order below, the CNN's training on 2 threads went from 2.85 to 2.46 s (19 200
   samples; 1 thread: about 3.4 s). The spin reads with atomic loads what is written,
   under mu, with atomic stores; compilers without the GNU atomic builtins go straight
   to sleep. */
#if defined(__GNUC__) || defined(__clang__)
#define DL__SPINS 4096
#define DL__LOAD_INT(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define DL__STORE_INT(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
static void dl__pause(void)
{
#if defined(DL__X86)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#else
#define DL__SPINS 0
#define DL__LOAD_INT(p) (*(p))
#define DL__STORE_INT(p, v) (*(p) = (v))
static void dl__pause(void) {}
#endif

/* Runs tasks of the current job until none are left; called with mu held. The caller
   takes tasks from the bottom and the workers from the top: with two threads (and the
   worker awake, above) a batch's images stay on the same core from one op to the
   next, so what one op wrote is in that core's caches when the next reads it. */
static void dl__pool_drain(int from_top)
{
    while (dl__pool.next < dl__pool.n_tasks) {
        int t = from_top ? --dl__pool.n_tasks : dl__pool.next++;
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
        if (DL__SPINS && dl__pool.gen == seen && !dl__pool.stop) {
            int s;
            dl__unlock(&dl__pool.mu);
            for (s = 0; s < DL__SPINS && DL__LOAD_INT(&dl__pool.gen) == seen && !DL__LOAD_INT(&dl__pool.stop); s++) dl__pause();
            dl__lock(&dl__pool.mu);
        }
        while (dl__pool.gen == seen && !dl__pool.stop) dl__cond_wait(&dl__pool.wake, &dl__pool.mu);
        if (dl__pool.stop) break;
        seen = dl__pool.gen;
        if (dl__pool.ws_floats) {
            size_t ws = dl__pool.ws_floats;
            dl__unlock(&dl__pool.mu);
            (void)dl__ws_get(ws); /* a failure shows in the task that needs it */
            dl__lock(&dl__pool.mu);
        }
        dl__pool_drain(1);
        DL__STORE_INT(&dl__pool.running, dl__pool.running - 1);
        if (dl__pool.running == 0) dl__cond_broadcast(&dl__pool.done);
    }
    dl__unlock(&dl__pool.mu);
    dl__ws_free();
}

#ifdef _WIN32
static DWORD WINAPI dl__worker_main(LPVOID arg) { dl__worker_loop((unsigned)(uintptr_t)arg); return 0; }
static int dl__thread_start(dl__thread *t, unsigned gen)
{
    *t = CreateThread(NULL, 0, dl__worker_main, (LPVOID)(uintptr_t)gen, 0, NULL);
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
    DL__STORE_INT(&dl__pool.stop, 1);
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
   there is one thread or one task, or when the pool is already in use. ws_floats: the
   most dl__ws_get asks for in one task (0: none). */
DL__UNUSED static void dl__parallel_for(int n_tasks, void (*fn)(void *ctx, int task), void *ctx, size_t ws_floats)
{
    int t;
    dl__init();
    if (ws_floats) (void)dl__ws_get(ws_floats);
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
    dl__pool.ws_floats = ws_floats;
    dl__pool.next = 0;
    DL__STORE_INT(&dl__pool.running, dl__pool.nworkers);
    DL__STORE_INT(&dl__pool.gen, dl__pool.gen + 1);
    dl__cond_broadcast(&dl__pool.wake);
    dl__pool_drain(0);
    if (DL__SPINS && dl__pool.running > 0) {   /* the workers are on their last tasks */
        int s;
        dl__unlock(&dl__pool.mu);
        for (s = 0; s < DL__SPINS && DL__LOAD_INT(&dl__pool.running) > 0; s++) dl__pause();
        dl__lock(&dl__pool.mu);
    }
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
                memcpy(d, src, (size_t)rows * sizeof(float));
                for (i = rows; i < mr; i++) d[i] = 0.0f;
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
                memcpy(d, src, (size_t)cols * sizeof(float));
                for (j = cols; j < nr; j++) d[j] = 0.0f;
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
/* epi != NULL: C is not written. Each band of up to MR rows x NC columns of the
   product (alpha applied) goes to epi(ctx, band, ldband, row, col, rows, cols) while
   it is still in L1, which then consumes it (the optimizer update of a weight gradient,
   section 3). Needs k <= KC, so that a band holds finished sums. */
typedef void (*dl__gemm_epi_fn)(void *ctx, const float *band, ptrdiff_t ldband, int row, int col,
                                int rows, int cols);
typedef struct {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    ptrdiff_t lda, ldb, ldc;
    const dl__isa_desc *isa;
    int split_n, n_tasks, chunk;
    dl__gemm_epi_fn epi;
    void *epi_ctx;
} dl__gemm_job;

/* Read A / B in place? Only for small shapes: there a packed block is reused by few
   tiles, so the copy is a visible share of the time; for big ones packing wins (no L1
   set conflicts from power-of-two strides, no TLB misses). A row-major A needs a kernel
   that takes a row stride (d->a_rows). B in place also needs the KC rows a block spans
   to fit in half of L2: with KC = 512, (256,2048,2048) NN read a B micro-panel as 512
   rows 8 KiB apart and ran at 0.70x of packing it (0.75x OpenBLAS; packed 0.98x). */
#define DL__DIRECT_MAX_B_SPAN ((size_t)512 << 10)
static int dl__direct_ok_a(const dl__gemm_job *g)
{
    return g->n <= DL__DIRECT_MAX_N && (g->ta || g->isa->a_rows);
}

/* The job's KC. An A^T read in place hands the tile one micro-panel row per k step,
   lda apart, so a KC of 512 makes it 512 scattered lines, which no longer stay in L1
   from one tile to the next; packing it instead costs a strided pass of its own, more
   than the few tiles that reuse it save. AVX-512 therefore keeps 256 there: faster than
   512 by 1.08x and 1.15x at (1000,256,1000) TN, 1.18x and 1.23x at (2048,256,2048) TN
   in two runs each (make bench-ab, Zen 5). A fixed function of the shape, so results
   stay the same from run to run. */
static int dl__job_kc(const dl__gemm_job *g)
{
    return g->ta && dl__direct_ok_a(g) ? g->isa->kc_at : g->isa->kc;
}

static int dl__direct_ok_b(const dl__gemm_job *g)
{
    int kc = dl__job_kc(g);
    size_t rows = (size_t)(g->k < kc ? g->k : kc);
    return !g->tb && g->m <= DL__DIRECT_MAX_M
        && rows * (size_t)g->ldb * sizeof(float) <= DL__DIRECT_MAX_B_SPAN;
}

#define DL__FEW_ROWS 256
#define DL__FEW_ROWS_NC 256

/* Column block width for a block of m rows. A rectangle of few rows re-streams its small
   A block from L2 for each column block, so there a B block that stays in L2 (256
   columns) wins over fewer, wider ones: 256 rows x 2048 x 2048, NN/NT/TN, 1.02-1.04x on
   AVX-512 and AVX2. */
static int dl__gemm_nc(const dl__isa_desc *d, int m)
{
    return m <= DL__FEW_ROWS && d->nc > DL__FEW_ROWS_NC ? DL__FEW_ROWS_NC : d->nc;
}

/* Workspace floats of an m x n block: packed A, packed B and the epilogue band. It
   never shrinks as m or n grow, so a job's first (full) block needs the most. */
static size_t dl__gemm_block_floats(const dl__gemm_job *g, int m, int n)
{
    const dl__isa_desc *d = g->isa;
    const int NC = dl__gemm_nc(d, m), KC = dl__job_kc(g), MC = d->mc, k = g->k;
    int mcap = m < MC ? m : MC, ncap = n < NC ? n : NC, kcap = k < KC ? k : KC;
    return (size_t)((mcap + d->mr - 1) / d->mr) * d->mr * kcap
         + (size_t)((ncap + d->nr - 1) / d->nr) * d->nr * kcap
         + (g->epi ? (size_t)d->mr * ncap : 0);
}

/* C[m0:m1, n0:n1] of the job. */
static void dl__gemm_block(const dl__gemm_job *g, int m0, int m1, int n0, int n1)
{
    const dl__isa_desc *d = g->isa;
    const int MR = d->mr, NR = d->nr;
    const int NC = dl__gemm_nc(d, m1 - m0);
    const int KC = dl__job_kc(g), MC = d->mc;
    int m = m1 - m0, n = n1 - n0, k = g->k;
    int mcap = m < MC ? m : MC, ncap = n < NC ? n : NC, kcap = k < KC ? k : KC;
    int direct_a = dl__direct_ok_a(g), direct_b = dl__direct_ok_b(g);
    size_t a_sz = (size_t)((mcap + MR - 1) / MR) * MR * kcap;
    size_t b_sz = (size_t)((ncap + NR - 1) / NR) * NR * kcap;
    float *abuf = dl__ws_get(dl__gemm_block_floats(g, m, n)), *bbuf, *band;
    float tile[DL__MAX_MR * DL__MAX_NR];
    int ic, pc, jc, ir, jr, nblk, mcb;
    DLCORE_ASSERT(abuf != NULL);
    if (!abuf) return;
    bbuf = abuf + a_sz;
    band = bbuf + b_sz;
    /* Row blocks of equal height (a multiple of MR, at most MC): every row block packs
       all of op(B) again, so a thin last block (m = 2048 on AVX2, MC = 2046, left one of
       2 rows) paid a whole repack for a few tiles. AVX2 2048^3: 1.02-1.04x. */
    nblk = (m + MC - 1) / MC;
    mcb = ((m + nblk - 1) / nblk + MR - 1) / MR * MR;
    for (ic = m0; ic < m1; ic += mcb) {
        int mc = m1 - ic < mcb ? m1 - ic : mcb;
        for (pc = 0; pc < k; pc += KC) {
            int kc = k - pc < KC ? k - pc : KC;
            float beta = pc == 0 ? g->beta : 1.0f;
            const float *ablk = g->ta ? g->a + (ptrdiff_t)pc * g->lda + ic
                                      : g->a + (ptrdiff_t)ic * g->lda + pc;
            int mfull = direct_a ? mc / MR * MR : 0;
            /* direct: only the ragged panel is packed, at the start of abuf, and not
               even that when the edge kernel reads exactly its rows (m = 32 or 128 on
               AVX-512: 8 rows) */
            if (direct_a && d->edge && (mc - mfull) % d->edge_rows == 0) mfull = mc;
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
                        /* with an epilogue C is the band (g->c may be NULL: no offsets from it) */
                        ptrdiff_t sb, ldc = g->epi ? nc : g->ldc;
                        float *cp = g->epi ? band + jr : g->c + (ptrdiff_t)(ic + ir) * g->ldc + jc + jr;
                        if (jr < nfull) { bp = bblk + jr; sb = g->ldb; }
                        else { bp = bbuf + (ptrdiff_t)(jr - nfull) * kc; sb = NR; }
                        if (DL__LIKELY(mr == MR && nr == NR)) {
                            d->ukr(kc, ap, rsa, csa, bp, sb, cp, ldc, g->alpha, beta);
                        } else if (d->edge) {
                            d->edge(kc, ap, rsa, csa, bp, sb, cp, ldc, g->alpha, beta, mr, nr);
                        } else {
                            int i, j;
                            d->ukr(kc, ap, rsa, csa, bp, sb, tile, NR, 1.0f, 0.0f);
                            for (i = 0; i < mr; i++) {
                                float *ci = cp + (ptrdiff_t)i * ldc;
                                const float *ti = tile + i * NR;
                                if (beta == 0.0f) for (j = 0; j < nr; j++) ci[j] = g->alpha * ti[j];
                                else for (j = 0; j < nr; j++) ci[j] = g->alpha * ti[j] + beta * ci[j];
                            }
                        }
                    }
                    if (g->epi) g->epi(g->epi_ctx, band, nc, ic + ir, jc, mr, nc);
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
/* (The masked shuffle forms that would avoid g++'s false warning ran 1.25x slower.) */
DL__GXX_UNINIT_OFF
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

/* -- One row of A (batch-1 inference): C[0, :] = alpha a B (+ beta C), B read in place
      row after row, 128 columns (8 accumulators, enough to cover the FMA latency) at a
      time. The edge tile ran one row as a 4-row tile, 2 vectors wide: a 784 x 128 dense
      layer took 12.5 us a sample on a Xeon, 1.0x PyTorch. Each C value is computed as a
      batch's tile computes it, so a row's bits do not depend on the batch it came in:
      from 0, one FMA per k in k order within each KC block, then stored as
      acc * alpha, or fma(acc, alpha, beta * C) (beta = 1 after the first block). */
#define DL__R1_ACC(v) __m512 acc##v = _mm512_setzero_ps();
#define DL__R1_FMA(v) acc##v = _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(mk[v], b + 16 * v), acc##v);
#define DL__R1_STORE(v) if (mk[v]) _mm512_mask_storeu_ps(c + 16 * v, mk[v], beta == 0.0f ? _mm512_mul_ps(acc##v, va) \
    : _mm512_fmadd_ps(acc##v, va, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk[v], c + 16 * v))));
#define DL__R1_ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
DL__TARGET("avx512f")
static void dl__row1_avx512(const dl__gemm_job *g)
{
    const int KC = dl__job_kc(g);
    const __m512 va = _mm512_set1_ps(g->alpha);
    int j0, pc, p, v;
    for (j0 = 0; j0 < g->n; j0 += 128) {
        __mmask16 mk[8];
        float *c = g->c + j0;
        for (v = 0; v < 8; v++) {
            int r = g->n - j0 - 16 * v;
            mk[v] = (__mmask16)(r >= 16 ? 0xffffu : r <= 0 ? 0u : (1u << r) - 1u);
        }
        for (pc = 0; pc < g->k; pc += KC) {
            int kc = g->k - pc < KC ? g->k - pc : KC;
            float beta = pc == 0 ? g->beta : 1.0f;
            const __m512 vb = _mm512_set1_ps(beta);
            const float *a = g->a + pc, *b = g->b + (ptrdiff_t)pc * g->ldb + j0;
            DL__R1_ALL(DL__R1_ACC)
            for (p = 0; p < kc; p++, a++, b += g->ldb) {
                __m512 t = _mm512_set1_ps(*a);
                DL__R1_ALL(DL__R1_FMA)
            }
            DL__R1_ALL(DL__R1_STORE)
        }
    }
}

/* -- Two or three rows of A (a few requests joined into one call, as dlcore-serve does):
      the same sums as one row's, 64 columns (4 vectors) at a time, so that R rows keep
      4R accumulators and each B vector loaded serves R rows. B is still read once in all
      (each 64-column pass reads its own columns). The packed path's edge tiles took
      longer for 2 rows than for 4 (784 x 128 x 10 MLP: 4.5 us a sample at batch 2, 3.1
      at batch 3); here 2.6 and 1.9, against 3.9 at batch 1. */
#define DL__RW_ACC(r) __m512 r##0 = _mm512_setzero_ps(), r##1 = r##0, r##2 = r##0, r##3 = r##0;
#define DL__RW_FMA(r, i) { const __m512 t = _mm512_set1_ps(a[(ptrdiff_t)(i) * g->lda + p]); \
    r##0 = _mm512_fmadd_ps(t, b0, r##0); r##1 = _mm512_fmadd_ps(t, b1, r##1); \
    r##2 = _mm512_fmadd_ps(t, b2, r##2); r##3 = _mm512_fmadd_ps(t, b3, r##3); }
#define DL__RW_ST1(acc, i, v) if (mk[v]) { float *cv = c + (ptrdiff_t)(i) * g->ldc + 16 * (v); \
    _mm512_mask_storeu_ps(cv, mk[v], beta == 0.0f ? _mm512_mul_ps(acc, va) \
        : _mm512_fmadd_ps(acc, va, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk[v], cv)))); }
#define DL__RW_ST(r, i) DL__RW_ST1(r##0, i, 0) DL__RW_ST1(r##1, i, 1) DL__RW_ST1(r##2, i, 2) DL__RW_ST1(r##3, i, 3)
#define DL__RW_DEF(R, ACCS, FMAS, STS)                                                          \
DL__TARGET("avx512f")                                                                           \
static void dl__rows##R##_avx512(const dl__gemm_job *g)                                         \
{                                                                                               \
    const int KC = dl__job_kc(g);                                                               \
    const __m512 va = _mm512_set1_ps(g->alpha);                                                 \
    int j0, pc, p, v;                                                                           \
    for (j0 = 0; j0 < g->n; j0 += 64) {                                                         \
        __mmask16 mk[4];                                                                        \
        float *c = g->c + j0;                                                                   \
        for (v = 0; v < 4; v++) {                                                               \
            int r = g->n - j0 - 16 * v;                                                         \
            mk[v] = (__mmask16)(r >= 16 ? 0xffffu : r <= 0 ? 0u : (1u << r) - 1u);              \
        }                                                                                       \
        for (pc = 0; pc < g->k; pc += KC) {                                                     \
            const int kc = g->k - pc < KC ? g->k - pc : KC;                                     \
            const float beta = pc == 0 ? g->beta : 1.0f;                                        \
            const __m512 vb = _mm512_set1_ps(beta);                                             \
            const float *a = g->a, *b = g->b + (ptrdiff_t)pc * g->ldb + j0;                     \
            ACCS                                                                                \
            for (p = pc; p < pc + kc; p++, b += g->ldb) {                                       \
                const __m512 b0 = _mm512_maskz_loadu_ps(mk[0], b), b1 = _mm512_maskz_loadu_ps(mk[1], b + 16); \
                const __m512 b2 = _mm512_maskz_loadu_ps(mk[2], b + 32), b3 = _mm512_maskz_loadu_ps(mk[3], b + 48); \
                FMAS                                                                            \
            }                                                                                   \
            STS                                                                                 \
        }                                                                                       \
    }                                                                                           \
}
DL__RW_DEF(2, DL__RW_ACC(x) DL__RW_ACC(y), DL__RW_FMA(x, 0) DL__RW_FMA(y, 1), DL__RW_ST(x, 0) DL__RW_ST(y, 1))
DL__RW_DEF(3, DL__RW_ACC(x) DL__RW_ACC(y) DL__RW_ACC(z),
           DL__RW_FMA(x, 0) DL__RW_FMA(y, 1) DL__RW_FMA(z, 2), DL__RW_ST(x, 0) DL__RW_ST(y, 1) DL__RW_ST(z, 2))

/* m = 1..3 rows of a plain (not transposed) product, without packing. From 4 rows on
   the packed path's tiles are as fast (1.48 against 1.62 us a sample, 784 x 128). */
DL__TARGET("avx512f")
static void dl__fewrows_avx512(const dl__gemm_job *g)
{
    if (g->m == 1) dl__row1_avx512(g);
    else if (g->m == 2) dl__rows2_avx512(g);
    else dl__rows3_avx512(g);
}

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
DL__GXX_UNINIT_ON
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

/* Does op(A) op(B) take the small-N path of section 1.6 (single thread, n small)? */
static int dl__small_n(int ta, int m, int n, int k)
{
#ifdef DL__X86
    if (2.0 * m * n * k >= DL__PAR_MIN_FLOPS) return 0;
    if (dl__isa_cur == DL__ISA_AVX512) return n <= (ta ? DL__SN_MAX_N : DL__SN_MAX_N_PACKED);
    if (dl__isa_cur == DL__ISA_AVX2) return n <= DL__SN2_MAX_N;
#else
    (void)ta; (void)m; (void)n; (void)k;
#endif
    return 0;
}

/* The job filled in by the caller (m, n, k > 0, alpha != 0) on the pool. */
static void dl__gemm_run(dl__gemm_job *g)
{
    int nt = dl__nthreads;
    g->isa = &dl__isa_table[dl__isa_cur];
    if (2.0 * g->m * g->n * g->k < DL__PAR_MIN_FLOPS) {
        nt = 1;
#ifdef DL__X86
        if (!g->epi && dl__small_n(g->ta, g->m, g->n, g->k) &&
            (dl__isa_cur == DL__ISA_AVX512 ? dl__smalln_avx512(g) : dl__smalln_avx2(g))) return;
        if (!g->epi && g->m <= 3 && !g->ta && !g->tb && dl__isa_cur == DL__ISA_AVX512) { dl__fewrows_avx512(g); return; }
#endif
    }
    /* split the larger dimension in whole tiles, so no task gets a ragged middle */
    g->split_n = (g->n / g->isa->nr) >= (g->m / g->isa->mr);
    {
        int unit = g->split_n ? g->isa->nr : g->isa->mr, total = g->split_n ? g->n : g->m;
        int units = (total + unit - 1) / unit;
        if (nt > units) nt = units;
        g->chunk = (units + nt - 1) / nt * unit;
        g->n_tasks = (total + g->chunk - 1) / g->chunk;
    }
    if (g->n_tasks <= 1) dl__gemm_block(g, 0, g->m, 0, g->n);
    else if (g->split_n) dl__parallel_for(g->n_tasks, dl__gemm_task, g, dl__gemm_block_floats(g, g->m, g->chunk));
    else dl__parallel_for(g->n_tasks, dl__gemm_task, g, dl__gemm_block_floats(g, g->chunk, g->n));
}

static void dl__gemm_fill(dl__gemm_job *g, int trans_a, int trans_b, int m, int n, int k,
                          float alpha, const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc)
{
    g->ta = trans_a != 0; g->tb = trans_b != 0;
    g->m = m; g->n = n; g->k = k;
    g->alpha = alpha; g->beta = beta;
    g->a = a; g->b = b; g->c = c;
    g->lda = lda; g->ldb = ldb; g->ldc = ldc;
    g->epi = NULL; g->epi_ctx = NULL;
}

DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc)
{
    dl__gemm_job g;
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) { dl__scale_c(m, n, beta, c, ldc); return; }
    dl__init();
    dl__gemm_fill(&g, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    dl__gemm_run(&g);
}

/* op(A) op(B) handed to epi band by band instead of stored (see dl__gemm_job). When k
   exceeds the job's KC (dl__job_kc), a band would hold partial sums, so the product goes
   to `scratch` (m x n, row-major) first and epi gets it in one piece. So does a product
   that the small-N path computes: for a 10-class output layer ((128,10,128) TN) that
   path beats 12x16 edge tiles by more than the stored band costs (its 1280 weights
   are L1-sized), and the layer's backward went from 6.4 to 4.5 us per training step
   at batch 128 on Zen 5. */
static void dl__sgemm_epi(int trans_a, int trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float *scratch,
                          dl__gemm_epi_fn epi, void *ctx)
{
    dl__gemm_job g;
    if (m <= 0 || n <= 0) return;
    dl__init();
    dl__gemm_fill(&g, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 0.0f, NULL, n);
    g.isa = &dl__isa_table[dl__isa_cur];
    if (k <= 0 || alpha == 0.0f || k > dl__job_kc(&g) || dl__small_n(trans_a, m, n, k)) {
        dl_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 0.0f, scratch, n);
        epi(ctx, scratch, n, 0, 0, m, n);
        return;
    }
    g.epi = epi; g.epi_ctx = ctx;
    dl__gemm_run(&g);
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

DLDEF void dl_thread_release(void) { dl__ws_free(); }

/* ==== 1.8 Elementwise kernels: Adam and ReLU, side by side per ISA ========================
   Adam touches every weight once per step, and at batch 32 the MNIST MLP's GEMMs
   take ~120 us per step: a scalar loop with sqrt and divide over 100k weights
   would cost as much again. So the inner loop has a kernel per ISA, side by side:
       m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
       w = w decay - lr (m c1) / (sqrt(v c2) + eps)          (g = grad * scale)
   Moments below FLT_MIN are stored as 0. A weight whose gradient stays 0 (a dead
   ReLU unit) has its moments decay by b1 and b2 each step into the subnormals, where
   x86 can take a microcode assist per operation: the AVX2 update of 100k weights
   with subnormal moments took 59.9 us against 25.5 (Xeon, AVX-512 VNNI). Their share
   of the update is below 1e-30. NaN is kept (the compares are ordered). */
typedef struct dl__adam_k { float b1, b2, eps, c1, c2, lr, decay, scale; } dl__adam_k;

static void dl__adam_scalar(float *w, float *m, float *v, const float *g, size_t i, size_t n, const dl__adam_k *k)
{
    for (; i < n; i++) {
        float gr = g[i] * k->scale;
        float mi = k->b1 * m[i] + (1.0f - k->b1) * gr;
        float vi = k->b2 * v[i] + (1.0f - k->b2) * gr * gr;
        if (fabsf(mi) < FLT_MIN) mi = 0.0f;
        if (vi < FLT_MIN) vi = 0.0f;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * k->decay - k->lr * (mi * k->c1) / (sqrtf(vi * k->c2) + k->eps);
    }
}

#ifdef DL__X86
/* The x86 kernels fold the constants: with K = lr c1 / sqrt(c2) and eps' = eps / sqrt(c2),
       w = w decay - K m / (sqrt(v) + eps').
   AVX2 keeps the true sqrt and divide: on Zen 3 they run beside the FMAs, and over
   30k-100k weights this ran 0.36 ns per weight against 0.48 for rsqrt/rcp estimates
   refined by Newton steps (dev measurement, one core). AVX-512 uses the estimates
   (14-bit, one Newton step each, ~27 bits): on Zen 4 a zmm sqrt and divide take ~10
   cycles each and were the bottleneck of the plain version. The floor on v there keeps
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
    const __m256 decay = _mm256_set1_ps(c.decay), fmin = _mm256_set1_ps(FLT_MIN), sign = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_fmadd_ps(nb1, gi, _mm256_mul_ps(b1, _mm256_loadu_ps(m + i)));
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(nb2, gi), gi, _mm256_mul_ps(b2, _mm256_loadu_ps(v + i)));
        __m256 den;
        mi = _mm256_andnot_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, mi), fmin, _CMP_LT_OQ), mi);
        vi = _mm256_andnot_ps(_mm256_cmp_ps(vi, fmin, _CMP_LT_OQ), vi);
        den = _mm256_add_ps(_mm256_sqrt_ps(vi), eps);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(w + i, _mm256_fmsub_ps(_mm256_loadu_ps(w + i), decay,
                                                _mm256_div_ps(_mm256_mul_ps(kk, mi), den)));
    }
    dl__adam_scalar(w, m, v, g, i, n, k);
}

DL__GXX_UNINIT_OFF
DL__TARGET("avx512f") static void dl__adam_avx512(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    dl__adam_c c = dl__adam_fold(k);
    const __m512 b1 = _mm512_set1_ps(c.b1), nb1 = _mm512_set1_ps(c.nb1), b2 = _mm512_set1_ps(c.b2);
    const __m512 nb2 = _mm512_set1_ps(c.nb2), kk = _mm512_set1_ps(c.k), eps = _mm512_set1_ps(c.eps);
    const __m512 decay = _mm512_set1_ps(c.decay), tiny = _mm512_set1_ps(1e-30f), half = _mm512_set1_ps(0.5f);
    const __m512 three_halves = _mm512_set1_ps(1.5f), two = _mm512_set1_ps(2.0f), fmin = _mm512_set1_ps(FLT_MIN);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i);
        __m512 mi = _mm512_fmadd_ps(nb1, gi, _mm512_mul_ps(b1, _mm512_loadu_ps(m + i)));
        __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(nb2, gi), gi, _mm512_mul_ps(b2, _mm512_loadu_ps(v + i)));
        __m512 x, r, den, q;
        mi = _mm512_mask_mov_ps(mi, _mm512_cmp_ps_mask(_mm512_abs_ps(mi), fmin, _CMP_LT_OQ), _mm512_setzero_ps());
        vi = _mm512_mask_mov_ps(vi, _mm512_cmp_ps_mask(vi, fmin, _CMP_LT_OQ), _mm512_setzero_ps());
        x = _mm512_max_ps(vi, tiny);
        r = _mm512_rsqrt14_ps(x);
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
DL__GXX_UNINIT_ON
#endif

#ifdef DL__NEON
static void dl__adam_neon(float *w, float *m, float *v, const float *g, size_t n, const dl__adam_k *k)
{
    const float32x4_t b1 = vdupq_n_f32(k->b1), nb1 = vdupq_n_f32(1.0f - k->b1), b2 = vdupq_n_f32(k->b2);
    const float32x4_t nb2 = vdupq_n_f32(1.0f - k->b2), c1 = vdupq_n_f32(k->c1), c2 = vdupq_n_f32(k->c2);
    const float32x4_t eps = vdupq_n_f32(k->eps), lr = vdupq_n_f32(k->lr), decay = vdupq_n_f32(k->decay);
    const float32x4_t scale = vdupq_n_f32(k->scale), fmin = vdupq_n_f32(FLT_MIN), zero = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t gr = vmulq_f32(vld1q_f32(g + i), scale);
        float32x4_t mi = vaddq_f32(vmulq_f32(b1, vld1q_f32(m + i)), vmulq_f32(nb1, gr));
        float32x4_t vi = vaddq_f32(vmulq_f32(b2, vld1q_f32(v + i)), vmulq_f32(nb2, vmulq_f32(gr, gr)));
        float32x4_t den;
        mi = vbslq_f32(vcltq_f32(vabsq_f32(mi), fmin), zero, mi);
        vi = vbslq_f32(vcltq_f32(vi, fmin), zero, vi);
        den = vaddq_f32(vsqrtq_f32(vmulq_f32(vi, c2)), eps);
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

/* ReLU forward and backward, and the dropout mask's gradient. Written as compares
   and masks because a branch on the sign of an activation is mispredicted half the
   time: as plain C with a ternary it cost ~10 cycles per element. SSE2 is the x86-64
   baseline; AVX-512 does 16 at once. acc = 0 overwrites dx (its first writer in a
   pass: no zeroing pass before), acc = 1 adds to it. */
#ifdef DL__X86
DL__GXX_UNINIT_OFF
DL__TARGET("avx512f") static size_t dl__relu_fwd_avx512(const float *x, float *y, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_max_ps(_mm512_loadu_ps(x + i), z));
    return i;
}

DL__TARGET("avx512f") static size_t dl__relu_bwd_avx512(const float *x, const float *dy, float *dx, size_t n, int acc)
{
    const __m512 z = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 keep = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), z, _CMP_GT_OQ),
                                          _mm512_loadu_ps(dy + i));
        _mm512_storeu_ps(dx + i, acc ? _mm512_add_ps(_mm512_loadu_ps(dx + i), keep) : keep);
    }
    return i;
}

DL__TARGET("avx512f") static size_t dl__mask_grad_avx512(float *dx, const float *dy, const float *mask, size_t n, int acc)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 p = _mm512_mul_ps(_mm512_loadu_ps(dy + i), _mm512_loadu_ps(mask + i));
        _mm512_storeu_ps(dx + i, acc ? _mm512_add_ps(_mm512_loadu_ps(dx + i), p) : p);
    }
    return i;
}
DL__GXX_UNINIT_ON
#endif

static void dl__relu_fwd(const float *x, float *y, size_t n)
{
    size_t i = 0;
#if defined(DL__X86)
    const __m128 z = _mm_setzero_ps();
    if (dl__isa_cur == DL__ISA_AVX512) i = dl__relu_fwd_avx512(x, y, n);
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, _mm_max_ps(_mm_loadu_ps(x + i), z));
#elif defined(DL__NEON)
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmaxq_f32(vld1q_f32(x + i), z));
#endif
    for (; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void dl__relu_bwd(const float *x, const float *dy, float *dx, size_t n, int acc)
{
    size_t i = 0;
#if defined(DL__X86)
    const __m128 z = _mm_setzero_ps();
    if (dl__isa_cur == DL__ISA_AVX512) i = dl__relu_bwd_avx512(x, dy, dx, n, acc);
    for (; i + 4 <= n; i += 4) {
        __m128 keep = _mm_and_ps(_mm_loadu_ps(dy + i), _mm_cmpgt_ps(_mm_loadu_ps(x + i), z));
        _mm_storeu_ps(dx + i, acc ? _mm_add_ps(_mm_loadu_ps(dx + i), keep) : keep);
    }
#elif defined(DL__NEON)
    const float32x4_t z = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4) {
        uint32x4_t pos = vcgtq_f32(vld1q_f32(x + i), z);
        float32x4_t keep = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(dy + i)), pos));
        vst1q_f32(dx + i, acc ? vaddq_f32(vld1q_f32(dx + i), keep) : keep);
    }
#endif
    for (; i < n; i++) {
        float keep = x[i] > 0.0f ? dy[i] : 0.0f;
        dx[i] = acc ? dx[i] + keep : keep;
    }
}

/* Passes over at least this many floats go to the thread pool; smaller ones stay on the
   calling thread. The seeds' CNN on a Xeon with 2 threads: its last max pool (73 728
   inputs a batch) took 33 us forward on the pool against 10 on one thread; the one
   before it (495 616 inputs) 90 against 109. */
#define DL__PAR_MIN_FLOATS ((size_t)1 << 18)

/* fn(ctx, 0..n_tasks-1): on the pool when the pass touches `floats` floats or more. */
static void dl__tasks(int n_tasks, void (*fn)(void *ctx, int task), void *ctx, size_t floats)
{
    int t;
    if (floats >= DL__PAR_MIN_FLOATS) dl__parallel_for(n_tasks, fn, ctx, 0);
    else for (t = 0; t < n_tasks; t++) fn(ctx, t);
}

/* ReLU in place over a large output, or its mask over dy (bwd), split into pieces for
   the pool: a first conv layer's output (5.5 MB at batch 64) outgrows the caches, and
   one thread's passes over it took 0.5 ms of a 6.1 ms two-thread training step. */
typedef struct { const float *y; float *v; size_t n, per; int bwd; } dl__relu_job;

static void dl__relu_task(void *ctx, int t)
{
    const dl__relu_job *j = (const dl__relu_job *)ctx;
    size_t a = (size_t)t * j->per, len = j->n - a < j->per ? j->n - a : j->per;
    if (j->bwd) dl__relu_bwd(j->y + a, j->v + a, j->v + a, len, 0);
    else dl__relu_fwd(j->v + a, j->v + a, len);
}

/* bwd == 0: v = relu(v); bwd == 1: v = y > 0 ? v : 0 (y the ReLU's output) */
static void dl__relu_inplace(const float *y, float *v, size_t n, int bwd)
{
    dl__relu_job j;
    int pieces = 4 * (dl__nthreads > 1 ? dl__nthreads : 1);
    j.y = y; j.v = v; j.n = n; j.bwd = bwd;
    j.per = ((n + (size_t)pieces - 1) / (size_t)pieces + 15) / 16 * 16;
    if (j.per == 0) return;
    dl__tasks((int)((n + j.per - 1) / j.per), dl__relu_task, &j, n);
}

/* The compiler leaves this loop scalar (for all it knows dx overlaps dy), hence by hand. */
static void dl__mask_grad(float *dx, const float *dy, const float *mask, size_t len, int acc)
{
    size_t i = 0;
#if defined(DL__X86) && defined(__x86_64__)
    if (dl__isa_cur == DL__ISA_AVX512) i = dl__mask_grad_avx512(dx, dy, mask, len, acc);
    for (; i + 4 <= len; i += 4) {
        __m128 p = _mm_mul_ps(_mm_loadu_ps(dy + i), _mm_loadu_ps(mask + i));
        _mm_storeu_ps(dx + i, acc ? _mm_add_ps(_mm_loadu_ps(dx + i), p) : p);
    }
#endif
    for (; i < len; i++) dx[i] = acc ? dx[i] + dy[i] * mask[i] : dy[i] * mask[i];
}

/* Softmax cross-entropy over rows of logits z (rows x cols, labels already checked):
   pr gets exp(z - max) / sum per row, and the result is the sum over rows of
   logsumexp(z) - z[label], accumulated in double. One exp per logit serves both the
   sum and the probability. With 10 classes, libm's expf (a call per logit) and the
   max loop's mispredicted branches made this ~5 us of a ~320 us training step at
   batch 128, so AVX-512 takes a row 16 logits at a time with its own exp. */
static double dl__ce_rows_scalar(const float *z, const float *lab, float *pr, size_t rows, int cols)
{
    double s = 0.0;
    size_t r;
    for (r = 0; r < rows; r++) {
        const float *zr = z + r * (size_t)cols;
        float *p = pr + r * (size_t)cols, mx = zr[0], sum = 0.0f, inv;
        int j;
        for (j = 1; j < cols; j++) if (zr[j] > mx) mx = zr[j];
        for (j = 0; j < cols; j++) sum += p[j] = expf(zr[j] - mx);
        s += (double)(mx + logf(sum) - zr[(int)lab[r]]);
        inv = 1.0f / sum;
        for (j = 0; j < cols; j++) p[j] *= inv;
    }
    return s;
}

#ifdef DL__X86
DL__GXX_UNINIT_OFF
/* e^x for x <= 0 (or NaN): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts,
   so n ln2 is exact for every n whose result does not underflow anyway), e^r by its
   Taylor series to r^7 (truncation below 1e-8 relative), times 2^n by scalef, which
   also rounds a result under FLT_MIN to a denormal or 0. e^x is 0 in float below
   -104; the clamp keeps n finite there, and keeps a NaN (max returns its second
   operand when one is NaN). */
DL__TARGET("avx512f") DL__INLINE_ALWAYS __m512 dl__exp_avx512(__m512 x)
{
    const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f), ln2_lo = _mm512_set1_ps(1.428606820309417e-6f);
    __m512 n, r, p;
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(n, ln2_lo, _mm512_fnmadd_ps(n, ln2_hi, x));
    p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 5040.0f), r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#define DL__TAIL16(left) ((__mmask16)((left) >= 16 ? 0xffff : (1u << (left)) - 1u))
/* One row's softmax, p = exp(z - max) / sum (p may be z); gives the max and the sum. */
DL__TARGET("avx512f") static void dl__softmax_row_avx512(const float *zr, float *p, int cols, float *mx, float *sum)
{
    __m512 vmx = _mm512_set1_ps(-INFINITY), vs = _mm512_setzero_ps(), bmx, inv;
    int j;
    for (j = 0; j < cols; j += 16)
        vmx = _mm512_mask_max_ps(vmx, DL__TAIL16(cols - j), vmx, _mm512_maskz_loadu_ps(DL__TAIL16(cols - j), zr + j));
    *mx = _mm512_reduce_max_ps(vmx);
    bmx = _mm512_set1_ps(*mx);
    for (j = 0; j < cols; j += 16) {
        __mmask16 mk = DL__TAIL16(cols - j);
        __m512 e = _mm512_maskz_mov_ps(mk, dl__exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, zr + j), bmx)));
        _mm512_mask_storeu_ps(p + j, mk, e);
        vs = _mm512_add_ps(vs, e);
    }
    *sum = _mm512_reduce_add_ps(vs);
    inv = _mm512_set1_ps(1.0f / *sum);
    for (j = 0; j < cols; j += 16) {
        __mmask16 mk = DL__TAIL16(cols - j);
        _mm512_mask_storeu_ps(p + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + j), inv));
    }
}

DL__TARGET("avx512f") static double dl__ce_rows_avx512(const float *z, const float *lab, float *pr, size_t rows, int cols)
{
    double s = 0.0;
    size_t r;
    for (r = 0; r < rows; r++) {
        const float *zr = z + r * (size_t)cols;
        float mx, sum;
        dl__softmax_row_avx512(zr, pr + r * (size_t)cols, cols, &mx, &sum);
        s += (double)(mx + logf(sum) - zr[(int)lab[r]]);
    }
    return s;
}

/* The softmax op's forward (y may be x). With libm's expf, called twice a logit, the
   fp32 MLP's dl_predict took 1.16 us a sample at batch 256; 1.10 with this. */
DL__TARGET("avx512f") static void dl__softmax_rows_avx512(const float *x, float *y, size_t rows, int cols)
{
    size_t r;
    float mx, sum;
    for (r = 0; r < rows; r++) dl__softmax_row_avx512(x + r * (size_t)cols, y + r * (size_t)cols, cols, &mx, &sum);
}
DL__GXX_UNINIT_ON
#endif

static double dl__ce_rows(const float *z, const float *lab, float *pr, size_t rows, int cols)
{
#ifdef DL__X86
    if (dl__isa_cur == DL__ISA_AVX512) return dl__ce_rows_avx512(z, lab, pr, rows, cols);
#endif
    return dl__ce_rows_scalar(z, lab, pr, rows, cols);
}

/* Bytes to floats, dst[i] = src[i] * (1/255): a data set stored as bytes
   (dl_dataset_pack_u8) is widened row by row as batches are gathered. The product is
   one correctly rounded multiply on every ISA, so the floats are bit for bit those
   that dl_idx_load stores. */
static void dl__u8_scalar(const unsigned char *src, float *dst, size_t i, size_t n)
{
    for (; i < n; i++) dst[i] = (float)src[i] * (1.0f / 255.0f);
}

#ifdef DL__X86
DL__GXX_UNINIT_OFF
DL__TARGET("avx2") static size_t dl__u8_avx2(const unsigned char *src, float *dst, size_t n)
{
    const __m256 s = _mm256_set1_ps(1.0f / 255.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
            _mm_loadl_epi64((const __m128i *)(src + i)))), s));
    return i;
}

DL__TARGET("avx512f") static size_t dl__u8_avx512(const unsigned char *src, float *dst, size_t n)
{
    const __m512 s = _mm512_set1_ps(1.0f / 255.0f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
            _mm_loadu_si128((const __m128i *)(src + i)))), s));
    return i;
}
DL__GXX_UNINIT_ON
#endif

#ifdef DL__NEON
static size_t dl__u8_neon(const unsigned char *src, float *dst, size_t n)
{
    const float32x4_t s = vdupq_n_f32(1.0f / 255.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vmovl_u8(vld1_u8(src + i));
        vst1q_f32(dst + i, vmulq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(h))), s));
        vst1q_f32(dst + i + 4, vmulq_f32(vcvtq_f32_u32(vmovl_u16(vget_high_u16(h))), s));
    }
    return i;
}
#endif

static void dl__u8_to_f32(const unsigned char *src, float *dst, size_t n)
{
    size_t i = 0;
    switch (dl__isa_cur) {
#ifdef DL__X86
    case DL__ISA_AVX512: i = dl__u8_avx512(src, dst, n); break;
    case DL__ISA_AVX2:   i = dl__u8_avx2(src, dst, n); break;
#endif
#ifdef DL__NEON
    case DL__ISA_NEON:   i = dl__u8_neon(src, dst, n); break;
#endif
    default: break;
    }
    dl__u8_scalar(src, dst, i, n);
}

/* The first non-finite float in x[0..n) (n if none): dl_fit, dl_evaluate and
   dl_predict scan their data once per call, and dl_fit the weights once an epoch,
   because a NaN or infinity that ReLU turns into 0 leaves the loss finite while it
   spreads through the weights. A float is non-finite when its exponent bits are all
   ones, so the test is an AND and a compare on integers. The SIMD loops only find
   the block holding the first hit; the scalar loop then names the element. The scan
   reads 4 bytes per value once, beside an epoch that reads them many times. */
static size_t dl__nonfinite_scalar(const float *x, size_t i, size_t n)
{
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) return i;
    }
    return n;
}

#ifdef DL__X86
DL__TARGET("avx2") static size_t dl__nonfinite_avx2(const float *x, size_t n)
{
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), e), e);
        __m256i b = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 8)), e), e);
        __m256i c = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 16)), e), e);
        __m256i d = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 24)), e), e);
        __m256i hit = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
        if (!_mm256_testz_si256(hit, hit)) break;
    }
    return i;
}

DL__TARGET("avx512f") static size_t dl__nonfinite_avx512(const float *x, size_t n)
{
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __mmask16 a = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i), e), e);
        __mmask16 b = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 16), e), e);
        __mmask16 c = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 32), e), e);
        __mmask16 d = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 48), e), e);
        if (a | b | c | d) break;
    }
    return i;
}
#endif

#ifdef DL__NEON
static size_t dl__nonfinite_neon(const float *x, size_t n)
{
    const uint32x4_t e = vdupq_n_u32(0x7f800000u);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32x4_t a = vceqq_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i)), e), e);
        uint32x4_t b = vceqq_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i + 4)), e), e);
        uint32x4_t c = vceqq_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i + 8)), e), e);
        uint32x4_t d = vceqq_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i + 12)), e), e);
        if (vmaxvq_u32(vorrq_u32(vorrq_u32(a, b), vorrq_u32(c, d)))) break;
    }
    return i;
}
#endif

static size_t dl__find_nonfinite(const float *x, size_t n)
{
    size_t i = 0;
    dl__init();
    switch (dl__isa_cur) {
#ifdef DL__X86
    case DL__ISA_AVX512: i = dl__nonfinite_avx512(x, n); break;
    case DL__ISA_AVX2:   i = dl__nonfinite_avx2(x, n); break;
#endif
#ifdef DL__NEON
    case DL__ISA_NEON:   i = dl__nonfinite_neon(x, n); break;
#endif
    default: break;
    }
    return dl__nonfinite_scalar(x, i, n);
}

/* ==== 1.9 Convolution kernels ================================================================
   Channels-last (NHWC) activations, HWIO filters, so a convolution is a GEMM whose rows are
   output pixels and whose K index runs (kh, kw, c) in the filter's own memory order:
       y[pixel, o] = sum_{kh,kw,c} x[pixel's window at (kh,kw), c] * w[(kh,kw,c), o].
   The scalar reference below is the definition everything else is tested against. */
typedef struct dl__conv {
    int n, h, w, c, oc, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, g, cg, ocg;
} dl__conv;

static void dl__conv_norm(const dl_conv2d_params *p, dl__conv *q)
{
    q->n = p->n; q->h = p->h; q->w = p->w; q->c = p->c; q->oc = p->oc; q->kh = p->kh; q->kw = p->kw;
    q->sh = p->stride_h ? p->stride_h : 1; q->sw = p->stride_w ? p->stride_w : 1;
    q->dh = p->dil_h ? p->dil_h : 1; q->dw = p->dil_w ? p->dil_w : 1;
    q->pt = p->pad_top; q->pl = p->pad_left; q->oh = p->oh; q->ow = p->ow;
    q->g = p->groups ? p->groups : 1;
    q->cg = q->c / q->g; q->ocg = q->oc / q->g;
}

DLDEF int dl_conv2d_out_size(int in, int k, int stride, int dil, int pad_begin, int pad_end)
{
    double ext, span;
    if (stride == 0) stride = 1;
    if (dil == 0) dil = 1;
    if (in <= 0 || k <= 0 || stride < 0 || dil < 0 || pad_begin < 0 || pad_end < 0) return 0;
    ext = (double)(k - 1) * dil + 1;
    span = (double)in + pad_begin + pad_end;
    if (span < ext) return 0;
    span = (span - ext) / stride + 1;
    return span > 2147483647.0 ? 0 : (int)span;
}

DLDEF int dl_conv2d_check(const dl_conv2d_params *p)
{
    dl__conv q;
    double ext_h, ext_w, pb, pr, lim = 1099511627776.0; /* 2^40 elements per tensor */
    if (!p) return dl__error("dl_conv2d: params is NULL");
    if (p->n <= 0 || p->h <= 0 || p->w <= 0 || p->c <= 0)
        return dl__error("dl_conv2d: input n x h x w x c = %d x %d x %d x %d has a non-positive size",
                         p->n, p->h, p->w, p->c);
    if (p->oc <= 0 || p->kh <= 0 || p->kw <= 0)
        return dl__error("dl_conv2d: filters kh x kw -> oc = %d x %d -> %d have a non-positive size",
                         p->kh, p->kw, p->oc);
    if (p->oh <= 0 || p->ow <= 0)
        return dl__error("dl_conv2d: output size %d x %d is not positive", p->oh, p->ow);
    if (p->stride_h < 0 || p->stride_w < 0 || p->dil_h < 0 || p->dil_w < 0 || p->groups < 0)
        return dl__error("dl_conv2d: stride %d x %d, dilation %d x %d, groups %d: negative",
                         p->stride_h, p->stride_w, p->dil_h, p->dil_w, p->groups);
    if (p->pad_top < 0 || p->pad_left < 0)
        return dl__error("dl_conv2d: pad top %d / left %d is negative", p->pad_top, p->pad_left);
    dl__conv_norm(p, &q);
    if (q.c % q.g || q.oc % q.g)
        return dl__error("dl_conv2d: %d groups do not divide %d input and %d output channels",
                         q.g, q.c, q.oc);
    ext_h = (double)(q.kh - 1) * q.dh + 1;
    ext_w = (double)(q.kw - 1) * q.dw + 1;
    if (q.pt >= ext_h || q.pl >= ext_w)
        return dl__error("dl_conv2d: pad top %d / left %d reaches the dilated kernel's extent %.0f x %.0f",
                         q.pt, q.pl, ext_h, ext_w);
    pb = (double)(q.oh - 1) * q.sh + ext_h - q.h - q.pt;
    pr = (double)(q.ow - 1) * q.sw + ext_w - q.w - q.pl;
    if (pb >= ext_h || pr >= ext_w)
        return dl__error("dl_conv2d: output %d x %d needs bottom/right pads %.0f / %.0f, not below the "
                         "dilated kernel's extent %.0f x %.0f (input %d x %d, stride %d x %d)",
                         q.oh, q.ow, pb, pr, ext_h, ext_w, q.h, q.w, q.sh, q.sw);
    if ((double)q.n * q.h * q.w * q.c > lim || (double)q.n * q.oh * q.ow * q.oc > lim ||
        (double)q.kh * q.kw * q.cg * q.oc > lim || ext_h + q.h > 2147483647.0 || ext_w + q.w > 2147483647.0)
        return dl__error("dl_conv2d: tensors too large to index (n=%d h=%d w=%d c=%d oc=%d oh=%d ow=%d)",
                         q.n, q.h, q.w, q.c, q.oc, q.oh, q.ow);
    return DL_OK;
}

/* -- Scalar reference: straight loops over the definition, float sums in (kh, kw, c) order. */
DL__UNUSED static void dl__conv_fwd_ref(const dl__conv *q, const float *x, const float *w, const float *bias, float *y)
{
    int b, oy, ox, g, o, ky, kx, ci;
    for (b = 0; b < q->n; b++)
        for (oy = 0; oy < q->oh; oy++)
            for (ox = 0; ox < q->ow; ox++)
                for (g = 0; g < q->g; g++)
                    for (o = 0; o < q->ocg; o++) {
                        int oo = g * q->ocg + o;
                        float s = bias ? bias[oo] : 0.0f;
                        for (ky = 0; ky < q->kh; ky++) {
                            int iy = oy * q->sh - q->pt + ky * q->dh;
                            if (iy < 0 || iy >= q->h) continue;
                            for (kx = 0; kx < q->kw; kx++) {
                                int ix = ox * q->sw - q->pl + kx * q->dw;
                                const float *xp, *wp;
                                if (ix < 0 || ix >= q->w) continue;
                                xp = x + (((ptrdiff_t)b * q->h + iy) * q->w + ix) * q->c + g * q->cg;
                                wp = w + ((ptrdiff_t)(ky * q->kw + kx) * q->cg) * q->oc + oo;
                                for (ci = 0; ci < q->cg; ci++) s += xp[ci] * wp[(ptrdiff_t)ci * q->oc];
                            }
                        }
                        y[(((ptrdiff_t)b * q->oh + oy) * q->ow + ox) * q->oc + oo] = s;
                    }
}

/* dx[b, iy, ix, ci] = sum over the (ky, kx, o) whose window puts an output pixel there. */
DL__UNUSED static void dl__conv_bwd_data_ref(const dl__conv *q, const float *dy, const float *w, float *dx, int acc)
{
    int b, iy, ix, g, ci, ky, kx, o;
    for (b = 0; b < q->n; b++)
        for (iy = 0; iy < q->h; iy++)
            for (ix = 0; ix < q->w; ix++)
                for (g = 0; g < q->g; g++)
                    for (ci = 0; ci < q->cg; ci++) {
                        float *d = dx + (((ptrdiff_t)b * q->h + iy) * q->w + ix) * q->c + g * q->cg + ci;
                        float s = 0.0f;
                        for (ky = 0; ky < q->kh; ky++) {
                            int ty = iy + q->pt - ky * q->dh, oy = ty / q->sh;
                            if (ty < 0 || ty % q->sh || oy >= q->oh) continue;
                            for (kx = 0; kx < q->kw; kx++) {
                                int tx = ix + q->pl - kx * q->dw, ox = tx / q->sw;
                                const float *dp, *wp;
                                if (tx < 0 || tx % q->sw || ox >= q->ow) continue;
                                dp = dy + (((ptrdiff_t)b * q->oh + oy) * q->ow + ox) * q->oc + g * q->ocg;
                                wp = w + ((ptrdiff_t)(ky * q->kw + kx) * q->cg + ci) * q->oc + g * q->ocg;
                                for (o = 0; o < q->ocg; o++) s += dp[o] * wp[o];
                            }
                        }
                        *d = acc ? *d + s : s;
                    }
}

/* dw[ky, kx, ci, o] = sum over the batch and output pixels of x at the tap times dy. */
DL__UNUSED static void dl__conv_bwd_weights_ref(const dl__conv *q, const float *x, const float *dy, float *dw,
                                     float *dbias, int acc)
{
    int b, oy, ox, g, o, ky, kx, ci;
    for (ky = 0; ky < q->kh; ky++)
        for (kx = 0; kx < q->kw; kx++)
            for (ci = 0; ci < q->cg; ci++)
                for (g = 0; g < q->g; g++)
                    for (o = 0; o < q->ocg; o++) {
                        int oo = g * q->ocg + o;
                        float *d = dw + ((ptrdiff_t)(ky * q->kw + kx) * q->cg + ci) * q->oc + oo;
                        float s = 0.0f;
                        for (b = 0; b < q->n; b++)
                            for (oy = 0; oy < q->oh; oy++) {
                                int iy = oy * q->sh - q->pt + ky * q->dh;
                                if (iy < 0 || iy >= q->h) continue;
                                for (ox = 0; ox < q->ow; ox++) {
                                    int ix = ox * q->sw - q->pl + kx * q->dw;
                                    if (ix < 0 || ix >= q->w) continue;
                                    s += x[(((ptrdiff_t)b * q->h + iy) * q->w + ix) * q->c + g * q->cg + ci] *
                                         dy[(((ptrdiff_t)b * q->oh + oy) * q->ow + ox) * q->oc + oo];
                                }
                            }
                        *d = acc ? *d + s : s;
                    }
    if (dbias) {
        ptrdiff_t pix, npix = (ptrdiff_t)q->n * q->oh * q->ow;
        for (o = 0; o < q->oc; o++) {
            float s = 0.0f;
            for (pix = 0; pix < npix; pix++) s += dy[pix * q->oc + o];
            dbias[o] = acc ? dbias[o] + s : s;
        }
    }
}

/* ---- Fast paths: implicit GEMM on a zero-padded copy of one image ------------------------
   Each task copies one image (one group's channels) into a zero-padded buffer of exactly
   the rows and columns the output reads, in its own workspace. Then the windows of the
   output pixels of one output row are evenly strided in that buffer: pixel i of a row
   starts at i * stride_w * cg, and tap (ky, kx) adds a fixed offset toff. So a tile of R
   pixels x NRC output channels is a GEMM microkernel whose A rows are read in place (R
   broadcasts per step, as the SGEMM's row-stride path does) and whose K loop runs over
   the taps and, inside each, over cg contiguous channels; the filters are packed once
   per call into NRC-wide, zero-padded panels. These paths build no im2col matrix (only
   outputs too narrow for a tile take one, see "Small outputs"): the copy costs h*w*c
   floats per image against 2*kh*kw*c*oc flops per output pixel.
   - Forward: rows of an output row are split into equal tiles of at most rmax pixels
     (28 = 14 + 14 on AVX-512) rather than full tiles and a thin remainder.
   - Input gradient: the transposed convolution is the same kernel run on the padded dy,
     once per stride phase (ry, rx) of the input: the input pixels iy = ry + sh*m get
     contributions from the taps with ky*dh = ry + pt (mod sh) only, from dy row
     m + (ry + pt - ky*dh)/sh, so each phase is a stride-1 correlation with a sub-kernel
     of transposed filters (packed per phase); stride 1 is a single phase.
   - Weight gradient: a GEMM over (kh*kw*cg) x oc with K = n*oh*ow. A tile is R rows of
     dW (consecutive channels of one tap, or any R rows by offset when cg is small) x NRC
     columns; its K loop walks the image's output pixels and stays in registers for a
     whole image. Tasks take contiguous runs of images and sum into their own buffers,
     reduced in task order (the same bits for a given thread count).
   Threads: tasks are images (forward, input gradient) or runs of images (weights). */

/* The calling thread's shared workspace (section 1.4), 64-byte aligned. */
static void *dl__ws2_get(size_t bytes)
{
    bytes += 64;
    if (bytes > dl__ws2_cap) {
        char *p = (char *)DLCORE_MALLOC(bytes);
        if (!p) return NULL;
        if (dl__ws2_raw) DLCORE_FREE(dl__ws2_raw);
        dl__ws2_raw = p;
        dl__ws2_cap = bytes;
    }
    return dl__ws2_raw + ((64 - ((uintptr_t)dl__ws2_raw & 63)) & 63);
}

/* Forward tile: c[i*ldc + j] = sum_t sum_ci a[toff[t] + i*rsa + ci] * b[(t*cgi + ci)*NRC + j]
   (+ bias[j]) (+ c[i*ldc + j] if add), i < R, j < nr; b is a packed panel NRC wide. */
typedef void (*dl__ctile_fn)(int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                             const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add);
/* Weight-gradient tile: c[i*ldc + j] += sum_{oy < rows, ox < cols} a[o_i + oy*ars + ox*acs] *
   d[oy*drs + ox*dcs + j], i < R, j < nr, where o_i = roff ? roff[i] : i; and, if dsum !=
   NULL, dsum[j] += the sum of those d (the bias gradient, from loads the tile makes anyway). */
typedef void (*dl__cdw_fn)(int R, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                           int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                           float *c, ptrdiff_t ldc, int nr, float *dsum);

/* Input gradient for few input channels (see dl__cdot_avx512). */
typedef void (*dl__cdot_fn)(int R, int C, int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw,
                            const float *a, ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs,
                            float *c, ptrdiff_t ldc, int add);

#define DL__CT_MAXR 14
#define DL__CT_ROWS6(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define DL__CT_MAXNR 32

/* -- Portable tiles (the scalar ISA's, and NEON's for ragged column blocks). */
static void dl__ctile_gen(int R, int nrc, int ntap, const ptrdiff_t *toff, int cgi, const float *a,
                          ptrdiff_t rsa, const float *b, float *c, ptrdiff_t ldc, int nr,
                          const float *bias, int add)
{
    float acc[DL__CT_MAXR][DL__CT_MAXNR];
    int i, j, t, ci;
    for (i = 0; i < R; i++) for (j = 0; j < nr; j++) acc[i][j] = 0.0f;
    for (t = 0; t < ntap; t++) {
        const float *ap = a + toff[t], *bp = b + (ptrdiff_t)t * cgi * nrc;
        for (ci = 0; ci < cgi; ci++, bp += nrc)
            for (i = 0; i < R; i++) {
                float xv = ap[i * rsa + ci];
                for (j = 0; j < nr; j++) acc[i][j] += xv * bp[j];
            }
    }
    for (i = 0; i < R; i++) {
        float *ci_ = c + i * ldc;
        for (j = 0; j < nr; j++) {
            float v = acc[i][j] + (bias ? bias[j] : 0.0f);
            ci_[j] = add ? ci_[j] + v : v;
        }
    }
}

static void dl__cdw_gen(int R, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                        int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                        float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    float acc[DL__CT_MAXR][DL__CT_MAXNR], sum[DL__CT_MAXNR];
    int i, j, oy, ox;
    for (i = 0; i < R; i++) for (j = 0; j < nr; j++) acc[i][j] = 0.0f;
    for (j = 0; j < nr; j++) sum[j] = 0.0f;
    for (oy = 0; oy < rows; oy++)
        for (ox = 0; ox < cols; ox++) {
            const float *ap = a + oy * ars + ox * acs, *dp = d + oy * drs + ox * dcs;
            for (i = 0; i < R; i++) {
                float xv = ap[roff ? roff[i] : i];
                for (j = 0; j < nr; j++) acc[i][j] += xv * dp[j];
            }
            if (dsum) for (j = 0; j < nr; j++) sum[j] += dp[j];
        }
    for (i = 0; i < R; i++) for (j = 0; j < nr; j++) c[i * ldc + j] += acc[i][j];
    if (dsum) for (j = 0; j < nr; j++) dsum[j] += sum[j];
}

#define DL__CSC_NRC 8
static void dl__ctile_scalar(int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                             const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    dl__ctile_gen(R, DL__CSC_NRC, ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add);
}

#ifdef DL__X86
/* -- AVX-512: up to 14 pixels x 32 channels (28 zmm accumulators, 2 for the filter row,
      1 broadcast); V = 1 when the block has at most 16 channels. Ragged channel blocks
      use masked stores (the panel is zero-padded, so loads need no mask). */
#define DL__CT512_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = c##i##a;
#define DL__CT512_ROW(i) if (R > i) { x = _mm512_set1_ps(p[i * rsa]);                        \
    c##i##a = _mm512_fmadd_ps(x, b0, c##i##a); if (V > 1) c##i##b = _mm512_fmadd_ps(x, b1, c##i##b); }
#define DL__CT512_STORE(i) if (R > i) { float *q_ = c + i * ldc;                                \
    __m512 v0 = _mm512_add_ps(c##i##a, bv0), v1 = _mm512_add_ps(c##i##b, bv1);                \
    if (add) v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, q_));                             \
    _mm512_mask_storeu_ps(q_, m0, v0);                                                        \
    if (V > 1) { if (add) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, q_ + 16));          \
                 _mm512_mask_storeu_ps(q_ + 16, m1, v1); } }
#define DL__CT_ROWS14(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13)
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__ct512_body(const int R, const int V, int ntap, const ptrdiff_t *toff, int cgi, const float *a,
                    ptrdiff_t rsa, const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    DL__CT_ROWS14(DL__CT512_DECL)
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xffff : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    __m512 bv0 = _mm512_setzero_ps(), bv1 = bv0;
    int t, ci;
    for (t = 0; t < ntap; t++) {
        const float *p = a + toff[t];
        for (ci = 0; ci < cgi; ci++, p++, b += 32) {
            __m512 b0 = _mm512_loadu_ps(b), b1 = V > 1 ? _mm512_loadu_ps(b + 16) : b0, x;
            DL__CT_ROWS14(DL__CT512_ROW)
        }
    }
    if (bias) {
        bv0 = _mm512_maskz_loadu_ps(m0, bias);
        if (V > 1) bv1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    DL__CT_ROWS14(DL__CT512_STORE)
}
#define DL__CT512_INST(R, V) DL__TARGET("avx512f") static void dl__ct512_##R##_##V(int ntap,              \
    const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa, const float *b, float *c,          \
    ptrdiff_t ldc, int nr, const float *bias, int add)                                                 \
    { dl__ct512_body(R, V, ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add); }
#define DL__CT512_INST2(R) DL__CT512_INST(R, 1) DL__CT512_INST(R, 2)
DL__GXX_UNINIT_OFF
DL__CT512_INST2(1) DL__CT512_INST2(2) DL__CT512_INST2(3) DL__CT512_INST2(4) DL__CT512_INST2(5)
DL__CT512_INST2(6) DL__CT512_INST2(7) DL__CT512_INST2(8) DL__CT512_INST2(9) DL__CT512_INST2(10)
DL__CT512_INST2(11) DL__CT512_INST2(12) DL__CT512_INST2(13) DL__CT512_INST2(14)
DL__GXX_UNINIT_ON
typedef void (*dl__ct_inst_fn)(int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                               const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add);
#define DL__CT512_PAIR(R) { dl__ct512_##R##_1, dl__ct512_##R##_2 }
static const dl__ct_inst_fn dl__ct512_tab[14][2] = {
    DL__CT512_PAIR(1), DL__CT512_PAIR(2), DL__CT512_PAIR(3), DL__CT512_PAIR(4), DL__CT512_PAIR(5),
    DL__CT512_PAIR(6), DL__CT512_PAIR(7), DL__CT512_PAIR(8), DL__CT512_PAIR(9), DL__CT512_PAIR(10),
    DL__CT512_PAIR(11), DL__CT512_PAIR(12), DL__CT512_PAIR(13), DL__CT512_PAIR(14) };
static void dl__ctile_avx512(int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                             const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    dl__ct512_tab[R - 1][nr > 16](ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add);
}

/* Weight gradient: up to 12 rows (consecutive channels: one pointer) or 9 rows at any
   offsets (9 offset registers still leave room for the loop's pointers) x 32 channels. */
#define DL__CW512_OFF(i) const ptrdiff_t o##i = R > i ? (G ? roff[i] : i) : 0;
#define DL__CW512_ROW(i) if (R > i) { x = _mm512_set1_ps(ap[o##i]);                               \
    c##i##a = _mm512_fmadd_ps(x, d0, c##i##a); if (V > 1) c##i##b = _mm512_fmadd_ps(x, d1, c##i##b); }
#define DL__CW512_STORE(i) if (R > i) { float *q_ = c + i * ldc;                                    \
    _mm512_mask_storeu_ps(q_, m0, _mm512_add_ps(c##i##a, _mm512_maskz_loadu_ps(m0, q_)));          \
    if (V > 1) _mm512_mask_storeu_ps(q_ + 16, m1, _mm512_add_ps(c##i##b, _mm512_maskz_loadu_ps(m1, q_ + 16))); }
#define DL__CT_ROWS12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__cw512_body(const int R, const int V, const int G, const ptrdiff_t *roff, const float *a, ptrdiff_t ars,
                    ptrdiff_t acs, int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                    float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    DL__CT_ROWS12(DL__CT512_DECL)
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    DL__CT_ROWS12(DL__CW512_OFF)
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xffff : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    int oy, ox;
    for (oy = 0; oy < rows; oy++) {
        const float *ap = a + oy * ars, *dp = d + oy * drs;
        for (ox = 0; ox < cols; ox++, ap += acs, dp += dcs) {
            __m512 d0 = _mm512_maskz_loadu_ps(m0, dp), d1 = V > 1 ? _mm512_maskz_loadu_ps(m1, dp + 16) : d0, x;
            DL__CT_ROWS12(DL__CW512_ROW)
            if (dsum) { s0 = _mm512_add_ps(s0, d0); if (V > 1) s1 = _mm512_add_ps(s1, d1); }
        }
    }
    DL__CT_ROWS12(DL__CW512_STORE)
    if (dsum) {
        _mm512_mask_storeu_ps(dsum, m0, _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m0, dsum)));
        if (V > 1) _mm512_mask_storeu_ps(dsum + 16, m1, _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m1, dsum + 16)));
    }
}
#define DL__CW512_INST(R, V, G) DL__TARGET("avx512f") static void dl__cw512_##R##_##V##_##G(                 \
    const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs, int rows, int cols, const float *d,  \
    ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc, int nr, float *dsum)                              \
    { dl__cw512_body(R, V, G, roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, nr, dsum); }
#define DL__CW512_INST4(R) DL__CW512_INST(R, 1, 0) DL__CW512_INST(R, 2, 0) DL__CW512_INST(R, 1, 1) DL__CW512_INST(R, 2, 1)
#define DL__CW512_INST2(R) DL__CW512_INST(R, 1, 0) DL__CW512_INST(R, 2, 0)
DL__GXX_UNINIT_OFF
DL__CW512_INST4(1) DL__CW512_INST4(2) DL__CW512_INST4(3) DL__CW512_INST4(4) DL__CW512_INST4(5)
DL__CW512_INST4(6) DL__CW512_INST4(7) DL__CW512_INST4(8) DL__CW512_INST4(9) DL__CW512_INST2(10)
DL__CW512_INST2(11) DL__CW512_INST2(12)
DL__GXX_UNINIT_ON
typedef void (*dl__cw_inst_fn)(const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs, int rows,
                               int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc, int nr,
                               float *dsum);
#define DL__CW512_Q(R) { { dl__cw512_##R##_1_0, dl__cw512_##R##_2_0 }, { dl__cw512_##R##_1_1, dl__cw512_##R##_2_1 } }
#define DL__CW512_H(R) { { dl__cw512_##R##_1_0, dl__cw512_##R##_2_0 }, { NULL, NULL } }
static const dl__cw_inst_fn dl__cw512_tab[12][2][2] = {
    DL__CW512_Q(1), DL__CW512_Q(2), DL__CW512_Q(3), DL__CW512_Q(4), DL__CW512_Q(5), DL__CW512_Q(6),
    DL__CW512_Q(7), DL__CW512_Q(8), DL__CW512_Q(9), DL__CW512_H(10), DL__CW512_H(11), DL__CW512_H(12) };
static void dl__cdw_avx512(int R, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                           int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                           float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    dl__cw512_tab[R - 1][roff != NULL][nr > 16](roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, nr, dsum);
}

/* -- Input gradient for few input channels (cg <= 4): with the channels as the vector
      dimension a tile would fill 1-4 of its 16-32 lanes, so here the vector runs over
      the output channels o instead: dx[pixel i, ci] = sum_t sum_o dy[toff_t + i*rsa + o] *
      w[tapw_t + ci*wcs + o], one accumulator per (pixel, ci), reduced across lanes at the
      end. The filters are read in place (HWIO is contiguous over o). */
typedef void (*dl__cdot_inst_fn)(int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw, const float *a,
                                 ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs, float *c,
                                 ptrdiff_t ldc, int add);
#define DL__CD_INST_ALL(M) M(1, 1) M(2, 1) M(3, 1) M(4, 1) M(5, 1) M(6, 1) M(7, 1) M(8, 1)              \
    M(1, 2) M(2, 2) M(3, 2) M(4, 2) M(5, 2) M(6, 2) M(7, 2) M(8, 2)                                    \
    M(1, 3) M(2, 3) M(3, 3) M(4, 3) M(5, 3) M(6, 3) M(7, 3) M(8, 3)                                    \
    M(1, 4) M(2, 4) M(3, 4) M(4, 4) M(5, 4) M(6, 4)
#define DL__CD_ROWS8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define DL__CD512_DECL(i) __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = c##i##_0,                 \
    c##i##_2 = c##i##_0, c##i##_3 = c##i##_0;
#define DL__CD512_ROW(i) if (R > i) { __m512 dv = _mm512_maskz_loadu_ps(m, ap + i * rsa + o0);        \
    c##i##_0 = _mm512_fmadd_ps(dv, w0, c##i##_0);                                                     \
    if (C > 1) c##i##_1 = _mm512_fmadd_ps(dv, w1, c##i##_1);                                          \
    if (C > 2) c##i##_2 = _mm512_fmadd_ps(dv, w2, c##i##_2);                                          \
    if (C > 3) c##i##_3 = _mm512_fmadd_ps(dv, w3, c##i##_3); }
#define DL__CD512_ST1(i, k) if (C > k) { float v_ = dl__hsum512(c##i##_##k);                         \
    c[i * ldc + k] = add ? c[i * ldc + k] + v_ : v_; }
#define DL__CD512_STORE(i) if (R > i) { DL__CD512_ST1(i, 0) DL__CD512_ST1(i, 1) DL__CD512_ST1(i, 2)   \
    DL__CD512_ST1(i, 3) }
DL__TARGET("avx512f") DL__INLINE_ALWAYS float dl__hsum512(__m512 v)
{
    __m128 s;
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xb1));
    s = _mm512_castps512_ps128(v);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
DL__TARGET("avx512f") DL__INLINE_ALWAYS
void dl__cd512_body(const int R, const int C, int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw,
                    const float *a, ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs, float *c,
                    ptrdiff_t ldc, int add)
{
    DL__CD_ROWS8(DL__CD512_DECL)
    int t, o0;
    for (t = 0; t < ntap; t++) {
        const float *ap = a + toff[t], *wp = w + tapw[t];
        for (o0 = 0; o0 < ko; o0 += 16) {
            __mmask16 m = (__mmask16)(ko - o0 >= 16 ? 0xffff : (1u << (ko - o0)) - 1u);
            __m512 w0 = _mm512_maskz_loadu_ps(m, wp + o0), w1 = w0, w2 = w0, w3 = w0;
            if (C > 1) w1 = _mm512_maskz_loadu_ps(m, wp + wcs + o0);
            if (C > 2) w2 = _mm512_maskz_loadu_ps(m, wp + 2 * wcs + o0);
            if (C > 3) w3 = _mm512_maskz_loadu_ps(m, wp + 3 * wcs + o0);
            DL__CD_ROWS8(DL__CD512_ROW)
        }
    }
    DL__CD_ROWS8(DL__CD512_STORE)
}
#define DL__CD512_INST(R, C) DL__TARGET("avx512f") static void dl__cd512_##R##_##C(int ntap,               \
    const ptrdiff_t *toff, const ptrdiff_t *tapw, const float *a, ptrdiff_t rsa, int ko, const float *w,  \
    ptrdiff_t wcs, float *c, ptrdiff_t ldc, int add)                                                     \
    { dl__cd512_body(R, C, ntap, toff, tapw, a, rsa, ko, w, wcs, c, ldc, add); }
DL__GXX_UNINIT_OFF
DL__CD_INST_ALL(DL__CD512_INST)
DL__GXX_UNINIT_ON
#define DL__CD512_ENTRY(R, C) dl__cd512_##R##_##C,
static const dl__cdot_inst_fn dl__cd512_tab[30] = { DL__CD_INST_ALL(DL__CD512_ENTRY) };
/* index of (R, C) in DL__CD_INST_ALL */
static int dl__cd_index(int R, int C) { return (C - 1) * 8 + R - 1; }
static void dl__cdot_avx512(int R, int C, int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw,
                            const float *a, ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs,
                            float *c, ptrdiff_t ldc, int add)
{
    dl__cd512_tab[dl__cd_index(R, C)](ntap, toff, tapw, a, rsa, ko, w, wcs, c, ldc, add);
}

/* -- AVX2+FMA: up to 6 pixels x 16 channels (12 ymm accumulators, 2 for the filter row,
      1 broadcast: 15 of 16); ragged blocks store through vmaskmovps. */
#define DL__CT256_DECL(i) __m256 c##i##a = _mm256_setzero_ps(), c##i##b = c##i##a;
#define DL__CT256_ROW(i) if (R > i) { x = _mm256_broadcast_ss(p + i * rsa);                      \
    c##i##a = _mm256_fmadd_ps(x, b0, c##i##a); if (V > 1) c##i##b = _mm256_fmadd_ps(x, b1, c##i##b); }
#define DL__CT256_STORE(i) if (R > i) { float *q_ = c + i * ldc;                                  \
    __m256 v0 = _mm256_add_ps(c##i##a, bv0), v1 = _mm256_add_ps(c##i##b, bv1);                \
    if (add) v0 = _mm256_add_ps(v0, _mm256_maskload_ps(q_, m0));                               \
    _mm256_maskstore_ps(q_, m0, v0);                                                           \
    if (V > 1) { if (add) v1 = _mm256_add_ps(v1, _mm256_maskload_ps(q_ + 8, m1));               \
                 _mm256_maskstore_ps(q_ + 8, m1, v1); } }
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS
void dl__ct256_body(const int R, const int V, int ntap, const ptrdiff_t *toff, int cgi, const float *a,
                    ptrdiff_t rsa, const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    DL__CT_ROWS6(DL__CT256_DECL)
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    __m256 bv0 = _mm256_setzero_ps(), bv1 = bv0;
    int t, ci;
    for (t = 0; t < ntap; t++) {
        const float *p = a + toff[t];
        for (ci = 0; ci < cgi; ci++, p++, b += 16) {
            __m256 b0 = _mm256_loadu_ps(b), b1 = V > 1 ? _mm256_loadu_ps(b + 8) : b0, x;
            DL__CT_ROWS6(DL__CT256_ROW)
        }
    }
    if (bias) {
        bv0 = _mm256_maskload_ps(bias, m0);
        if (V > 1) bv1 = _mm256_maskload_ps(bias + 8, m1);
    }
    DL__CT_ROWS6(DL__CT256_STORE)
}
#define DL__CT256_INST(R, V) DL__TARGET("avx2,fma") static void dl__ct256_##R##_##V(int ntap,             \
    const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa, const float *b, float *c,          \
    ptrdiff_t ldc, int nr, const float *bias, int add)                                                 \
    { dl__ct256_body(R, V, ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add); }
#define DL__CT256_INST2(R) DL__CT256_INST(R, 1) DL__CT256_INST(R, 2)
DL__GXX_UNINIT_OFF
DL__CT256_INST2(1) DL__CT256_INST2(2) DL__CT256_INST2(3) DL__CT256_INST2(4) DL__CT256_INST2(5)
DL__CT256_INST2(6)
DL__GXX_UNINIT_ON
#define DL__CT256_PAIR(R) { dl__ct256_##R##_1, dl__ct256_##R##_2 }
static const dl__ct_inst_fn dl__ct256_tab[6][2] = {
    DL__CT256_PAIR(1), DL__CT256_PAIR(2), DL__CT256_PAIR(3), DL__CT256_PAIR(4), DL__CT256_PAIR(5),
    DL__CT256_PAIR(6) };
static void dl__ctile_avx2(int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                           const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    dl__ct256_tab[R - 1][nr > 8](ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add);
}

/* Weight gradient: up to 6 rows, consecutive or at any offsets, x 16 channels. */
#define DL__CW256_ROW(i) if (R > i) { x = _mm256_broadcast_ss(ap + o##i);                        \
    c##i##a = _mm256_fmadd_ps(x, d0, c##i##a); if (V > 1) c##i##b = _mm256_fmadd_ps(x, d1, c##i##b); }
#define DL__CW256_STORE(i) if (R > i) { float *q_ = c + i * ldc;                                    \
    _mm256_maskstore_ps(q_, m0, _mm256_add_ps(c##i##a, _mm256_maskload_ps(q_, m0)));              \
    if (V > 1) _mm256_maskstore_ps(q_ + 8, m1, _mm256_add_ps(c##i##b, _mm256_maskload_ps(q_ + 8, m1))); }
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS
void dl__cw256_body(const int R, const int V, const int G, const ptrdiff_t *roff, const float *a, ptrdiff_t ars,
                    ptrdiff_t acs, int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                    float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    DL__CT_ROWS6(DL__CT256_DECL)
    DL__CT_ROWS6(DL__CW512_OFF)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    int oy, ox;
    for (oy = 0; oy < rows; oy++) {
        const float *ap = a + oy * ars, *dp = d + oy * drs;
        for (ox = 0; ox < cols; ox++, ap += acs, dp += dcs) {
            __m256 d0 = _mm256_maskload_ps(dp, m0), d1 = V > 1 ? _mm256_maskload_ps(dp + 8, m1) : d0, x;
            DL__CT_ROWS6(DL__CW256_ROW)
            if (dsum) { s0 = _mm256_add_ps(s0, d0); if (V > 1) s1 = _mm256_add_ps(s1, d1); }
        }
    }
    DL__CT_ROWS6(DL__CW256_STORE)
    if (dsum) {
        _mm256_maskstore_ps(dsum, m0, _mm256_add_ps(s0, _mm256_maskload_ps(dsum, m0)));
        if (V > 1) _mm256_maskstore_ps(dsum + 8, m1, _mm256_add_ps(s1, _mm256_maskload_ps(dsum + 8, m1)));
    }
}
#define DL__CW256_INST(R, V, G) DL__TARGET("avx2,fma") static void dl__cw256_##R##_##V##_##G(                \
    const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs, int rows, int cols, const float *d,  \
    ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc, int nr, float *dsum)                              \
    { dl__cw256_body(R, V, G, roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, nr, dsum); }
#define DL__CW256_INST4(R) DL__CW256_INST(R, 1, 0) DL__CW256_INST(R, 2, 0) DL__CW256_INST(R, 1, 1) DL__CW256_INST(R, 2, 1)
DL__GXX_UNINIT_OFF
DL__CW256_INST4(1) DL__CW256_INST4(2) DL__CW256_INST4(3) DL__CW256_INST4(4) DL__CW256_INST4(5)
DL__CW256_INST4(6)
DL__GXX_UNINIT_ON
#define DL__CW256_Q(R) { { dl__cw256_##R##_1_0, dl__cw256_##R##_2_0 }, { dl__cw256_##R##_1_1, dl__cw256_##R##_2_1 } }
static const dl__cw_inst_fn dl__cw256_tab[6][2][2] = {
    DL__CW256_Q(1), DL__CW256_Q(2), DL__CW256_Q(3), DL__CW256_Q(4), DL__CW256_Q(5), DL__CW256_Q(6) };
static void dl__cdw_avx2(int R, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                         float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    dl__cw256_tab[R - 1][roff != NULL][nr > 8](roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, nr, dsum);
}

/* Input gradient for few input channels, as dl__cdot_avx512 (8-lane vectors). */
#define DL__CD256_DECL(i) __m256 c##i##_0 = _mm256_setzero_ps(), c##i##_1 = c##i##_0,                 \
    c##i##_2 = c##i##_0, c##i##_3 = c##i##_0;
#define DL__CD256_ROW(i) if (R > i) { __m256 dv = _mm256_maskload_ps(ap + i * rsa + o0, m);           \
    c##i##_0 = _mm256_fmadd_ps(dv, w0, c##i##_0);                                                     \
    if (C > 1) c##i##_1 = _mm256_fmadd_ps(dv, w1, c##i##_1);                                          \
    if (C > 2) c##i##_2 = _mm256_fmadd_ps(dv, w2, c##i##_2);                                          \
    if (C > 3) c##i##_3 = _mm256_fmadd_ps(dv, w3, c##i##_3); }
#define DL__CD256_ST1(i, k) if (C > k) { float v_ = dl__hsum256(c##i##_##k);                          \
    c[i * ldc + k] = add ? c[i * ldc + k] + v_ : v_; }
#define DL__CD256_STORE(i) if (R > i) { DL__CD256_ST1(i, 0) DL__CD256_ST1(i, 1) DL__CD256_ST1(i, 2)   \
    DL__CD256_ST1(i, 3) }
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS float dl__hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
DL__TARGET("avx2,fma") DL__INLINE_ALWAYS
void dl__cd256_body(const int R, const int C, int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw,
                    const float *a, ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs, float *c,
                    ptrdiff_t ldc, int add)
{
    DL__CD_ROWS8(DL__CD256_DECL)
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int t, o0;
    for (t = 0; t < ntap; t++) {
        const float *ap = a + toff[t], *wp = w + tapw[t];
        for (o0 = 0; o0 < ko; o0 += 8) {
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(ko - o0), lane);
            __m256 w0 = _mm256_maskload_ps(wp + o0, m), w1 = w0, w2 = w0, w3 = w0;
            if (C > 1) w1 = _mm256_maskload_ps(wp + wcs + o0, m);
            if (C > 2) w2 = _mm256_maskload_ps(wp + 2 * wcs + o0, m);
            if (C > 3) w3 = _mm256_maskload_ps(wp + 3 * wcs + o0, m);
            DL__CD_ROWS8(DL__CD256_ROW)
        }
    }
    DL__CD_ROWS8(DL__CD256_STORE)
}
#define DL__CD256_INST(R, C) DL__TARGET("avx2,fma") static void dl__cd256_##R##_##C(int ntap,              \
    const ptrdiff_t *toff, const ptrdiff_t *tapw, const float *a, ptrdiff_t rsa, int ko, const float *w,  \
    ptrdiff_t wcs, float *c, ptrdiff_t ldc, int add)                                                     \
    { dl__cd256_body(R, C, ntap, toff, tapw, a, rsa, ko, w, wcs, c, ldc, add); }
#define DL__CD256_ALL(M) M(1, 1) M(2, 1) M(3, 1) M(4, 1) M(5, 1) M(6, 1) M(7, 1) M(8, 1)              \
    M(1, 2) M(2, 2) M(3, 2) M(4, 2) M(5, 2) M(6, 2) M(1, 3) M(2, 3) M(3, 3) M(4, 3)                   \
    M(1, 4) M(2, 4) M(3, 4)
DL__GXX_UNINIT_OFF
DL__CD256_ALL(DL__CD256_INST)
DL__GXX_UNINIT_ON
#define DL__CD256_ENTRY(R, C) dl__cd256_##R##_##C,
static const dl__cdot_inst_fn dl__cd256_tab[21] = { DL__CD256_ALL(DL__CD256_ENTRY) };
static void dl__cdot_avx2(int R, int C, int ntap, const ptrdiff_t *toff, const ptrdiff_t *tapw,
                          const float *a, ptrdiff_t rsa, int ko, const float *w, ptrdiff_t wcs,
                          float *c, ptrdiff_t ldc, int add)
{
    static const int first[5] = { 0, 0, 8, 14, 18 };
    dl__cd256_tab[first[C] + R - 1](ntap, toff, tapw, a, rsa, ko, w, wcs, c, ldc, add);
}
#endif /* DL__X86 */

#ifdef DL__NEON
/* -- NEON: up to 6 pixels x 16 channels (24 of the 32 q registers accumulate). Ragged
      channel blocks go through a local tile (stores) or the portable kernel (weight
      gradient, whose dy rows would be over-read). */
#define DL__CTN_DECL(i) float32x4_t c##i##_0 = vdupq_n_f32(0.0f), c##i##_1 = c##i##_0,                \
    c##i##_2 = c##i##_0, c##i##_3 = c##i##_0;
#define DL__CTN_ROW(i) if (R > i) { float32x4_t x_ = vdupq_n_f32(p[i * rsa]);                         \
    c##i##_0 = vfmaq_f32(c##i##_0, x_, b0); c##i##_1 = vfmaq_f32(c##i##_1, x_, b1);                   \
    c##i##_2 = vfmaq_f32(c##i##_2, x_, b2); c##i##_3 = vfmaq_f32(c##i##_3, x_, b3); }
#define DL__CTN_STORE(i) if (R > i) { float *q_ = full ? c + i * ldc : tile + i * 16;                 \
    float32x4_t v0 = vaddq_f32(c##i##_0, bv0), v1 = vaddq_f32(c##i##_1, bv1),                        \
                v2 = vaddq_f32(c##i##_2, bv2), v3 = vaddq_f32(c##i##_3, bv3);                          \
    if (add && full) { v0 = vaddq_f32(v0, vld1q_f32(q_)); v1 = vaddq_f32(v1, vld1q_f32(q_ + 4));      \
        v2 = vaddq_f32(v2, vld1q_f32(q_ + 8)); v3 = vaddq_f32(v3, vld1q_f32(q_ + 12)); }               \
    vst1q_f32(q_, v0); vst1q_f32(q_ + 4, v1); vst1q_f32(q_ + 8, v2); vst1q_f32(q_ + 12, v3); }
DL__INLINE_ALWAYS
void dl__ctn_body(const int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                  const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    DL__CT_ROWS6(DL__CTN_DECL)
    float32x4_t bv0 = vdupq_n_f32(0.0f), bv1 = bv0, bv2 = bv0, bv3 = bv0;
    float tile[6 * 16], bb[16];
    int t, ci, i, jj, full = nr == 16;
    for (t = 0; t < ntap; t++) {
        const float *p = a + toff[t];
        for (ci = 0; ci < cgi; ci++, p++, b += 16) {
            float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
            DL__CT_ROWS6(DL__CTN_ROW)
        }
    }
    if (bias) {
        for (jj = 0; jj < 16; jj++) bb[jj] = jj < nr ? bias[jj] : 0.0f;
        bv0 = vld1q_f32(bb); bv1 = vld1q_f32(bb + 4); bv2 = vld1q_f32(bb + 8); bv3 = vld1q_f32(bb + 12);
    }
    DL__CT_ROWS6(DL__CTN_STORE)
    if (!full)
        for (i = 0; i < R; i++)
            for (jj = 0; jj < nr; jj++) c[i * ldc + jj] = add ? c[i * ldc + jj] + tile[i * 16 + jj] : tile[i * 16 + jj];
}
#define DL__CTN_INST(R) static void dl__ctn_##R(int ntap, const ptrdiff_t *toff, int cgi, const float *a,   \
    ptrdiff_t rsa, const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)          \
    { dl__ctn_body(R, ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add); }
DL__CTN_INST(1) DL__CTN_INST(2) DL__CTN_INST(3) DL__CTN_INST(4) DL__CTN_INST(5) DL__CTN_INST(6)
typedef void (*dl__ctn_inst_fn)(int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                                const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add);
static const dl__ctn_inst_fn dl__ctn_tab[6] = { dl__ctn_1, dl__ctn_2, dl__ctn_3, dl__ctn_4, dl__ctn_5, dl__ctn_6 };
static void dl__ctile_neon(int R, int ntap, const ptrdiff_t *toff, int cgi, const float *a, ptrdiff_t rsa,
                           const float *b, float *c, ptrdiff_t ldc, int nr, const float *bias, int add)
{
    dl__ctn_tab[R - 1](ntap, toff, cgi, a, rsa, b, c, ldc, nr, bias, add);
}

#define DL__CWN_OFF(i) const ptrdiff_t o##i = R > i ? (G ? roff[i] : i) : 0;
#define DL__CWN_ROW(i) if (R > i) { float32x4_t x_ = vdupq_n_f32(ap[o##i]);                           \
    c##i##_0 = vfmaq_f32(c##i##_0, x_, d0); c##i##_1 = vfmaq_f32(c##i##_1, x_, d1);                   \
    c##i##_2 = vfmaq_f32(c##i##_2, x_, d2); c##i##_3 = vfmaq_f32(c##i##_3, x_, d3); }
#define DL__CWN_STORE(i) if (R > i) { float *q_ = c + i * ldc;                                         \
    vst1q_f32(q_, vaddq_f32(c##i##_0, vld1q_f32(q_))); vst1q_f32(q_ + 4, vaddq_f32(c##i##_1, vld1q_f32(q_ + 4))); \
    vst1q_f32(q_ + 8, vaddq_f32(c##i##_2, vld1q_f32(q_ + 8)));                                        \
    vst1q_f32(q_ + 12, vaddq_f32(c##i##_3, vld1q_f32(q_ + 12))); }
DL__INLINE_ALWAYS
void dl__cwn_body(const int R, const int G, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                  int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc,
                  float *dsum)
{
    DL__CT_ROWS6(DL__CTN_DECL)
    DL__CT_ROWS6(DL__CWN_OFF)
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int oy, ox;
    for (oy = 0; oy < rows; oy++) {
        const float *ap = a + oy * ars, *dp = d + oy * drs;
        for (ox = 0; ox < cols; ox++, ap += acs, dp += dcs) {
            float32x4_t d0 = vld1q_f32(dp), d1 = vld1q_f32(dp + 4), d2 = vld1q_f32(dp + 8), d3 = vld1q_f32(dp + 12);
            DL__CT_ROWS6(DL__CWN_ROW)
            if (dsum) { s0 = vaddq_f32(s0, d0); s1 = vaddq_f32(s1, d1); s2 = vaddq_f32(s2, d2); s3 = vaddq_f32(s3, d3); }
        }
    }
    DL__CT_ROWS6(DL__CWN_STORE)
    if (dsum) {
        vst1q_f32(dsum, vaddq_f32(s0, vld1q_f32(dsum))); vst1q_f32(dsum + 4, vaddq_f32(s1, vld1q_f32(dsum + 4)));
        vst1q_f32(dsum + 8, vaddq_f32(s2, vld1q_f32(dsum + 8))); vst1q_f32(dsum + 12, vaddq_f32(s3, vld1q_f32(dsum + 12)));
    }
}
#define DL__CWN_INST(R, G) static void dl__cwn_##R##_##G(const ptrdiff_t *roff, const float *a, ptrdiff_t ars,   \
    ptrdiff_t acs, int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc,   \
    float *dsum) { dl__cwn_body(R, G, roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, dsum); }
#define DL__CWN_INST2(R) DL__CWN_INST(R, 0) DL__CWN_INST(R, 1)
DL__CWN_INST2(1) DL__CWN_INST2(2) DL__CWN_INST2(3) DL__CWN_INST2(4) DL__CWN_INST2(5) DL__CWN_INST2(6)
typedef void (*dl__cwn_inst_fn)(const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs, int rows,
                                int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs, float *c, ptrdiff_t ldc,
                                float *dsum);
#define DL__CWN_PAIR(R) { dl__cwn_##R##_0, dl__cwn_##R##_1 }
static const dl__cwn_inst_fn dl__cwn_tab[6][2] = {
    DL__CWN_PAIR(1), DL__CWN_PAIR(2), DL__CWN_PAIR(3), DL__CWN_PAIR(4), DL__CWN_PAIR(5), DL__CWN_PAIR(6) };
static void dl__cdw_neon(int R, const ptrdiff_t *roff, const float *a, ptrdiff_t ars, ptrdiff_t acs,
                         int rows, int cols, const float *d, ptrdiff_t drs, ptrdiff_t dcs,
                         float *c, ptrdiff_t ldc, int nr, float *dsum)
{
    if (nr != 16) { dl__cdw_gen(R, roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, nr, dsum); return; }
    dl__cwn_tab[R - 1][roff != NULL](roff, a, ars, acs, rows, cols, d, drs, dcs, c, ldc, dsum);
}
#endif /* DL__NEON */


/* -- The kernel set of each ISA: panel width, rows per forward tile, rows per weight-
      gradient tile (consecutive channels / any offsets). */
typedef struct {
    int nrc, rmax, rdw, rdw_gen;
    dl__ctile_fn tile;
    dl__cdw_fn dw;
    dl__cdot_fn dot;      /* NULL: none; else rows per tile for 1..4 channels in rdot */
    int rdot[5];
} dl__conv_isa;

static void dl__conv_isa_get(dl__conv_isa *k)
{
    k->nrc = DL__CSC_NRC; k->rmax = 4; k->rdw = 4; k->rdw_gen = 4;
    k->tile = dl__ctile_scalar; k->dw = dl__cdw_gen; k->dot = NULL;
#ifdef DL__X86
    if (dl__isa_cur == DL__ISA_AVX512) {
        k->nrc = 32; k->rmax = 14; k->rdw = 12; k->rdw_gen = 9;
        k->tile = dl__ctile_avx512; k->dw = dl__cdw_avx512;
        k->dot = dl__cdot_avx512; k->rdot[1] = k->rdot[2] = k->rdot[3] = 8; k->rdot[4] = 6;
    }
    if (dl__isa_cur == DL__ISA_AVX2) {
        k->nrc = 16; k->rmax = 6; k->rdw = 6; k->rdw_gen = 6;
        k->tile = dl__ctile_avx2; k->dw = dl__cdw_avx2;
        k->dot = dl__cdot_avx2; k->rdot[1] = 8; k->rdot[2] = 6; k->rdot[3] = 4; k->rdot[4] = 3;
    }
#endif
#ifdef DL__NEON
    if (dl__isa_cur == DL__ISA_NEON) {
        k->nrc = 16; k->rmax = 6; k->rdw = 6; k->rdw_gen = 6;
        k->tile = dl__ctile_neon; k->dw = dl__cdw_neon;
    }
#endif
}

/* The column-block width for dW on the scalar ISA: the generic kernel takes any nr. */
static int dl__conv_dw_nrc(const dl__conv_isa *k) { return k->nrc; }

/* buf (hp x wp x cg) = the image src (h x w pixels cs floats apart, cg channels from src)
   with its pixel (0, 0) at (top, left); zero where it has no pixel. top/left may be
   negative and the buffer may end before the image does (parts never read). */
static void dl__conv_pad(const float *src, int h, int w, int cs, int cg, int top, int left,
                         int hp, int wp, float *buf)
{
    int r, s;
    int s0 = left > 0 ? left : 0, s1 = left + w < wp ? left + w : wp;
    if (s1 < s0) s1 = s0;
    for (r = 0; r < hp; r++) {
        float *d = buf + (ptrdiff_t)r * wp * cg;
        int iy = r - top;
        if (iy < 0 || iy >= h) { memset(d, 0, (size_t)wp * cg * sizeof(float)); continue; }
        memset(d, 0, (size_t)s0 * cg * sizeof(float));
        if (cg == cs)
            memcpy(d + (ptrdiff_t)s0 * cg, src + ((ptrdiff_t)iy * w + s0 - left) * cs,
                   (size_t)(s1 - s0) * cg * sizeof(float));
        else
            for (s = s0; s < s1; s++)
                memcpy(d + (ptrdiff_t)s * cg, src + ((ptrdiff_t)iy * w + s - left) * cs, (size_t)cg * sizeof(float));
        memset(d + (ptrdiff_t)s1 * cg, 0, (size_t)(wp - s1) * cg * sizeof(float));
    }
}

/* Tiles of at most rmax along a run of len: equal sizes, the first len % n one longer. */
static int dl__conv_seg(int len, int rmax, int idx, int *start)
{
    int n = (len + rmax - 1) / rmax, base = len / n, extra = len % n;
    *start = idx * base + (idx < extra ? idx : extra);
    return base + (idx < extra);
}

typedef struct {
    const dl__conv *q;
    dl__conv_isa k;
    const float *src, *w, *bias;  /* x or dy; filters; bias */
    float *dst;                   /* y or dx */
    const float *dy;              /* weight gradient: dy */
    const float *packed;
    const ptrdiff_t *toff, *tapw;  /* tapw: input gradient through k.dot, each tap's filters */
    int hp, wp, top, left, nblk, ktap, acc, dot;
    /* input gradient: per phase its tap count and first tap */
    const int *ph_ntap, *ph_first;
    /* weight gradient */
    int ntasks, ntiles, rows_k;
    const int *tile_row, *tile_r;
    const ptrdiff_t *tile_a, *roff;
    float *part, *dbpart, *dw, *dbias;
} dl__conv_job;

/* ---- Small outputs: im2col + SGEMM ---------------------------------------------------------
   The row tiles below hold R = ow pixels when an output row is shorter than a tile: at
   ow = 3 that is 6 accumulators on AVX-512 (3 rows x 2 vectors), too few to cover the
   FMA latency. With one group, the windows are then copied into an im2col matrix (K
   floats per output pixel, against 2 * K * oc flops each) and the SGEMM tiles across
   rows and images:
       forward:          y = col * w (+ bias)
       input gradient:   col = dy * w^T, then each column added back onto its pixel
       weight gradient:  dw = col^T * dy, dbias = the column sums of dy
   Measured on a Xeon (AVX-512; n = 64, 3x3 valid, 32 or 64 -> 128 channels), the im2col
   forward and weight gradient win at ow <= 3 (the seeds' third layer: 1002 -> 539 us and
   879 -> 577 us) and lose from ow = 5 or 6 on; the input gradient wins up to ow = 7
   (1357 -> 516 us at ow = 3, 3929 -> 2820 at 7), so it takes this path while 2 * ow <= rmax.
   Chunks of images keep the matrix within DL__COL_MAX floats. */
#define DL__COL_MAX ((size_t)1 << 20)

static void dl__ch_add(float *s, const float *x, int c);

typedef struct {
    const dl__conv *q;
    const float *src;   /* im2col: x */
    float *dst;         /* col2im: dx */
    float *col;
    int b0, acc;
} dl__col_job;

static int dl__conv_col(const dl__conv *q, int max_ow) { return q->g == 1 && q->ow <= max_ow; }

/* Images per chunk: at least one, at most n. */
static int dl__col_chunk(const dl__conv *q)
{
    size_t per_image = (size_t)q->oh * q->ow * q->kh * q->kw * q->c, per = DL__COL_MAX / per_image;
    return per < 1 ? 1 : per > (size_t)q->n ? q->n : (int)per;
}

/* Rows of image b0 + i: col[(oy*ow + ox), (ky*kw + kx)*c + ci] = the window's pixel or 0. */
static void dl__im2col_task(void *ctx, int i)
{
    const dl__col_job *j = (const dl__col_job *)ctx;
    const dl__conv *q = j->q;
    const float *img = j->src + (ptrdiff_t)(j->b0 + i) * q->h * q->w * q->c;
    float *d = j->col + (ptrdiff_t)i * q->oh * q->ow * q->kh * q->kw * q->c;
    size_t bytes = (size_t)q->c * sizeof(float);
    int oy, ox, ky, kx;
    for (oy = 0; oy < q->oh; oy++)
        for (ox = 0; ox < q->ow; ox++)
            for (ky = 0; ky < q->kh; ky++) {
                int iy = oy * q->sh - q->pt + ky * q->dh;
                for (kx = 0; kx < q->kw; kx++, d += q->c) {
                    int ix = ox * q->sw - q->pl + kx * q->dw;
                    if (iy < 0 || iy >= q->h || ix < 0 || ix >= q->w) memset(d, 0, bytes);
                    else memcpy(d, img + ((ptrdiff_t)iy * q->w + ix) * q->c, bytes);
                }
            }
}

/* Image b0 + i of dx (+)= the sum of the columns that read each pixel. */
static void dl__col2im_task(void *ctx, int i)
{
    const dl__col_job *j = (const dl__col_job *)ctx;
    const dl__conv *q = j->q;
    float *img = j->dst + (ptrdiff_t)(j->b0 + i) * q->h * q->w * q->c;
    const float *s = j->col + (ptrdiff_t)i * q->oh * q->ow * q->kh * q->kw * q->c;
    int oy, ox, ky, kx;
    if (!j->acc) memset(img, 0, (size_t)q->h * q->w * q->c * sizeof(float));
    for (oy = 0; oy < q->oh; oy++)
        for (ox = 0; ox < q->ow; ox++)
            for (ky = 0; ky < q->kh; ky++) {
                int iy = oy * q->sh - q->pt + ky * q->dh;
                for (kx = 0; kx < q->kw; kx++, s += q->c) {
                    int ix = ox * q->sw - q->pl + kx * q->dw;
                    if (iy >= 0 && iy < q->h && ix >= 0 && ix < q->w)
                        dl__ch_add(img + ((ptrdiff_t)iy * q->w + ix) * q->c, s, q->c);
                }
            }
}

/* fn over the chunk's nb images, on the pool when their rows of col are large */
static void dl__col_run(dl__col_job *j, int nb, void (*fn)(void *, int))
{
    const dl__conv *q = j->q;
    dl__tasks(nb, fn, j, (size_t)nb * q->oh * q->ow * q->kh * q->kw * q->c);
}

/* A job for q with its im2col matrix in the calling thread's workspace; returns the
   images per chunk, 0 if the workspace cannot be had. */
static int dl__col_begin(dl__col_job *j, const dl__conv *q)
{
    int per = dl__col_chunk(q);
    memset(j, 0, sizeof *j);
    j->q = q;
    j->col = (float *)dl__ws2_get((size_t)per * q->oh * q->ow * q->kh * q->kw * q->c * sizeof(float));
    DLCORE_ASSERT(j->col != NULL);
    return j->col ? per : 0;
}

static void dl__conv_fwd_col(const dl__conv *q, const float *x, const float *w, const float *bias, float *y)
{
    int K = q->kh * q->kw * q->c, P = q->oh * q->ow, nb, r;
    dl__col_job j;
    int per = dl__col_begin(&j, q);
    if (!per) return;
    j.src = x;
    for (j.b0 = 0; j.b0 < q->n; j.b0 += nb) {
        float *yc = y + (ptrdiff_t)j.b0 * P * q->oc;
        nb = q->n - j.b0 < per ? q->n - j.b0 : per;
        dl__col_run(&j, nb, dl__im2col_task);
        if (bias)
            for (r = 0; r < nb * P; r++) memcpy(yc + (ptrdiff_t)r * q->oc, bias, (size_t)q->oc * sizeof(float));
        dl_sgemm(0, 0, nb * P, q->oc, K, 1.0f, j.col, K, w, q->oc, bias ? 1.0f : 0.0f, yc, q->oc);
    }
}

static void dl__conv_bwd_data_col(const dl__conv *q, const float *dy, const float *w, float *dx, int acc)
{
    int K = q->kh * q->kw * q->c, P = q->oh * q->ow, nb;
    dl__col_job j;
    int per = dl__col_begin(&j, q);
    if (!per) return;
    j.dst = dx;
    j.acc = acc;
    for (j.b0 = 0; j.b0 < q->n; j.b0 += nb) {
        nb = q->n - j.b0 < per ? q->n - j.b0 : per;
        dl_sgemm(0, 1, nb * P, K, q->oc, 1.0f, dy + (ptrdiff_t)j.b0 * P * q->oc, q->oc, w, q->oc, 0.0f, j.col, K);
        dl__col_run(&j, nb, dl__col2im_task);
    }
}

static void dl__conv_bwd_weights_col(const dl__conv *q, const float *x, const float *dy, float *dw, float *dbias,
                                     int acc)
{
    int K = q->kh * q->kw * q->c, P = q->oh * q->ow, nb, r;
    dl__col_job j;
    int per = dl__col_begin(&j, q);
    if (!per) return;
    j.src = x;
    if (dbias && !acc) memset(dbias, 0, (size_t)q->oc * sizeof(float));
    for (j.b0 = 0; j.b0 < q->n; j.b0 += nb) {
        const float *dyc = dy + (ptrdiff_t)j.b0 * P * q->oc;
        nb = q->n - j.b0 < per ? q->n - j.b0 : per;
        dl__col_run(&j, nb, dl__im2col_task);
        dl_sgemm(1, 0, K, q->oc, nb * P, 1.0f, j.col, K, dyc, q->oc, acc || j.b0 > 0 ? 1.0f : 0.0f, dw, q->oc);
        if (dbias)
            for (r = 0; r < nb * P; r++) dl__ch_add(dbias, dyc + (ptrdiff_t)r * q->oc, q->oc);
    }
}

/* Forward: one image. */
static void dl__conv_fwd_task(void *ctx, int b)
{
    const dl__conv_job *j = (const dl__conv_job *)ctx;
    const dl__conv *q = j->q;
    int K = q->kh * q->kw * q->cg, g, jb, oy, s, nseg = (q->ow + j->k.rmax - 1) / j->k.rmax;
    float *buf = dl__ws_get((size_t)j->hp * j->wp * q->cg);
    DLCORE_ASSERT(buf != NULL);
    if (!buf) return;
    for (g = 0; g < q->g; g++) {
        dl__conv_pad(j->src + (ptrdiff_t)b * q->h * q->w * q->c + g * q->cg, q->h, q->w, q->c, q->cg,
                     q->pt, q->pl, j->hp, j->wp, buf);
        for (jb = 0; jb < j->nblk; jb++) {
            const float *panel = j->packed + (ptrdiff_t)(g * j->nblk + jb) * K * j->k.nrc;
            int nr = q->ocg - jb * j->k.nrc < j->k.nrc ? q->ocg - jb * j->k.nrc : j->k.nrc;
            const float *bias = j->bias ? j->bias + g * q->ocg + jb * j->k.nrc : NULL;
            for (oy = 0; oy < q->oh; oy++) {
                const float *arow = buf + (ptrdiff_t)oy * q->sh * j->wp * q->cg;
                float *crow = j->dst + ((ptrdiff_t)b * q->oh + oy) * q->ow * q->oc + g * q->ocg + jb * j->k.nrc;
                for (s = 0; s < nseg; s++) {
                    int ox0, R = dl__conv_seg(q->ow, j->k.rmax, s, &ox0);
                    j->k.tile(R, q->kh * q->kw, j->toff, q->cg, arow + (ptrdiff_t)ox0 * q->sw * q->cg,
                              (ptrdiff_t)q->sw * q->cg, panel, crow + (ptrdiff_t)ox0 * q->oc, q->oc, nr, bias, 0);
                }
            }
        }
    }
}

static void dl__conv_fwd_fast(const dl__conv *q, const float *x, const float *w, const float *bias, float *y)
{
    dl__conv_job j;
    int K = q->kh * q->kw * q->cg, g, jb, t, kk, jj, nt = dl__nthreads;
    size_t psz;
    char *sh;
    float *packed;
    ptrdiff_t *toff;
    memset(&j, 0, sizeof j);
    j.q = q;
    dl__conv_isa_get(&j.k);
    if (dl__conv_col(q, 3)) { dl__conv_fwd_col(q, x, w, bias, y); return; }
    j.nblk = (q->ocg + j.k.nrc - 1) / j.k.nrc;
    j.hp = (q->oh - 1) * q->sh + (q->kh - 1) * q->dh + 1;
    j.wp = (q->ow - 1) * q->sw + (q->kw - 1) * q->dw + 1;
    psz = (size_t)q->g * j.nblk * K * j.k.nrc;
    sh = (char *)dl__ws2_get((size_t)q->kh * q->kw * sizeof(ptrdiff_t) + 64 + psz * sizeof(float));
    DLCORE_ASSERT(sh != NULL);
    if (!sh) return;
    toff = (ptrdiff_t *)(void *)sh;
    packed = (float *)(void *)(sh + ((size_t)q->kh * q->kw * sizeof(ptrdiff_t) + 63) / 64 * 64);
    for (t = 0; t < q->kh * q->kw; t++)
        toff[t] = ((ptrdiff_t)(t / q->kw) * q->dh * j.wp + (ptrdiff_t)(t % q->kw) * q->dw) * q->cg;
    for (g = 0; g < q->g; g++)
        for (jb = 0; jb < j.nblk; jb++) {
            float *pp = packed + (ptrdiff_t)(g * j.nblk + jb) * K * j.k.nrc;
            int c0 = g * q->ocg + jb * j.k.nrc, nr = q->ocg - jb * j.k.nrc < j.k.nrc ? q->ocg - jb * j.k.nrc : j.k.nrc;
            for (kk = 0; kk < K; kk++, pp += j.k.nrc) {
                const float *wr = w + (ptrdiff_t)kk * q->oc + c0;
                for (jj = 0; jj < nr; jj++) pp[jj] = wr[jj];
                for (; jj < j.k.nrc; jj++) pp[jj] = 0.0f;
            }
        }
    j.src = x; j.w = w; j.bias = bias; j.dst = y; j.packed = packed; j.toff = toff;
    if (nt > 1 && q->n > 1 && 2.0 * q->n * q->oh * q->ow * q->oc * K >= DL__PAR_MIN_FLOPS)
        dl__parallel_for(q->n, dl__conv_fwd_task, &j, (size_t)j.hp * j.wp * q->cg);
    else
        for (t = 0; t < q->n; t++) dl__conv_fwd_task(&j, t);
}

/* Input gradient: one image, every stride phase. */
static void dl__conv_bwd_data_task(void *ctx, int b)
{
    const dl__conv_job *j = (const dl__conv_job *)ctx;
    const dl__conv *q = j->q;
    int g, jb, ry, rx, m, s;
    float *buf = dl__ws_get((size_t)j->hp * j->wp * q->ocg);
    DLCORE_ASSERT(buf != NULL);
    if (!buf) return;
    for (g = 0; g < q->g; g++) {
        dl__conv_pad(j->src + (ptrdiff_t)b * q->oh * q->ow * q->oc + g * q->ocg, q->oh, q->ow, q->oc, q->ocg,
                     j->top, j->left, j->hp, j->wp, buf);
        for (ry = 0; ry < q->sh && ry < q->h; ry++)
            for (rx = 0; rx < q->sw && rx < q->w; rx++) {
                int ph = ry * q->sw + rx, ntap = j->ph_ntap[ph];
                int mh = (q->h - ry + q->sh - 1) / q->sh, mw = (q->w - rx + q->sw - 1) / q->sw;
                int nseg = (mw + j->k.rmax - 1) / j->k.rmax;
                const ptrdiff_t *toff = j->toff + j->ph_first[ph];
                if (j->dot) {
                    int rdot = j->k.rdot[q->cg], nsd = (mw + rdot - 1) / rdot;
                    for (m = 0; m < mh; m++) {
                        const float *arow = buf + (ptrdiff_t)m * j->wp * q->ocg;
                        float *crow = j->dst + (((ptrdiff_t)b * q->h + ry + (ptrdiff_t)q->sh * m) * q->w + rx) * q->c
                                      + g * q->cg;
                        for (s = 0; s < nsd; s++) {
                            int mx0, R = dl__conv_seg(mw, rdot, s, &mx0);
                            j->k.dot(R, q->cg, ntap, toff, j->tapw + j->ph_first[ph], arow + (ptrdiff_t)mx0 * q->ocg,
                                     q->ocg, q->ocg, j->w + g * q->ocg, q->oc, crow + (ptrdiff_t)mx0 * q->sw * q->c,
                                     (ptrdiff_t)q->sw * q->c, j->acc);
                        }
                    }
                    continue;
                }
                for (jb = 0; jb < j->nblk; jb++) {
                    const float *panel = j->packed + ((ptrdiff_t)g * j->nblk * j->ktap + (ptrdiff_t)jb * j->ktap
                                                      + j->ph_first[ph]) * q->ocg * j->k.nrc;
                    int nr = q->cg - jb * j->k.nrc < j->k.nrc ? q->cg - jb * j->k.nrc : j->k.nrc;
                    for (m = 0; m < mh; m++) {
                        const float *arow = buf + (ptrdiff_t)m * j->wp * q->ocg;
                        float *crow = j->dst + (((ptrdiff_t)b * q->h + ry + (ptrdiff_t)q->sh * m) * q->w + rx) * q->c
                                      + g * q->cg + jb * j->k.nrc;
                        for (s = 0; s < nseg; s++) {
                            int mx0, R = dl__conv_seg(mw, j->k.rmax, s, &mx0);
                            j->k.tile(R, ntap, toff, q->ocg, arow + (ptrdiff_t)mx0 * q->ocg, q->ocg, panel,
                                      crow + (ptrdiff_t)mx0 * q->sw * q->c, (ptrdiff_t)q->sw * q->c, nr, NULL, j->acc);
                        }
                    }
                }
            }
    }
}

/* Tap (ky, kx) of a stride phase reads dy at offset (e/sh, f/sw) from the phase's pixel,
   e = ry + pt - ky*dh; its phase is the ry that makes e a multiple of sh. */
static int dl__conv_phase(int k, int d, int pad, int s) { int r = (k * d - pad) % s; return r < 0 ? r + s : r; }

static void dl__conv_bwd_data_fast(const dl__conv *q, const float *dy, const float *w, float *dx, int acc)
{
    dl__conv_job j;
    int nt = dl__nthreads, KT = q->kh * q->kw, nph = q->sh * q->sw;
    int ky, kx, g, jb, t, o, jj, ph, top = 0, left = 0, hp = 1, wp = 1;
    size_t psz, off;
    char *sh;
    int *ph_ntap, *ph_first, *tap_of;
    ptrdiff_t *toff;
    float *packed;
    memset(&j, 0, sizeof j);
    j.q = q;
    dl__conv_isa_get(&j.k);
    if (dl__conv_col(q, j.k.rmax / 2)) { dl__conv_bwd_data_col(q, dy, w, dx, acc); return; }
    j.nblk = (q->cg + j.k.nrc - 1) / j.k.nrc;
    j.ktap = KT;
    /* few input channels and enough output channels to fill the vectors of the dot kernel */
    j.dot = j.k.dot && q->cg <= 4 && q->ocg >= 8;
    /* the padded dy must hold, for every tap, rows m + e/sh for m < mh of its phase */
    for (ky = 0; ky < q->kh; ky++) {
        int ry = dl__conv_phase(ky, q->dh, q->pt, q->sh), e = (ry + q->pt - ky * q->dh) / q->sh;
        if (-e > top) top = -e;
    }
    for (kx = 0; kx < q->kw; kx++) {
        int rx = dl__conv_phase(kx, q->dw, q->pl, q->sw), f = (rx + q->pl - kx * q->dw) / q->sw;
        if (-f > left) left = -f;
    }
    for (ky = 0; ky < q->kh; ky++) {
        int ry = dl__conv_phase(ky, q->dh, q->pt, q->sh), e = (ry + q->pt - ky * q->dh) / q->sh;
        int mh = ry < q->h ? (q->h - ry + q->sh - 1) / q->sh : 0;
        if (mh + e + top > hp) hp = mh + e + top;
    }
    for (kx = 0; kx < q->kw; kx++) {
        int rx = dl__conv_phase(kx, q->dw, q->pl, q->sw), f = (rx + q->pl - kx * q->dw) / q->sw;
        int mw = rx < q->w ? (q->w - rx + q->sw - 1) / q->sw : 0;
        if (mw + f + left > wp) wp = mw + f + left;
    }
    j.hp = hp; j.wp = wp; j.top = top; j.left = left;
    psz = j.dot ? 0 : (size_t)q->g * j.nblk * KT * q->ocg * j.k.nrc;
    off = ((size_t)2 * KT * sizeof(ptrdiff_t) + (size_t)(2 * nph + KT) * sizeof(int) + 63) / 64 * 64;
    sh = (char *)dl__ws2_get(off + psz * sizeof(float));
    DLCORE_ASSERT(sh != NULL);
    if (!sh) return;
    toff = (ptrdiff_t *)(void *)sh;
    j.tapw = toff + KT;
    ph_ntap = (int *)(void *)(sh + (size_t)2 * KT * sizeof(ptrdiff_t));
    ph_first = ph_ntap + nph;
    tap_of = ph_first + nph;
    packed = (float *)(void *)(sh + off);
    /* taps in phase order (ry, rx), each phase's in (ky, kx) order */
    for (ph = 0; ph < nph; ph++) ph_ntap[ph] = 0;
    for (ky = 0; ky < q->kh; ky++)
        for (kx = 0; kx < q->kw; kx++)
            ph_ntap[dl__conv_phase(ky, q->dh, q->pt, q->sh) * q->sw + dl__conv_phase(kx, q->dw, q->pl, q->sw)]++;
    for (ph = 0, t = 0; ph < nph; ph++) { ph_first[ph] = t; t += ph_ntap[ph]; ph_ntap[ph] = 0; }
    for (ky = 0; ky < q->kh; ky++)
        for (kx = 0; kx < q->kw; kx++) {
            int ry = dl__conv_phase(ky, q->dh, q->pt, q->sh), rx = dl__conv_phase(kx, q->dw, q->pl, q->sw);
            int e = (ry + q->pt - ky * q->dh) / q->sh, f = (rx + q->pl - kx * q->dw) / q->sw;
            ph = ry * q->sw + rx;
            t = ph_first[ph] + ph_ntap[ph]++;
            tap_of[t] = ky * q->kw + kx;
            toff[t] = ((ptrdiff_t)(e + top) * wp + f + left) * q->ocg;
            toff[KT + t] = (ptrdiff_t)tap_of[t] * q->cg * q->oc;
        }
    /* panels: per group and block of input channels, the taps in phase order, each tap
       an ocg x NRC slice of the transposed filters */
    for (g = 0; g < q->g && !j.dot; g++)
        for (jb = 0; jb < j.nblk; jb++) {
            float *pp = packed + ((ptrdiff_t)g * j.nblk + jb) * KT * q->ocg * j.k.nrc;
            int c0 = jb * j.k.nrc, nr = q->cg - c0 < j.k.nrc ? q->cg - c0 : j.k.nrc;
            for (t = 0; t < KT; t++)
                for (o = 0; o < q->ocg; o++, pp += j.k.nrc) {
                    const float *wc = w + ((ptrdiff_t)tap_of[t] * q->cg + c0) * q->oc + g * q->ocg + o;
                    for (jj = 0; jj < nr; jj++) pp[jj] = wc[(ptrdiff_t)jj * q->oc];
                    for (; jj < j.k.nrc; jj++) pp[jj] = 0.0f;
                }
        }
    j.src = dy; j.w = w; j.dst = dx; j.packed = packed; j.toff = toff; j.acc = acc;
    j.ph_ntap = ph_ntap; j.ph_first = ph_first;
    if (nt > 1 && q->n > 1 && 2.0 * q->n * q->oh * q->ow * q->oc * KT * q->cg >= DL__PAR_MIN_FLOPS)
        dl__parallel_for(q->n, dl__conv_bwd_data_task, &j, (size_t)j.hp * j.wp * q->ocg);
    else
        for (t = 0; t < q->n; t++) dl__conv_bwd_data_task(&j, t);
}

/* Weight gradient: task i sums images [i*n/T, (i+1)*n/T) into its own dW (and dbias). */
static void dl__conv_bwd_weights_task(void *ctx, int task)
{
    const dl__conv_job *j = (const dl__conv_job *)ctx;
    const dl__conv *q = j->q;
    int b0 = (int)((long long)task * q->n / j->ntasks), b1 = (int)((long long)(task + 1) * q->n / j->ntasks);
    int b, g, jb, tl, K = j->rows_k;
    ptrdiff_t npix = (ptrdiff_t)q->oh * q->ow;
    float *dw = j->ntasks == 1 ? j->dw : j->part + (ptrdiff_t)task * K * q->oc;
    float *db = j->ntasks == 1 ? j->dbias : j->dbpart ? j->dbpart + (ptrdiff_t)task * q->oc : NULL;
    float *buf = dl__ws_get((size_t)j->hp * j->wp * q->cg);
    DLCORE_ASSERT(buf != NULL);
    if (!buf) return;
    if (j->ntasks > 1 || !j->acc) {
        memset(dw, 0, (size_t)K * q->oc * sizeof(float));
        if (db) memset(db, 0, (size_t)q->oc * sizeof(float));
    }
    for (b = b0; b < b1; b++) {
        const float *dyb = j->dy + (ptrdiff_t)b * npix * q->oc;
        for (g = 0; g < q->g; g++) {
            dl__conv_pad(j->src + (ptrdiff_t)b * q->h * q->w * q->c + g * q->cg, q->h, q->w, q->c, q->cg,
                         q->pt, q->pl, j->hp, j->wp, buf);
            for (jb = 0; jb < j->nblk; jb++) {
                int c0 = g * q->ocg + jb * j->k.nrc;
                int nr = q->ocg - jb * j->k.nrc < j->k.nrc ? q->ocg - jb * j->k.nrc : j->k.nrc;
                for (tl = 0; tl < j->ntiles; tl++)
                    j->k.dw(j->tile_r[tl], j->roff ? j->roff + j->tile_row[tl] : NULL, buf + j->tile_a[tl],
                            (ptrdiff_t)q->sh * j->wp * q->cg, (ptrdiff_t)q->sw * q->cg, q->oh, q->ow,
                            dyb + c0, (ptrdiff_t)q->ow * q->oc, q->oc,
                            dw + (ptrdiff_t)j->tile_row[tl] * q->oc + c0, q->oc, nr,
                            db && tl == 0 ? db + c0 : NULL);
            }
        }
    }
}

static void dl__conv_bwd_weights_fast(const dl__conv *q, const float *x, const float *dy, float *dw,
                                      float *dbias, int acc)
{
    dl__conv_job j;
    int KT = q->kh * q->kw, K = KT * q->cg, t, ci, r, ntiles = 0, i, nt = dl__nthreads;
    size_t off, e;
    char *sh;
    int *tile_row, *tile_r;
    ptrdiff_t *tile_a, *roff;
    memset(&j, 0, sizeof j);
    j.q = q;
    dl__conv_isa_get(&j.k);
    if (dl__conv_col(q, 3)) { dl__conv_bwd_weights_col(q, x, dy, dw, dbias, acc); return; }
    j.k.nrc = dl__conv_dw_nrc(&j.k);
    j.nblk = (q->ocg + j.k.nrc - 1) / j.k.nrc;
    j.hp = (q->oh - 1) * q->sh + (q->kh - 1) * q->dh + 1;
    j.wp = (q->ow - 1) * q->sw + (q->kw - 1) * q->dw + 1;
    j.rows_k = K;
    j.ntasks = nt > 1 && q->n > 1 && 2.0 * q->n * q->oh * q->ow * q->oc * K >= DL__PAR_MIN_FLOPS
             ? (nt < q->n ? nt : q->n) : 1;
    off = ((size_t)K * (2 * sizeof(ptrdiff_t) + 2 * sizeof(int)) + 63) / 64 * 64;
    sh = (char *)dl__ws2_get(off + (j.ntasks > 1 ? (size_t)j.ntasks * (K + 1) * q->oc * sizeof(float) : 0));
    DLCORE_ASSERT(sh != NULL);
    if (!sh) return;
    tile_a = (ptrdiff_t *)(void *)sh;
    roff = tile_a + K;
    tile_row = (int *)(void *)(roff + K);
    tile_r = tile_row + K;
    for (t = 0; t < KT; t++)
        for (ci = 0; ci < q->cg; ci++)
            roff[t * q->cg + ci] = ((ptrdiff_t)(t / q->kw) * q->dh * j.wp + (ptrdiff_t)(t % q->kw) * q->dw) * q->cg + ci;
    if (q->cg >= j.k.rdw_gen) {
        /* tiles of consecutive channels of one tap: one pointer per tile */
        int nseg = (q->cg + j.k.rdw - 1) / j.k.rdw;
        for (t = 0; t < KT; t++)
            for (i = 0; i < nseg; i++) {
                int c0, R = dl__conv_seg(q->cg, j.k.rdw, i, &c0);
                tile_row[ntiles] = t * q->cg + c0; tile_r[ntiles] = R; tile_a[ntiles] = roff[t * q->cg + c0];
                ntiles++;
            }
        j.roff = NULL;
    } else {
        int nseg = (K + j.k.rdw_gen - 1) / j.k.rdw_gen;
        for (i = 0; i < nseg; i++) {
            int r0, R = dl__conv_seg(K, j.k.rdw_gen, i, &r0);
            tile_row[ntiles] = r0; tile_r[ntiles] = R; tile_a[ntiles] = 0;
            ntiles++;
        }
        j.roff = roff;
    }
    j.ntiles = ntiles; j.tile_row = tile_row; j.tile_r = tile_r; j.tile_a = tile_a;
    j.src = x; j.dy = dy; j.dw = dw; j.dbias = dbias; j.acc = acc;
    if (j.ntasks > 1) {
        j.part = (float *)(void *)(sh + off);
        j.dbpart = j.part + (size_t)j.ntasks * K * q->oc;
        if (!dbias) j.dbpart = NULL;
        dl__parallel_for(j.ntasks, dl__conv_bwd_weights_task, &j, (size_t)j.hp * j.wp * q->cg);
        for (e = 0; e < (size_t)K * q->oc; e++) {
            float s = acc ? dw[e] : 0.0f;
            for (r = 0; r < j.ntasks; r++) s += j.part[(size_t)r * K * q->oc + e];
            dw[e] = s;
        }
        if (dbias)
            for (e = 0; e < (size_t)q->oc; e++) {
                float s = acc ? dbias[e] : 0.0f;
                for (r = 0; r < j.ntasks; r++) s += j.dbpart[(size_t)r * q->oc + e];
                dbias[e] = s;
            }
    } else {
        dl__conv_bwd_weights_task(&j, 0);
    }
}

/* -- Public entry points */
DLDEF void dl_conv2d_fwd(const dl_conv2d_params *p, const float *x, const float *w, const float *bias, float *y)
{
    dl__conv q;
    if (dl_conv2d_check(p) != DL_OK) return;
    dl__init();
    dl__conv_norm(p, &q);
    dl__conv_fwd_fast(&q, x, w, bias, y);
}

DLDEF void dl_conv2d_bwd_data(const dl_conv2d_params *p, const float *dy, const float *w, float *dx, int accumulate)
{
    dl__conv q;
    if (dl_conv2d_check(p) != DL_OK) return;
    dl__init();
    dl__conv_norm(p, &q);
    dl__conv_bwd_data_fast(&q, dy, w, dx, accumulate);
}

DLDEF void dl_conv2d_bwd_weights(const dl_conv2d_params *p, const float *x, const float *dy, float *dw,
                                 float *dbias, int accumulate)
{
    dl__conv q;
    if (dl_conv2d_check(p) != DL_OK) return;
    dl__init();
    dl__conv_norm(p, &q);
    dl__conv_bwd_weights_fast(&q, x, dy, dw, dbias, accumulate);
}

/* ==== 1.10 int8 GEMM: u8 x s8 -> s32, side by side per ISA ================================
   C[i][j] = sum_p A[i][p] * B[j][p], exact in every variant (integers, so the ISAs agree
   bit for bit). A holds 7-bit activations (0..127): AVX2's vpmaddubsw adds two u8 x s8
   products into a signed 16-bit lane, and 2 x 127 x 128 = 32512 cannot saturate where
   2 x 255 x 128 would (PyTorch's fbgemm takes the same reduced range on x86). The same
   bound lets NEON read A as s8 for sdot/smull.
   B is packed once (dl_pack_s8) into 16-column panels, k in groups of 4 bytes per column:
   panel P, group g, column j, byte q sits at ((P * K4 + g) * 16 + j) * 4 + q. A 32-bit
   lane then holds 4 consecutive k of one column, which is what vpdpbusd, vpmaddubsw +
   vpmaddwd and sdot all consume; one layout serves every ISA. A is read in place (rows
   of 4-byte groups, the k % 4 tail copied into a zeroed word), so batch 1 pays no packing. */
enum { DL__I8_SCALAR, DL__I8_AVX2, DL__I8_VNNI, DL__I8_NEON, DL__I8_DOT, DL__I8_COUNT };
#define DL__I8_NP 16

static const char *const dl__i8_names[DL__I8_COUNT] = { "scalar", "avx2", "avx512vnni", "neon", "neon-dotprod" };

DLDEF size_t dl_s8_packed_size(int n, int k)
{
    if (n <= 0 || k <= 0) return 0;
    return (size_t)((n + DL__I8_NP - 1) / DL__I8_NP) * DL__I8_NP * (size_t)((k + 3) / 4) * 4;
}

DLDEF void dl_pack_s8(int n, int k, const int8_t *b, int ldb, int8_t *packed)
{
    int k4 = (k + 3) / 4, np = (n + DL__I8_NP - 1) / DL__I8_NP, P, g, j, q;
    for (P = 0; P < np; P++)
        for (g = 0; g < k4; g++)
            for (j = 0; j < DL__I8_NP; j++)
                for (q = 0; q < 4; q++) {
                    int col = P * DL__I8_NP + j, p = 4 * g + q;
                    packed[(((size_t)P * k4 + g) * DL__I8_NP + j) * 4 + q] =
                        col < n && p < k ? b[(size_t)col * ldb + p] : 0;
                }
}

/* The 4 bytes of row `a` at group g, the tail group zero-padded. */
DL__UNUSED static int32_t dl__i8_word(const uint8_t *a, int g, int k)
{
    int32_t w = 0;
    if (4 * g + 4 <= k) memcpy(&w, a + 4 * g, 4);
    else memcpy(&w, a + 4 * g, (size_t)(k - 4 * g));
    return w;
}

/* Every kernel: rows [0, mr) of A (mr <= its MR) times panels starting at bp (pstride
   bytes apart), columns [0, nc) (nc <= its panels x 16) stored to C. */
typedef void (*dl__i8_ukr_fn)(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                              size_t pstride, int32_t *c, int ldc);

#define DL__I8_SC_MR 4
static void dl__i8_ukr_scalar(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                              size_t pstride, int32_t *c, int ldc)
{
    int i, j, p, k4 = (k + 3) / 4;
    (void)pstride;
    for (i = 0; i < mr; i++)
        for (j = 0; j < nc; j++) {
            int32_t s = 0;
            const int8_t *col = bp + (size_t)(j / DL__I8_NP) * pstride + (size_t)(j % DL__I8_NP) * 4;
            for (p = 0; p < 4 * k4 && p < k; p++)
                s += (int32_t)a[(size_t)i * lda + p] * (int32_t)col[(size_t)(p / 4) * DL__I8_NP * 4 + p % 4];
            c[(size_t)i * ldc + j] = s;
        }
}

/* The tiles below keep one named accumulator per row and vector, with `if (MR > r)`
   guards that vanish once MR is a constant (always_inline, called with literals): an
   array of accumulators indexed in a loop was kept on the stack by gcc 12. The k loop
   runs over whole groups of 4; the k % 4 tail goes through zero-padded words. */
DL__UNUSED static int32_t dl__ld32(const uint8_t *p) { int32_t w; memcpy(&w, p, 4); return w; }
#define DL__I8_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define DL__I8_ROWS16(X) DL__I8_ROWS8(X) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define DL__I8_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DL__I8_ROWS4(X) X(0) X(1) X(2) X(3)

#ifdef DL__X86
/* AVX2: per group, vpmaddubsw (u8 x s8 pairs -> s16, exact for 7-bit A), vpmaddwd by
   ones (pairs -> s32), add. One panel by 4 rows, in three widths W chosen by the
   panel's valid columns: 16 (two ymm per row), 8 (one), and 12, where columns 8-11 of
   two consecutive groups share one ymm, A's two broadcast words blended to match, and
   the halves are added at the end. Narrow panels (the MLP's 10 outputs) then cost 3 or
   2 multiply pairs per two groups instead of 4. */
#define DL__I8_AVX2_MR 4
DL__TARGET("avx2") static __attribute__((always_inline)) inline void
dl__i8_tile_avx2(const int MR, const int W, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                 int32_t *c, int ldc)
{
    __m256i ones = _mm256_set1_epi16(1), b0, b1, bn, a0, a1, lanes;
    int g = 0, kfull = k / 4;
#define DL__A2_MAC(acc, av, b) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(av, b), ones))
#define DL__A2_DECL(r) __m256i c##r##0 = _mm256_setzero_si256(), c##r##1 = _mm256_setzero_si256();
    /* one group: w is row r's word */
#define DL__A2_ONE(r, w) if (MR > r) { a0 = _mm256_set1_epi32(w); DL__A2_MAC(c##r##0, a0, b0); \
        if (W == 16) DL__A2_MAC(c##r##1, a0, b1); \
        else if (W == 12) DL__A2_MAC(c##r##1, _mm256_blend_epi32(a0, _mm256_setzero_si256(), 0xf0), b1); }
    /* two groups g, g + 1 (W 8 and 12 only) */
#define DL__A2_TWO(r) if (MR > r) { const uint8_t *ar = a + (size_t)r * lda + 4 * g; \
        a0 = _mm256_set1_epi32(dl__ld32(ar)); a1 = _mm256_set1_epi32(dl__ld32(ar + 4)); \
        DL__A2_MAC(c##r##0, a0, b0); DL__A2_MAC(c##r##0, a1, bn); \
        if (W == 12) DL__A2_MAC(c##r##1, _mm256_blend_epi32(a0, a1, 0xf0), b1); }
#define DL__A2_MAIN(r) DL__A2_ONE(r, dl__ld32(a + (size_t)r * lda + 4 * g))
#define DL__A2_TAIL(r) DL__A2_ONE(r, dl__i8_word(a + (size_t)r * lda, g, k))
#define DL__A2_STORE(r) if (MR > r) { int32_t *ci = c + (size_t)r * ldc; \
        if (nc >= 8) _mm256_storeu_si256((__m256i *)ci, c##r##0); else _mm256_maskstore_epi32(ci, lanes, c##r##0); \
        if (W == 16 && nc == 16) _mm256_storeu_si256((__m256i *)(ci + 8), c##r##1); \
        else if (W == 16) _mm256_maskstore_epi32(ci + 8, lanes, c##r##1); \
        else if (W == 12) _mm_maskstore_epi32(ci + 8, _mm256_castsi256_si128(lanes), \
                              _mm_add_epi32(_mm256_castsi256_si128(c##r##1), _mm256_extracti128_si256(c##r##1, 1))); }
    /* the store mask of the last vector with valid columns: lanes below nc % 8 (8 if 16) */
    lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc > 8 ? nc - 8 : nc), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    DL__I8_ROWS4(DL__A2_DECL)
    if (W == 16) {
        for (; g < kfull; g++) {
            b0 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64));
            b1 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64 + 32));
            DL__I8_ROWS4(DL__A2_MAIN)
        }
    } else {
        for (; g + 1 < kfull; g += 2) {
            b0 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64));
            bn = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64 + 64));
            if (W == 12)
                b1 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(bp + (size_t)g * 64 + 32))),
                                             _mm_loadu_si128((const __m128i *)(bp + (size_t)g * 64 + 96)), 1);
            DL__I8_ROWS4(DL__A2_TWO)
        }
        for (; g < kfull; g++) {   /* an odd group: B's upper half meets zeroed A words */
            b0 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64));
            b1 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64 + 32));
            DL__I8_ROWS4(DL__A2_MAIN)
        }
    }
    if (k % 4) {
        b0 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64));
        b1 = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64 + 32));
        DL__I8_ROWS4(DL__A2_TAIL)
    }
    DL__I8_ROWS4(DL__A2_STORE)
#undef DL__A2_MAC
#undef DL__A2_DECL
#undef DL__A2_ONE
#undef DL__A2_TWO
#undef DL__A2_MAIN
#undef DL__A2_TAIL
#undef DL__A2_STORE
}

DL__TARGET("avx2") static void dl__i8_ukr_avx2(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                                               size_t pstride, int32_t *c, int ldc)
{
#define DL__A2_WIDTHS(r) { if (nc > 12) dl__i8_tile_avx2(r, 16, nc, k, a, lda, bp, c, ldc); \
                             else if (nc > 8) dl__i8_tile_avx2(r, 12, nc, k, a, lda, bp, c, ldc); \
                             else dl__i8_tile_avx2(r, 8, nc, k, a, lda, bp, c, ldc); }
    (void)pstride;
    switch (mr) {
    case 4: DL__A2_WIDTHS(4) break;
    case 3: DL__A2_WIDTHS(3) break;
    case 2: DL__A2_WIDTHS(2) break;
    default: DL__A2_WIDTHS(1) break;
    }
#undef DL__A2_WIDTHS
}

/* AVX-512 VNNI: vpdpbusd adds four u8 x s8 products into each s32 lane with no
   intermediate rounding or saturation. Two panels (32 columns) by 8 rows: 16 zmm
   accumulators, 2 B loads and 8 broadcasts per 16 vpdpbusd. */
#define DL__I8_VNNI_MR 8
DL__TARGET("avx512f,avx512bw,avx512vnni") static __attribute__((always_inline)) inline void
dl__i8_tile_vnni(const int MR, const int NP, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                 size_t pstride, int32_t *c, int ldc)
{
    __m512i b0, b1, av;
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1u);
    __mmask16 m1 = (__mmask16)(nc >= 32 ? 0xffff : nc <= 16 ? 0 : (1u << (nc - 16)) - 1u);
    int g, kfull = k / 4;
/* gcc 12 surrounded every _mm512_dpbusd_epi32 with register copies and spills (the
   accumulator is both input and output); as an asm statement with a tied operand
   it allocates the 16 accumulators once. */
#define DL__DPBUSD(acc, x, y) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(y))
#define DL__VN_DECL(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = _mm512_setzero_si512();
#define DL__VN_ROW(r, w) if (MR > r) { av = _mm512_set1_epi32(w); DL__DPBUSD(c##r##0, av, b0); \
        if (NP == 2) DL__DPBUSD(c##r##1, av, b1); }
#define DL__VN_MAIN(r) DL__VN_ROW(r, dl__ld32(a + (size_t)r * lda + 4 * g))
#define DL__VN_TAIL(r) DL__VN_ROW(r, dl__i8_word(a + (size_t)r * lda, g, k))
#define DL__VN_STORE(r) if (MR > r) { _mm512_mask_storeu_epi32(c + (size_t)r * ldc, m0, c##r##0); \
        if (NP == 2) _mm512_mask_storeu_epi32(c + (size_t)r * ldc + 16, m1, c##r##1); }
    DL__I8_ROWS8(DL__VN_DECL)
    b1 = _mm512_setzero_si512();
    if (k % 4) {   /* the tail group first: after the loop, gcc 12 copied and spilled accumulators */
        g = kfull;
        b0 = _mm512_loadu_si512((const void *)(bp + (size_t)g * 64));
        if (NP == 2) b1 = _mm512_loadu_si512((const void *)(bp + pstride + (size_t)g * 64));
        DL__I8_ROWS8(DL__VN_TAIL)
    }
    for (g = 0; g < kfull; g++) {
        b0 = _mm512_loadu_si512((const void *)(bp + (size_t)g * 64));
        if (NP == 2) b1 = _mm512_loadu_si512((const void *)(bp + pstride + (size_t)g * 64));
        DL__I8_ROWS8(DL__VN_MAIN)
    }
    DL__I8_ROWS8(DL__VN_STORE)
    (void)b1;
#undef DL__DPBUSD
#undef DL__VN_DECL
#undef DL__VN_ROW
#undef DL__VN_MAIN
#undef DL__VN_TAIL
#undef DL__VN_STORE
}

/* One panel (n <= 16, the MLP's 10-class layer) by up to 16 rows: the 16 accumulators
   that two panels by 8 rows use. By 8 rows a panel would keep only 8 vpdpbusd chains,
   too few to hide its latency at two a cycle; here one B load feeds 16. */
#define DL__I8_VNNI_TALL 16
DL__TARGET("avx512f,avx512bw,avx512vnni") static __attribute__((always_inline)) inline void
dl__i8_tall_vnni(const int MR, int nc, int k, const uint8_t *a, int lda, const int8_t *bp, int32_t *c, int ldc)
{
    __m512i b0, av;
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1u);
    int g, kfull = k / 4;
    /* rows r and r + 8 share one offset from two bases: 16 row pointers would not fit
       in the general registers (gcc kept some in vector registers and moved them back) */
    const uint8_t *a8 = a + 8 * (size_t)lda;
    const size_t o1 = (size_t)lda, o2 = 2 * o1, o3 = 3 * o1, o4 = 4 * o1, o5 = 5 * o1, o6 = 6 * o1, o7 = 7 * o1;
    const size_t o0 = 0;
#define DL__VT_DECL(r) __m512i c##r = _mm512_setzero_si512();
#define DL__VT_ROW(r, w) if (MR > r) { av = _mm512_set1_epi32(w); __asm__("vpdpbusd %2, %1, %0" : "+v"(c##r) : "v"(av), "v"(b0)); }
#define DL__VT_OFF(r) ((r) == 0 ? o0 : (r) == 1 ? o1 : (r) == 2 ? o2 : (r) == 3 ? o3 : (r) == 4 ? o4 : (r) == 5 ? o5 : (r) == 6 ? o6 : o7)
#define DL__VT_MAIN(r) DL__VT_ROW(r, dl__ld32(((r) < 8 ? a : a8) + DL__VT_OFF((r) % 8) + 4 * g))
#define DL__VT_TAIL(r) DL__VT_ROW(r, dl__i8_word(a + (size_t)r * lda, g, k))
#define DL__VT_STORE(r) if (MR > r) _mm512_mask_storeu_epi32(c + (size_t)r * ldc, m0, c##r);
    DL__I8_ROWS16(DL__VT_DECL)
    if (k % 4) {   /* the tail group first, as in dl__i8_tile_vnni */
        g = kfull;
        b0 = _mm512_loadu_si512((const void *)(bp + (size_t)g * 64));
        DL__I8_ROWS16(DL__VT_TAIL)
    }
    for (g = 0; g < kfull; g++) {
        b0 = _mm512_loadu_si512((const void *)(bp + (size_t)g * 64));
        DL__I8_ROWS16(DL__VT_MAIN)
    }
    DL__I8_ROWS16(DL__VT_STORE)
#undef DL__VT_DECL
#undef DL__VT_OFF
#undef DL__VT_ROW
#undef DL__VT_MAIN
#undef DL__VT_TAIL
#undef DL__VT_STORE
}

/* One row (batch 1): two accumulators would wait on vpdpbusd's latency, so k is split
   four ways (8 accumulators for 32 columns), summed at the end. */
DL__TARGET("avx512f,avx512bw,avx512vnni") static void
dl__i8_row1_vnni(int nc, int k, const uint8_t *a, const int8_t *bp, size_t pstride, int32_t *c)
{
    __m512i s00 = _mm512_setzero_si512(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    const int8_t *b1p = nc > 16 ? bp + pstride : bp;   /* one panel: the second set repeats it, unused */
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1u);
    __mmask16 m1 = (__mmask16)(nc >= 32 ? 0xffff : nc <= 16 ? 0 : (1u << (nc - 16)) - 1u);
    int g = 0, kfull = k / 4;
#define DL__R1(acc0, acc1, gg) do { __m512i av_ = _mm512_set1_epi32(dl__ld32(a + 4 * (gg))); \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc0) : "v"(av_), "v"(_mm512_loadu_si512((const void *)(bp + (size_t)(gg) * 64)))); \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc1) : "v"(av_), "v"(_mm512_loadu_si512((const void *)(b1p + (size_t)(gg) * 64)))); } while (0)
    for (; g + 4 <= kfull; g += 4) {
        DL__R1(s00, s10, g); DL__R1(s01, s11, g + 1); DL__R1(s02, s12, g + 2); DL__R1(s03, s13, g + 3);
    }
    for (; g < kfull; g++) DL__R1(s00, s10, g);
#undef DL__R1
    if (k % 4) {
        __m512i av = _mm512_set1_epi32(dl__i8_word(a, kfull, k));
        s01 = _mm512_dpbusd_epi32(s01, av, _mm512_loadu_si512((const void *)(bp + (size_t)kfull * 64)));
        s11 = _mm512_dpbusd_epi32(s11, av, _mm512_loadu_si512((const void *)(b1p + (size_t)kfull * 64)));
    }
    s00 = _mm512_add_epi32(_mm512_add_epi32(s00, s01), _mm512_add_epi32(s02, s03));
    s10 = _mm512_add_epi32(_mm512_add_epi32(s10, s11), _mm512_add_epi32(s12, s13));
    _mm512_mask_storeu_epi32(c, m0, s00);
    if (nc > 16) _mm512_mask_storeu_epi32(c + 16, m1, s10);
}

DL__TARGET("avx512f,avx512bw,avx512vnni") static void
dl__i8_ukr_vnni(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp, size_t pstride, int32_t *c, int ldc)
{
    if (mr == 1) { dl__i8_row1_vnni(nc, k, a, bp, pstride, c); return; }
    if (mr > DL__I8_VNNI_MR) {   /* nc <= 16: the driver's tall blocks */
#define DL__I8_TALL_CASE(r) case r: dl__i8_tall_vnni(r, nc, k, a, lda, bp, c, ldc); return;
        switch (mr) {
        DL__I8_TALL_CASE(16) DL__I8_TALL_CASE(15) DL__I8_TALL_CASE(14) DL__I8_TALL_CASE(13)
        DL__I8_TALL_CASE(12) DL__I8_TALL_CASE(11) DL__I8_TALL_CASE(10)
        default: DL__I8_TALL_CASE(9)
        }
#undef DL__I8_TALL_CASE
    }
#define DL__I8_VNNI_CASE(r) case r: { if (nc > 16) dl__i8_tile_vnni(r, 2, nc, k, a, lda, bp, pstride, c, ldc); \
                                    else dl__i8_tile_vnni(r, 1, nc, k, a, lda, bp, pstride, c, ldc); } break;
    switch (mr) {
    DL__I8_VNNI_CASE(8) DL__I8_VNNI_CASE(7) DL__I8_VNNI_CASE(6) DL__I8_VNNI_CASE(5)
    DL__I8_VNNI_CASE(4) DL__I8_VNNI_CASE(3) DL__I8_VNNI_CASE(2)
    default: DL__I8_VNNI_CASE(1)
    }
#undef DL__I8_VNNI_CASE
}
#endif

#ifdef DL__NEON
/* NEON (ARMv8.0): smull/smull2 of the broadcast group with a 16-byte block (4 columns x
   4 k) gives s16 products (|127 x 128| fits), sadalp folds pairs into s32; the two
   remaining pair sums per column are added once at the end. One panel by 4 rows. */
#define DL__I8_NEON_MR 4
static __attribute__((always_inline)) inline void
dl__i8_tile_neon(const int MR, int nc, int k, const uint8_t *a, int lda, const int8_t *bp, int32_t *c, int ldc)
{
    int8x16_t b0, b1, b2, b3, av;
    int g, kfull = k / 4;
#define DL__NE_DECL(r) int32x4_t c##r##0 = vdupq_n_s32(0), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0, \
        c##r##4 = c##r##0, c##r##5 = c##r##0, c##r##6 = c##r##0, c##r##7 = c##r##0;
#define DL__NE_Q(r, q, lo, hi, b) c##r##lo = vpadalq_s16(c##r##lo, vmull_s8(vget_low_s8(av), vget_low_s8(b))); \
        c##r##hi = vpadalq_s16(c##r##hi, vmull_high_s8(av, b));
#define DL__NE_ROW(r, w) if (MR > r) { av = vreinterpretq_s8_s32(vdupq_n_s32(w)); \
        DL__NE_Q(r, 0, 0, 1, b0) DL__NE_Q(r, 1, 2, 3, b1) DL__NE_Q(r, 2, 4, 5, b2) DL__NE_Q(r, 3, 6, 7, b3) }
#define DL__NE_MAIN(r) DL__NE_ROW(r, dl__ld32(a + (size_t)r * lda + 4 * g))
#define DL__NE_TAIL(r) DL__NE_ROW(r, dl__i8_word(a + (size_t)r * lda, g, k))
#define DL__NE_STORE(r) if (MR > r) { int32_t t[16]; vst1q_s32(t, vpaddq_s32(c##r##0, c##r##1)); \
        vst1q_s32(t + 4, vpaddq_s32(c##r##2, c##r##3)); vst1q_s32(t + 8, vpaddq_s32(c##r##4, c##r##5)); \
        vst1q_s32(t + 12, vpaddq_s32(c##r##6, c##r##7)); memcpy(c + (size_t)r * ldc, t, (size_t)nc * 4); }
#define DL__NE_LOADB() b0 = vld1q_s8(bp + (size_t)g * 64); b1 = vld1q_s8(bp + (size_t)g * 64 + 16); \
        b2 = vld1q_s8(bp + (size_t)g * 64 + 32); b3 = vld1q_s8(bp + (size_t)g * 64 + 48);
    DL__I8_ROWS4(DL__NE_DECL)
    for (g = 0; g < kfull; g++) { DL__NE_LOADB() DL__I8_ROWS4(DL__NE_MAIN) }
    if (k % 4) { DL__NE_LOADB() DL__I8_ROWS4(DL__NE_TAIL) }
    DL__I8_ROWS4(DL__NE_STORE)
#undef DL__NE_DECL
#undef DL__NE_Q
#undef DL__NE_ROW
#undef DL__NE_MAIN
#undef DL__NE_TAIL
#undef DL__NE_STORE
#undef DL__NE_LOADB
}

static void dl__i8_ukr_neon(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                            size_t pstride, int32_t *c, int ldc)
{
    (void)pstride;
    switch (mr) {
    case 4: dl__i8_tile_neon(4, nc, k, a, lda, bp, c, ldc); break;
    case 3: dl__i8_tile_neon(3, nc, k, a, lda, bp, c, ldc); break;
    case 2: dl__i8_tile_neon(2, nc, k, a, lda, bp, c, ldc); break;
    default: dl__i8_tile_neon(1, nc, k, a, lda, bp, c, ldc); break;
    }
}

/* ARMv8.2 dot product: sdot adds four s8 x s8 products into each s32 lane. Compiled for
   the extension by a target attribute, run only where HWCAP_ASIMDDP says the CPU has it.
   One panel (4 q registers) by 6 rows: 24 accumulators. */
#define DL__I8_DOT_MR 6
#define DL__NEON_DOT __attribute__((target("arch=armv8.2-a+dotprod")))
static DL__NEON_DOT __attribute__((always_inline)) inline void
dl__i8_tile_dot(const int MR, int nc, int k, const uint8_t *a, int lda, const int8_t *bp, int32_t *c, int ldc)
{
    int8x16_t b0, b1, b2, b3, av;
    int g, kfull = k / 4;
#define DL__DT_DECL(r) int32x4_t c##r##0 = vdupq_n_s32(0), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
#define DL__DT_ROW(r, w) if (MR > r) { av = vreinterpretq_s8_s32(vdupq_n_s32(w)); \
        c##r##0 = vdotq_s32(c##r##0, b0, av); c##r##1 = vdotq_s32(c##r##1, b1, av); \
        c##r##2 = vdotq_s32(c##r##2, b2, av); c##r##3 = vdotq_s32(c##r##3, b3, av); }
#define DL__DT_MAIN(r) DL__DT_ROW(r, dl__ld32(a + (size_t)r * lda + 4 * g))
#define DL__DT_TAIL(r) DL__DT_ROW(r, dl__i8_word(a + (size_t)r * lda, g, k))
#define DL__DT_STORE(r) if (MR > r) { int32_t t[16]; vst1q_s32(t, c##r##0); vst1q_s32(t + 4, c##r##1); \
        vst1q_s32(t + 8, c##r##2); vst1q_s32(t + 12, c##r##3); memcpy(c + (size_t)r * ldc, t, (size_t)nc * 4); }
#define DL__DT_LOADB() b0 = vld1q_s8(bp + (size_t)g * 64); b1 = vld1q_s8(bp + (size_t)g * 64 + 16); \
        b2 = vld1q_s8(bp + (size_t)g * 64 + 32); b3 = vld1q_s8(bp + (size_t)g * 64 + 48);
    DL__I8_ROWS6(DL__DT_DECL)
    for (g = 0; g < kfull; g++) { DL__DT_LOADB() DL__I8_ROWS6(DL__DT_MAIN) }
    if (k % 4) { DL__DT_LOADB() DL__I8_ROWS6(DL__DT_TAIL) }
    DL__I8_ROWS6(DL__DT_STORE)
#undef DL__DT_DECL
#undef DL__DT_ROW
#undef DL__DT_MAIN
#undef DL__DT_TAIL
#undef DL__DT_STORE
#undef DL__DT_LOADB
}

static DL__NEON_DOT void dl__i8_ukr_dot(int mr, int nc, int k, const uint8_t *a, int lda, const int8_t *bp,
                                        size_t pstride, int32_t *c, int ldc)
{
    (void)pstride;
    switch (mr) {
    case 6: dl__i8_tile_dot(6, nc, k, a, lda, bp, c, ldc); break;
    case 5: dl__i8_tile_dot(5, nc, k, a, lda, bp, c, ldc); break;
    case 4: dl__i8_tile_dot(4, nc, k, a, lda, bp, c, ldc); break;
    case 3: dl__i8_tile_dot(3, nc, k, a, lda, bp, c, ldc); break;
    case 2: dl__i8_tile_dot(2, nc, k, a, lda, bp, c, ldc); break;
    default: dl__i8_tile_dot(1, nc, k, a, lda, bp, c, ldc); break;
    }
}
#endif

typedef struct { dl__i8_ukr_fn ukr; int mr, np; } dl__i8_desc;

/* The kernel of one variant; ukr NULL where this build or CPU lacks it. */
static dl__i8_desc dl__i8_get(int v)
{
    dl__i8_desc d = { dl__i8_ukr_scalar, DL__I8_SC_MR, 1 };
    dl__init();
    switch (v) {
    case DL__I8_SCALAR: return d;
#ifdef DL__X86
    case DL__I8_AVX2: d.ukr = dl__isa_have[DL__ISA_AVX2] ? dl__i8_ukr_avx2 : NULL; d.mr = DL__I8_AVX2_MR; return d;
    case DL__I8_VNNI: d.ukr = dl__have_vnni ? dl__i8_ukr_vnni : NULL; d.mr = DL__I8_VNNI_MR; d.np = 2; return d;
#endif
#ifdef DL__NEON
    case DL__I8_NEON: d.ukr = dl__i8_ukr_neon; d.mr = DL__I8_NEON_MR; return d;
    case DL__I8_DOT: d.ukr = dl__have_dotprod ? dl__i8_ukr_dot : NULL; d.mr = DL__I8_DOT_MR; return d;
#endif
    default: d.ukr = NULL; return d;
    }
}

/* The variant the current ISA choice implies: VNNI needs the AVX-512 choice and the
   extension (an AVX-512 CPU without VNNI takes the AVX2 kernel). */
static int dl__i8_variant(void)
{
    dl__init();
    switch (dl__isa_cur) {
#ifdef DL__X86
    case DL__ISA_AVX512: return dl__have_vnni ? DL__I8_VNNI : DL__I8_AVX2;
    case DL__ISA_AVX2:   return DL__I8_AVX2;
#endif
#ifdef DL__NEON
    case DL__ISA_NEON:   return dl__have_dotprod ? DL__I8_DOT : DL__I8_NEON;
#endif
    default:             return DL__I8_SCALAR;
    }
}

/* Epilogue called per tile while its s32 results are hot: rows [i0, i0 + mr), columns
   [j0, j0 + nc); t holds them with row stride ldt. */
typedef void (*dl__i8_epi_fn)(void *ctx, const int32_t *t, int ldt, int i0, int mr, int j0, int nc);

typedef struct {
    dl__i8_desc d;
    int m, n, k, lda, ldc, rows_per_task;
    const uint8_t *a;
    const int8_t *bp;
    int32_t *c;
    dl__i8_epi_fn epi;
    void *ctx;
} dl__i8_job;

DL__INLINE_ALWAYS void dl__i8_tile(const dl__i8_job *j, size_t pstride, int i, int mr, int jj, int nc)
{
    const int8_t *bp = j->bp + (size_t)(jj / DL__I8_NP) * pstride;
    if (j->epi) {
        int32_t tile[16 * 32];   /* the largest tiles: 8 rows by two panels, 16 by one */
        j->d.ukr(mr, nc, j->k, j->a + (size_t)i * j->lda, j->lda, bp, pstride, tile, 32);
        j->epi(j->ctx, tile, 32, i, mr, jj, nc);
    } else {
        j->d.ukr(mr, nc, j->k, j->a + (size_t)i * j->lda, j->lda, bp, pstride, j->c + (size_t)i * j->ldc + jj, j->ldc);
    }
}

/* Where the packed B fits in L1 (a conv's weights, the MLP's second layer), an MR-row
   block of A stays in L1 while every panel passes; where it does not (the MLP's first
   layer: 100 KB), that order would stream all of B from L2 for each block of rows, so
   the panels go outside instead: one panel group stays in L1 while the rows pass. */
#define DL__I8_B_IN_L1 (32 * 1024)
static void dl__i8_rows(const dl__i8_job *j, int r0, int r1)
{
    size_t pstride = (size_t)((j->k + 3) / 4) * 64;
    int cols = j->d.np * DL__I8_NP, i, jj;
    if (dl_s8_packed_size(j->n, j->k) <= DL__I8_B_IN_L1) {
        for (i = r0; i < r1; i += j->d.mr)
            for (jj = 0; jj < j->n; jj += cols)
                dl__i8_tile(j, pstride, i, r1 - i < j->d.mr ? r1 - i : j->d.mr, jj, j->n - jj < cols ? j->n - jj : cols);
    } else {
        for (jj = 0; jj < j->n; jj += cols)
            for (i = r0; i < r1; i += j->d.mr)
                dl__i8_tile(j, pstride, i, r1 - i < j->d.mr ? r1 - i : j->d.mr, jj, j->n - jj < cols ? j->n - jj : cols);
    }
}

static void dl__i8_task(void *ctx, int t)
{
    const dl__i8_job *j = (const dl__i8_job *)ctx;
    int r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task < j->m ? r0 + j->rows_per_task : j->m;
    dl__i8_rows(j, r0, r1);
}

/* The driver: row blocks of the kernel's MR, all column panels for each (an MR x k
   block of A stays in L1 while B streams from L2); rows split over the pool when the
   product is big enough to pay for waking it. */
static void dl__i8_gemm(int v, int m, int n, int k, const uint8_t *a, int lda, const int8_t *bp,
                        int32_t *c, int ldc, dl__i8_epi_fn epi, void *ctx)
{
    dl__i8_job j;
    int nt = dl__nthreads;
    if (m <= 0 || n <= 0) return;
    j.d = dl__i8_get(v);
    if (!j.d.ukr) j.d = dl__i8_get(DL__I8_SCALAR);
#ifdef DL__X86
    if (v == DL__I8_VNNI && j.d.ukr == dl__i8_ukr_vnni && n <= DL__I8_NP) j.d.mr = DL__I8_VNNI_TALL;
#endif
    j.m = m; j.n = n; j.k = k; j.a = a; j.lda = lda; j.bp = bp; j.c = c; j.ldc = ldc; j.epi = epi; j.ctx = ctx;
    if (k <= 0) {   /* an empty sum: zeros, through the epilogue if there is one */
        int32_t zero[32] = { 0 };
        int i, jj;
        for (i = 0; i < m; i++)
            for (jj = 0; jj < n; jj += 32) {
                if (epi) epi(ctx, zero, 0, i, 1, jj, n - jj < 32 ? n - jj : 32);
                else memset(c + (size_t)i * ldc + jj, 0, (size_t)(n - jj < 32 ? n - jj : 32) * 4);
            }
        return;
    }
    if (2.0 * m * n * k < 4.0 * DL__PAR_MIN_FLOPS || nt < 2) nt = 1;
    j.rows_per_task = ((m + nt - 1) / nt + j.d.mr - 1) / j.d.mr * j.d.mr;
    nt = (m + j.rows_per_task - 1) / j.rows_per_task;
    if (nt <= 1) dl__i8_rows(&j, 0, m);
    else dl__parallel_for(nt, dl__i8_task, &j, 0);
}

DLDEF void dl_gemm_u8s8s32(int m, int n, int k, const uint8_t *a, int lda, const int8_t *packed_b,
                           int32_t *c, int ldc)
{
    dl__i8_gemm(dl__i8_variant(), m, n, k, a, lda, packed_b, c, ldc, NULL, NULL);
}

DLDEF const char *dl_int8_kernel_name(void) { return dl__i8_names[dl__i8_variant()]; }

/* ---- 1.9 Row quantization: floats -> 7-bit codes for the int8 GEMM's A -------------------
   q = clamp(rne(x * inv) + zp, 0, 127). The vector loops multiply and round exactly as
   the scalar one does (one f32 multiply, round to nearest even), so the codes agree.
   x * inv is clamped to [-256, 256] before rounding: that changes no code (zp is in
   [0, 127]) and keeps the conversion in range for a value far outside a fixed range or
   an inf (a NaN gives code 0 everywhere). */
static void dl__quant_scalar(const float *x, uint8_t *q, int i, int n, float inv, int zp)
{
    for (; i < n; i++) {
        float f = x[i] * inv;
        long v;
        f = f > -256.0f ? f : -256.0f;   /* a NaN goes to -256 as maxps takes it there */
        v = lrintf(f < 256.0f ? f : 256.0f) + zp;
        q[i] = (uint8_t)(v < 0 ? 0 : v > 127 ? 127 : v);
    }
}

/* min(0, x) and max(0, x) over a row (zero stays exactly representable), and whether the
   row holds an inf or a NaN (all exponent bits set): the quantizer is the first to read
   a dl_predict input, so it checks it on the way. */
static int dl__minmax_scalar(const float *x, int i, int n, float *lo, float *hi)
{
    float l = *lo, h = *hi;   /* locals: through the pointers every step would be a store */
    uint32_t bad = 0;
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *lo = l;
    *hi = h;
    return bad != 0;
}

#ifdef DL__X86
DL__TARGET("avx2") static void dl__quant_avx2(const float *x, uint8_t *q, int n, float inv, int zp)
{
    int i = 0;
    const __m256 vi = _mm256_set1_ps(inv), top = _mm256_set1_ps(256.0f), bottom = _mm256_set1_ps(-256.0f);
    __m256i vz = _mm256_set1_epi32(zp), v127 = _mm256_set1_epi8(127), perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
#define DL__Q8(o) _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps( \
        _mm256_mul_ps(_mm256_loadu_ps(x + i + o), vi), bottom), top)), vz)
    /* 32 at a time: the saturating packs clamp below at 0 (values above 127 clamp at
       32767 / 255 first, then at 127), the permute undoes their lane interleave */
    for (; i + 32 <= n; i += 32) {
        __m256i v0 = DL__Q8(0), v1 = DL__Q8(8), v2 = DL__Q8(16), v3 = DL__Q8(24);
        __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
        w = _mm256_min_epu8(_mm256_permutevar8x32_epi32(w, perm), v127);
        _mm256_storeu_si256((__m256i *)(q + i), w);
    }
#undef DL__Q8
    dl__quant_scalar(x, q, i, n, inv, zp);
}

DL__TARGET("avx2") static int dl__minmax_avx2(const float *x, int n, float *lo, float *hi)
{
    int i = 0, bad;
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    __m256 l0 = _mm256_setzero_ps(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
    __m256i nf = _mm256_setzero_si256();
    float t[8];
#define DL__NF(v) _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), e), e)
    for (; i + 32 <= n; i += 32) {   /* four chains: min/max latency would bound one */
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
        l0 = _mm256_min_ps(l0, v0); h0 = _mm256_max_ps(h0, v0);
        l1 = _mm256_min_ps(l1, v1); h1 = _mm256_max_ps(h1, v1);
        l2 = _mm256_min_ps(l2, v2); h2 = _mm256_max_ps(h2, v2);
        l3 = _mm256_min_ps(l3, v3); h3 = _mm256_max_ps(h3, v3);
        nf = _mm256_or_si256(nf, _mm256_or_si256(_mm256_or_si256(DL__NF(v0), DL__NF(v1)), _mm256_or_si256(DL__NF(v2), DL__NF(v3))));
    }
    for (; i + 8 <= n; i += 8) {   /* the rest in whole vectors too: 784 = 24 x 32 + 16 */
        __m256 v = _mm256_loadu_ps(x + i);
        l1 = _mm256_min_ps(l1, v); h1 = _mm256_max_ps(h1, v);
        nf = _mm256_or_si256(nf, DL__NF(v));
    }
#undef DL__NF
    bad = !_mm256_testz_si256(nf, nf);
    l0 = _mm256_min_ps(_mm256_min_ps(l0, l1), _mm256_min_ps(l2, l3));
    h0 = _mm256_max_ps(_mm256_max_ps(h0, h1), _mm256_max_ps(h2, h3));
    _mm256_storeu_ps(t, l0);
    dl__minmax_scalar(t, 0, 8, lo, hi);
    _mm256_storeu_ps(t, h0);
    dl__minmax_scalar(t, 0, 8, lo, hi);
    return dl__minmax_scalar(x, i, n, lo, hi) | bad;
}

DL__GXX_UNINIT_OFF
/* AVX-512: 64 at a time through the saturating packs as in AVX2 (vpmovdb to memory is
   slow on AMD), the tail 16 at a time under a mask through vpmovdb. A row quantized by
   a scale from its own range has |x * inv| <= 127 and skips the clamp. */
DL__TARGET("avx512f,avx512bw") DL__INLINE_ALWAYS __m512i dl__q16_avx512(__m512 v, __m512 inv, __m512i zp, const int clamp)
{
    __m512 f = _mm512_mul_ps(v, inv);
    if (clamp) f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-256.0f)), _mm512_set1_ps(256.0f));
    return _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
}

DL__TARGET("avx512f,avx512bw") DL__INLINE_ALWAYS void dl__quant512(const float *x, uint8_t *q, int n, float inv, int zp, const int clamp)
{
    int i = 0;
    const __m512 vi = _mm512_set1_ps(inv);
    const __m512i vz = _mm512_set1_epi32(zp), zero = _mm512_setzero_si512(), v127 = _mm512_set1_epi32(127);
    const __m512i b127 = _mm512_set1_epi8(127), perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (; i + 64 <= n; i += 64) {
        __m512i a = dl__q16_avx512(_mm512_loadu_ps(x + i), vi, vz, clamp);
        __m512i b = dl__q16_avx512(_mm512_loadu_ps(x + i + 16), vi, vz, clamp);
        __m512i c = dl__q16_avx512(_mm512_loadu_ps(x + i + 32), vi, vz, clamp);
        __m512i d = dl__q16_avx512(_mm512_loadu_ps(x + i + 48), vi, vz, clamp);
        __m512i w = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
        _mm512_storeu_si512((void *)(q + i), _mm512_min_epu8(_mm512_permutexvar_epi32(perm, w), b127));
    }
    for (; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
        __m512i v = dl__q16_avx512(_mm512_maskz_loadu_ps(m, x + i), vi, vz, clamp);
        _mm512_mask_cvtepi32_storeu_epi8(q + i, m, _mm512_min_epi32(_mm512_max_epi32(v, zero), v127));
    }
}

DL__TARGET("avx512f,avx512bw") static void dl__quant_avx512(const float *x, uint8_t *q, int n, float inv, int zp, int clamp)
{
    if (clamp) dl__quant512(x, q, n, inv, zp, 1);
    else dl__quant512(x, q, n, inv, zp, 0);
}

DL__TARGET("avx512f") static int dl__minmax_avx512(const float *x, int n, float *lo, float *hi)
{
    int i = 0;
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    __m512 l0 = _mm512_setzero_ps(), h0 = l0, l1 = l0, h1 = l0;
    unsigned bad = 0;
    float l, h;
#define DL__NF(v) _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), e), e)
    for (; i + 32 <= n; i += 32) {   /* two chains: 784 = 24 x 32 + 16 */
        __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        l0 = _mm512_min_ps(l0, v0); h0 = _mm512_max_ps(h0, v0);
        l1 = _mm512_min_ps(l1, v1); h1 = _mm512_max_ps(h1, v1);
        bad |= (unsigned)DL__NF(v0) | (unsigned)DL__NF(v1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        l1 = _mm512_min_ps(l1, v); h1 = _mm512_max_ps(h1, v);
        bad |= (unsigned)DL__NF(v);
    }
#undef DL__NF
    l = _mm512_reduce_min_ps(_mm512_min_ps(l0, l1));
    h = _mm512_reduce_max_ps(_mm512_max_ps(h0, h1));
    if (l < *lo) *lo = l;
    if (h > *hi) *hi = h;
    return bad != 0;
}
DL__GXX_UNINIT_ON
#endif

/* Per-row parameters from a range [lo, hi] that holds 0: x ~ scale * (q - zp). Returns 0
   when the range gives no scale (all zeros, a width past FLT_MAX, inf or NaN): then scale
   1 and zero point 0. */
static int dl__quant_params(float lo, float hi, float *scale, int *zp)
{
    float s = (hi - lo) / 127.0f;
    long z;
    if (!(s > 0.0f) || !isfinite(s)) { *scale = 1.0f; *zp = 0; return 0; }
    z = (long)(-lo / s + 0.5f);   /* -lo / s is in [0, 127]: half up, without a call to lrintf */
    *scale = s;
    *zp = (int)(z < 0 ? 0 : z > 127 ? 127 : z);
    return 1;
}

/* Quantizes n values; range NULL: the row's own range (dynamic), else that range.
   Returns nonzero when the row's own range was asked for and the row holds an inf or a
   NaN (its codes then use scale 1 and zero point 0, the same on every ISA); with a
   fixed range the row is not checked. */
static int dl__quant_row(const float *x, uint8_t *q, int n, const float *range, float *scale, int *zp)
{
    float lo = 0.0f, hi = 0.0f, inv;
    int bad, scaled;
    if (range) { lo = range[0]; hi = range[1]; bad = 0; }
    else switch (dl__isa_cur) {
#ifdef DL__X86
        case DL__ISA_AVX512: bad = dl__minmax_avx512(x, n, &lo, &hi); break;
        case DL__ISA_AVX2:   bad = dl__minmax_avx2(x, n, &lo, &hi); break;
#endif
        default:             bad = dl__minmax_scalar(x, 0, n, &lo, &hi); break;
    }
    if (bad) lo = hi = 0.0f;   /* scale 1, zero point 0: the ISAs' min and max treat a NaN differently */
    scaled = dl__quant_params(lo, hi, scale, zp);
    inv = 1.0f / *scale;
#ifdef DL__X86
    if (dl__isa_cur == DL__ISA_AVX512 && dl__have_avx512bwdq) dl__quant_avx512(x, q, n, inv, *zp, range || !scaled);
    else if (dl__isa_cur != DL__ISA_SCALAR) dl__quant_avx2(x, q, n, inv, *zp);
    else
#else
    (void)scaled;   /* only the AVX-512 loop may skip its clamp */
#endif
    dl__quant_scalar(x, q, 0, n, inv, *zp);
    return bad;
}

/* ==== 1.10 Half floats: storage only, widened on load (F16C, NEON fcvt, scalar) ============
   Narrowing (at save) rounds to nearest even: the mantissa is shifted down with the
   rounding bias added in the integer domain; half subnormals come from adding a magic
   float whose exponent puts the wanted bits at the bottom (the FPU rounds). Widening
   quiets NaNs the way F16C and fcvt do, so every path gives the same bits. */
DLDEF uint16_t dl_f32_to_f16(float f)
{
    uint32_t x, sign, o;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x47800000u) {                    /* >= 65536, inf or NaN */
        o = x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u;
    } else if (x < 0x38800000u) {              /* below 2^-14: a half subnormal or zero */
        float v, magic;
        uint32_t mb = 0x3f000000u;             /* 0.5: one half-ulp of 2^-24 at the bottom */
        memcpy(&v, &x, 4);
        memcpy(&magic, &mb, 4);
        v += magic;
        memcpy(&o, &v, 4);
        o -= mb;
    } else {
        uint32_t odd = (x >> 13) & 1u;
        x += 0xc8000fffu + odd;                /* rebias exponent 127 -> 15 and round */
        o = x >> 13;
    }
    return (uint16_t)(o | sign);
}

DLDEF float dl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
    float f;
    if (e == 0) {
        f = (float)mant * 5.9604644775390625e-8f;   /* mant * 2^-24, exact */
        memcpy(&x, &f, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u);
    } else {
        x = sign | ((e + 112u) << 23) | (mant << 13);
    }
    memcpy(&f, &x, 4);
    return f;
}

static size_t dl__f16_widen_scalar(const uint16_t *h, float *f, size_t i, size_t n)
{
    for (; i < n; i++) f[i] = dl_f16_to_f32(h[i]);
    return i;
}

#ifdef DL__X86
DL__TARGET("avx,f16c") static size_t dl__f16_widen_f16c(const uint16_t *h, float *f, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    return i;
}
#endif
#ifdef DL__NEON
static size_t dl__f16_widen_neon(const uint16_t *h, float *f, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(f + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
    return i;
}
#endif

/* variant: 0 scalar, 1 the vector one (F16C or NEON) where present; -1 the best. */
static void dl__f16_widen(const uint16_t *h, float *f, size_t n, int variant)
{
    size_t i = 0;
    dl__init();
#ifdef DL__X86
    if (variant != 0 && dl__have_f16c && dl__isa_cur != DL__ISA_SCALAR) i = dl__f16_widen_f16c(h, f, n);
#endif
#ifdef DL__NEON
    if (variant != 0 && dl__isa_cur != DL__ISA_SCALAR) i = dl__f16_widen_neon(h, f, n);
#endif
    (void)variant;
    dl__f16_widen_scalar(h, f, i, n);
}

/* ==== 2-3. Tensors, graph, autograd, optimizers ==================================== */
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

/* ---- 3. Graph: nodes and the op table --------------------------------------------- */

typedef struct dl__node {
    int      op;
    int      in[3], n_in;
    dl_shape shape;           /* current shape; d[0] is the batch when `batched` */
    int      batched;
    int      is_param, needs_grad, regularize;
    float    fparam;          /* op parameter: leaky slope, dropout rate, batch norm eps */
    float    fparam2;         /* batch norm momentum */
    int      ip[14];          /* integer op parameters (conv2d/pooling geometry, batch norm's state nodes) */
    float   *val, *grad, *aux;
    float   *m, *v;           /* optimizer state (parameters only) */
    size_t   aux_floats;      /* scratch size at max batch */
    size_t   grad_off;        /* placement found by the planner */
    int      last_use;        /* highest node index reading this node */
    unsigned touched;         /* backward pass in which grad was last claimed */
    int      fresh;           /* claimed this pass, not yet written: the first writer overwrites */
    int      keep_grad;       /* asked for with dl_require_grad: never shares its buffer */
    int      fusable;         /* dl_graph_step: updated inside the backward pass */
    unsigned fused_pass;      /* the pass in which that happened */
    int      wanted;          /* dl__forward: the target depends on it */
    int      ready_at;        /* parameter: its gradient is complete after this node's backward */
    int      comm_state;      /* dl_graph_step with a comm: 0 idle, 1 reducing, 2 reduced, 3 in the bucket */
    void    *comm_req;        /* the hook's handle while a non-blocking reduction runs */
    int      comm_shard;      /* this step: summed with reduce_scatter, updated in shards */
    int      state_shard;     /* its optimizer state is whole only in this rank's shard */
    double   t_fwd, t_bwd;    /* seconds in forward / backward while the graph profiles */
    char     name[48];
} dl__node;

struct dl_graph {
    dl__node *nodes;
    int       n, cap;
    int      *params, n_params;
    int      *states, n_states;   /* dl_state nodes: kept and saved, not trained */
    float    *arena;
    size_t    arena_floats;
    int       max_batch, batch, training, planned;
    unsigned  pass;           /* backward pass counter for lazy gradient zeroing */
    long      opt_t;          /* optimizer steps taken (Adam's bias correction) */
    int       freeze_dropout; /* gradcheck: reuse the last mask */
    uint64_t  dropout_key;    /* from the seed; with the counter, names every mask bit */
    uint64_t  dropout_ctr;
    dl_rng    rng;
    const struct dl__step *fuse; /* dl_graph_step's update, during its backward pass */
    int       profile;        /* dl_fit's profile: time each node (dl__node.t_fwd/t_bwd) */
    double    t_update;       /* seconds in dl_graph_step's updates after the pass */
    double    t_comm;         /* seconds in gradient reductions after the pass, and allgathers */
    const dl_comm *comm;      /* dl_graph_set_comm: gradients summed over ranks */
    int       comm_live;      /* inside dl_graph_step with a comm: reduce as gradients complete */
    int       comm_failed;    /* a callback failed during this step */
    int       shard_ok;       /* this step may shard updates (the hook can, no clip_norm) */
    int       state_shard;    /* some parameter's optimizer state is sharded */
    float    *bucket;         /* the small gradients and figures, summed in one call */
    size_t    bucket_cap;     /* floats */
    float     figures[2];     /* dl_fit: the batch's loss x rows and hits, summed with the gradients */
    int       n_figures;      /* 2 while dl_fit steps with a comm, else 0 */
    int       figures_bad;    /* the summed loss was not finite: the step made no update */
    int       rows_first, rows_total; /* dl_graph_set_rows (total 0: not set) */
    int       rows_empty;     /* dl_fit: this rank's part is empty; its placeholder row weighs 0 */
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
    DL__OP_MSE, DL__OP_BCE_LOGITS, DL__OP_SPARSE_CE,
    DL__OP_STATE, DL__OP_MAX_POOL2D, DL__OP_AVG_POOL2D, DL__OP_GLOBAL_AVG_POOL2D, DL__OP_BATCH_NORM,
    DL__OP_CONV2D
};

static const char *dl__op_name(int op);   /* from the op table, below */
static dl__node *dl__in(dl_graph *g, const dl__node *n, int i) { return &g->nodes[n->in[i]]; }
static int dl__valid(const dl_graph *g, int id);
static size_t dl__numel(const dl__node *n) { return dl_shape_numel(n->shape); }

/* Floats the node needs at the largest batch. */
static size_t dl__numel_at(const dl__node *n, int batch)
{
    return n->batched ? dl__numel(n) / (size_t)n->shape.d[0] * (size_t)batch : dl__numel(n);
}
static int dl__last_dim(const dl__node *n) { return n->shape.ndim ? n->shape.d[n->shape.ndim - 1] : 1; }
/* Parameters and dl_state nodes own their values (outside the arena). */
static int dl__owns_val(const dl__node *n) { return n->is_param || n->op == DL__OP_STATE; }

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

/* Output size and leading pad of one spatial dim; DL_ERR when the window does not fit. */
static int dl__pad_dim(int in, int k, int stride, int dil, int mode, int pb, int pe, int *pad_begin, int *out)
{
    int ke = (k - 1) * dil + 1;
    if (mode == DL_PAD_SAME) {
        int o = (in + stride - 1) / stride, total = (o - 1) * stride + ke - in;
        if (total < 0) total = 0;
        pb = total / 2;
        pe = total - pb;
    } else if (mode == DL_PAD_VALID) {
        pb = pe = 0;
    }
    *pad_begin = pb;
    if ((long)in + pb + pe < ke) return DL_ERR;
    *out = (int)(((long)in + pb + pe - ke) / stride + 1);
    return DL_OK;
}

/* Conv2d and pooling geometry in ip[]: kh kw stride_h stride_w dil_h dil_w groups,
   pad_top pad_left (the actual ones after infer), relu, the explicit pad_bottom
   pad_right, and the padding mode. */
enum { DL__IP_KH, DL__IP_KW, DL__IP_SH, DL__IP_SW, DL__IP_DH, DL__IP_DW, DL__IP_GROUPS,
       DL__IP_PT, DL__IP_PL, DL__IP_RELU, DL__IP_PB, DL__IP_PR, DL__IP_MODE };

static int dl__infer_spatial(dl_graph *g, dl__node *n, int k_out)
{
    dl__node *x = dl__in(g, n, 0);
    const char *op = dl__op_name(n->op);
    int *ip = n->ip, oh, ow, pt, pl, mode = ip[DL__IP_MODE];
    char sx[64];
    if (!x->batched || x->shape.ndim != 4)
        return dl__error("%s: input '%s' is %s, not a batch of [h, w, c] images", op, x->name, dl_shape_str(x->shape, sx, sizeof sx));
    if (dl__pad_dim(x->shape.d[1], ip[DL__IP_KH], ip[DL__IP_SH], ip[DL__IP_DH], mode, ip[DL__IP_PT], ip[DL__IP_PB], &pt, &oh) != DL_OK ||
        dl__pad_dim(x->shape.d[2], ip[DL__IP_KW], ip[DL__IP_SW], ip[DL__IP_DW], mode, ip[DL__IP_PL], ip[DL__IP_PR], &pl, &ow) != DL_OK)
        return dl__error("%s: a %dx%d window (dilation %dx%d) does not fit in %dx%d images with this padding", op,
                         ip[DL__IP_KH], ip[DL__IP_KW], ip[DL__IP_DH], ip[DL__IP_DW], x->shape.d[1], x->shape.d[2]);
    ip[DL__IP_PT] = pt;
    ip[DL__IP_PL] = pl;
    n->shape = x->shape;
    n->shape.d[1] = oh;
    n->shape.d[2] = ow;
    if (k_out > 0) n->shape.d[3] = k_out;
    return DL_OK;
}

static int dl__infer_pool(dl_graph *g, dl__node *n) { return dl__infer_spatial(g, n, 0); }

/* The kernels' description of a conv2d node at the current batch. */
static void dl__conv_params(dl_graph *g, const dl__node *n, dl_conv2d_params *p)
{
    const dl__node *x = dl__in(g, n, 0), *w = dl__in(g, n, 1);
    const int *ip = n->ip;
    p->n = x->shape.d[0]; p->h = x->shape.d[1]; p->w = x->shape.d[2]; p->c = x->shape.d[3];
    p->oc = w->shape.d[3]; p->kh = w->shape.d[0]; p->kw = w->shape.d[1];
    p->stride_h = ip[DL__IP_SH]; p->stride_w = ip[DL__IP_SW]; p->dil_h = ip[DL__IP_DH]; p->dil_w = ip[DL__IP_DW];
    p->pad_top = ip[DL__IP_PT]; p->pad_left = ip[DL__IP_PL];
    p->oh = n->shape.d[1]; p->ow = n->shape.d[2];
    p->groups = ip[DL__IP_GROUPS];
}

static int dl__infer_conv2d(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0), *w = dl__in(g, n, 1);
    dl_conv2d_params p;
    char sx[64], sw[64];
    int grp = n->ip[DL__IP_GROUPS];
    if (w->batched || w->shape.ndim != 4 || !x->batched || x->shape.ndim != 4 || x->shape.d[3] != w->shape.d[2] * grp ||
        w->shape.d[3] % grp)
        return dl__error("conv2d: input %s and kernel %s (want [n, h, w, c] and [kh, kw, c / %d, filters])",
                         dl_shape_str(x->shape, sx, sizeof sx), dl_shape_str(w->shape, sw, sizeof sw), grp);
    n->ip[DL__IP_KH] = w->shape.d[0];
    n->ip[DL__IP_KW] = w->shape.d[1];
    if (n->in[2] != DL_NONE) {
        dl__node *b = dl__in(g, n, 2);
        if (b->batched || b->shape.ndim != 1 || b->shape.d[0] != w->shape.d[3])
            return dl__shape_err("conv2d", "bias must be 1-D of the filter count", w->shape, b->shape);
    }
    if (dl__infer_spatial(g, n, w->shape.d[3]) != DL_OK) return DL_ERR;
    dl__conv_params(g, n, &p);
    return dl_conv2d_check(&p);
}

static int dl__infer_gap(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0);
    char sx[64];
    if (!x->batched || x->shape.ndim != 4)
        return dl__error("global_avg_pool2d: input '%s' is %s, not a batch of [h, w, c] images", x->name, dl_shape_str(x->shape, sx, sizeof sx));
    n->shape = dl_shape_make(x->shape.d[0], x->shape.d[3], 0, 0);
    return DL_OK;
}

static int dl__infer_batch_norm(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0);
    int c = dl__last_dim(x), i, ids[4];
    char sx[64];
    if (!x->batched || x->shape.ndim < 2)
        return dl__error("batch_norm: input '%s' is %s, not a batch of samples", x->name, dl_shape_str(x->shape, sx, sizeof sx));
    ids[0] = n->in[1]; ids[1] = n->in[2]; ids[2] = n->ip[0]; ids[3] = n->ip[1];
    for (i = 0; i < 4; i++) {
        const dl__node *p;
        if (!dl__valid(g, ids[i])) return dl__error("batch_norm: %s is not a node of this graph", i == 2 ? "moving_mean" : "moving_var");
        p = &g->nodes[ids[i]];
        if (p->batched || p->shape.ndim != 1 || p->shape.d[0] != c)
            return dl__error("batch_norm: '%s' is %s; it must be 1-D of the %d channels", p->name, dl_shape_str(p->shape, sx, sizeof sx), c);
        if (i >= 2 && p->op != DL__OP_STATE) return dl__error("batch_norm: '%s' must be a dl_state node", p->name);
    }
    n->shape = x->shape;
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

static void dl__fused_update(dl_graph *g, dl__node *w, const float *x, const float *dy, int m, int k, int nn);

static void dl__bwd_matmul(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0), *w = dl__in(g, n, 1);
    int m, k, nn;
    dl__matmul_dims(g, n, &m, &k, &nn);
    /* dx first: it reads w, which a fused update below changes */
    if (x->needs_grad) dl_sgemm(0, 1, m, k, nn, 1.0f, n->grad, nn, w->val, nn, dl__grad_beta(x), x->grad, k);
    if (w->needs_grad && g->fuse && w->fusable) dl__fused_update(g, w, x->val, n->grad, m, k, nn);
    else if (w->needs_grad) dl_sgemm(1, 0, k, nn, m, 1.0f, x->val, k, n->grad, nn, dl__grad_beta(w), w->grad, nn);
    if (n->op == DL__OP_DENSE && n->in[2] != DL_NONE && dl__in(g, n, 2)->needs_grad) {
        float *db = dl__grad_acc(dl__in(g, n, 2));
        int i, j;
        /* four rows per pass: db may alias for all the compiler knows, so each pass
           is a load and a store of db per column (SSE2 on x86-64, 4 columns at once) */
        for (i = 0; i + 4 <= m; i += 4) {
            const float *d0 = n->grad + (size_t)i * nn, *d1 = d0 + nn, *d2 = d1 + nn, *d3 = d2 + nn;
            j = 0;
#if defined(DL__X86) && defined(__x86_64__)
            for (; j + 4 <= nn; j += 4)
                _mm_storeu_ps(db + j, _mm_add_ps(_mm_loadu_ps(db + j),
                    _mm_add_ps(_mm_add_ps(_mm_loadu_ps(d0 + j), _mm_loadu_ps(d1 + j)),
                               _mm_add_ps(_mm_loadu_ps(d2 + j), _mm_loadu_ps(d3 + j)))));
#endif
            for (; j < nn; j++) db[j] += (d0[j] + d1[j]) + (d2[j] + d3[j]);
        }
        for (; i < m; i++) {
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
    if (n->op == DL__OP_RELU) { dl__relu_bwd(x, dy, xn->grad, len, dl__grad_beta(xn) != 0.0f); return; }
    dx = dl__grad_acc(xn);
    /* Masks as arithmetic, not branches: the signs of activations are random. */
    switch (n->op) {
    case DL__OP_LEAKY_RELU: for (i = 0; i < len; i++) dx[i] += dy[i] * (x[i] > 0.0f ? 1.0f : alpha); break;
    case DL__OP_SIGMOID:    for (i = 0; i < len; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]); break;
    case DL__OP_TANH:       for (i = 0; i < len; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]); break;
    default: DLCORE_ASSERT(0);
    }
}

/* Row-wise softmax with the max subtracted, so large logits cannot overflow (y may be x). */
static void dl__softmax_rows(const float *x, float *y, size_t rows, int cols, int log_out)
{
    size_t r;
    int j;
#ifdef DL__X86
    if (!log_out && dl__isa_cur == DL__ISA_AVX512) { dl__softmax_rows_avx512(x, y, rows, cols); return; }
#endif
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)cols;
        float *yr = y + r * (size_t)cols, mx = xr[0], sum = 0.0f;
        for (j = 1; j < cols; j++) if (xr[j] > mx) mx = xr[j];
        if (log_out) {
            float lse;
            for (j = 0; j < cols; j++) sum += expf(xr[j] - mx);
            lse = mx + logf(sum);
            for (j = 0; j < cols; j++) yr[j] = xr[j] - lse;
        } else {
            float inv;
            for (j = 0; j < cols; j++) sum += yr[j] = expf(xr[j] - mx);
            inv = 1.0f / sum;
            for (j = 0; j < cols; j++) yr[j] *= inv;
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

static size_t dl__aux_dropout(const dl_graph *g, const dl__node *n) { return dl__numel_at(n, g->max_batch); }

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

/* Four mask entries from one 64-bit hash: 16 bits each, kept when >= cut (so the
   drop probability is cut / 65536), stored as the float keep factor or 0. */
static void dl__dropout_mask4(uint64_t h, uint32_t cut, uint32_t keep_bits, float *dst, size_t count)
{
    uint32_t b[4];
    /* An integer select: int-to-float conversions here stalled on a false
       dependency and cost more than the hashing. */
    b[0] = keep_bits & (0u - (uint32_t)((uint32_t)(h & 0xFFFFu) >= cut));
    b[1] = keep_bits & (0u - (uint32_t)((uint32_t)((h >> 16) & 0xFFFFu) >= cut));
    b[2] = keep_bits & (0u - (uint32_t)((uint32_t)((h >> 32) & 0xFFFFu) >= cut));
    b[3] = keep_bits & (0u - (uint32_t)((uint32_t)(h >> 48) >= cut));
    memcpy(dst, b, count * sizeof(float));
}

#if defined(DL__X86) && defined(__x86_64__)
/* AVX-512: eight hashes, 32 mask entries, per step. vpmullq (DQ) forms the 64-bit
   products of dl__mix64 exactly, and the 32 16-bit fields of the eight hashes are
   mask entries 0..31 in order, so one unsigned compare (BW) gives the same bits as the
   scalar and SSE2 paths. Entries done (a multiple of 32); z advances past their hashes. */
DL__GXX_UNINIT_OFF
DL__TARGET("avx512f,avx512bw,avx512dq")
static size_t dl__dropout_avx512(const float *x, float *y, float *mask, size_t len, uint64_t *z,
                                 uint64_t golden, uint32_t cut, float keep)
{
    const __m512i c1 = _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ULL);
    const __m512i c2 = _mm512_set1_epi64((long long)0x94d049bb133111ebULL);
    const __m512i step = _mm512_set1_epi64((long long)(8 * golden));
    const __m512i cutv = _mm512_set1_epi16((short)cut);
    const __m512 k = _mm512_set1_ps(keep);
    __m512i h = _mm512_add_epi64(_mm512_set1_epi64((long long)*z),
                                 _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                                                    _mm512_set1_epi64((long long)golden)));
    size_t i = 0;
    if (cut >= 65536u) return 0; /* rate ~1: every entry dropped; 16-bit cut cannot say so */
    for (; i + 32 <= len; i += 32, h = _mm512_add_epi64(h, step)) {
        __m512i v = _mm512_mullo_epi64(_mm512_xor_si512(h, _mm512_srli_epi64(h, 30)), c1);
        __mmask32 keep_bits;
        __m512 m0, m1;
        v = _mm512_mullo_epi64(_mm512_xor_si512(v, _mm512_srli_epi64(v, 27)), c2);
        v = _mm512_xor_si512(v, _mm512_srli_epi64(v, 31));
        keep_bits = _mm512_cmpge_epu16_mask(v, cutv);
        m0 = _mm512_maskz_mov_ps((__mmask16)keep_bits, k);
        m1 = _mm512_maskz_mov_ps((__mmask16)(keep_bits >> 16), k);
        _mm512_storeu_ps(mask + i, m0);
        _mm512_storeu_ps(mask + i + 16, m1);
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), m0));
        _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(_mm512_loadu_ps(x + i + 16), m1));
    }
    *z += (uint64_t)(i / 4) * golden;
    return i;
}
DL__GXX_UNINIT_ON
#endif

/* The mask of len entries whose first hash is z, and y = x * mask. */
static void dl__dropout_run(const float *x, float *y, float *mask, size_t len, uint64_t z, uint32_t cut, float keep)
{
    /* mask entries 4q..4q+3 come from hash(z + q * golden): any split of the work,
       and every ISA, gives the same mask */
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    size_t i, q = 0, done = 0; /* done: outputs already written */
    uint32_t keep_bits;
    memcpy(&keep_bits, &keep, 4);
#if defined(DL__X86) && defined(__x86_64__)
    if (dl__isa_cur == DL__ISA_AVX512 && dl__have_avx512bwdq) {
        done = dl__dropout_avx512(x, y, mask, len, &z, golden, cut, keep);
        q = done / 4;
    }
    { /* SSE2 (x86-64 baseline): the 4 x 16 bits widened and compared at once, 4x
         faster than the scalar selects (0.5 vs 2 ns per element on Zen 3) */
        const __m128i c = _mm_set1_epi32((int)cut - 1), zero = _mm_setzero_si128();
        const __m128 k = _mm_set1_ps(keep);
        for (; 4 * q + 4 <= len; q++, z += golden) {
            __m128i h = _mm_unpacklo_epi16(_mm_cvtsi64_si128((long long)dl__mix64(z)), zero);
            __m128 mk = _mm_and_ps(k, _mm_castsi128_ps(_mm_cmpgt_epi32(h, c)));
            _mm_storeu_ps(mask + 4 * q, mk);
            _mm_storeu_ps(y + 4 * q, _mm_mul_ps(_mm_loadu_ps(x + 4 * q), mk));
        }
        done = 4 * q;
    }
#endif
    for (; 4 * q < len; q++, z += golden)
        dl__dropout_mask4(dl__mix64(z), cut, keep_bits, mask + 4 * q, len - 4 * q < 4 ? len - 4 * q : 4);
    for (i = done; i < len; i++) y[i] = x[i] * mask[i];
}

/* The global rows this step's batch holds (dl_graph_set_rows). */
static int dl__rows_total(const dl_graph *g)
{
    if (g->rows_total > 0) return g->rows_total;
    return g->comm ? g->comm->size * g->batch : g->batch;
}
static int dl__rows_first(const dl_graph *g)
{
    if (g->rows_total > 0) return g->rows_first;
    return g->comm ? g->comm->rank * g->batch : 0;
}

static int dl__fwd_dropout(dl_graph *g, dl__node *n)
{
    const float *x = dl__in(g, n, 0)->val;
    size_t i, len = dl__numel(n);
    float rate = n->fparam, keep = 1.0f / (1.0f - rate), *mask = n->aux;
    uint32_t cut = (uint32_t)(rate * 65536.0f + 0.5f);
    if (!g->training || rate <= 0.0f) {
        memcpy(n->val, x, len * sizeof(float));
        return DL_OK;
    }
    if (!g->freeze_dropout) {
        /* Entry e of the global batch (rows of all ranks one after another) comes
           from hash e / 4, so a batch split over ranks draws, entry for entry, the
           mask one process draws for the whole batch. This part starts at entry e0,
           perhaps inside a hash's four. */
        const uint64_t golden = 0x9e3779b97f4a7c15ULL;
        size_t rows = n->batched ? (size_t)n->shape.d[0] : 1, row_len = len / rows, done = 0;
        size_t e0 = n->batched ? (size_t)dl__rows_first(g) * row_len : 0;
        size_t total = n->batched ? (size_t)dl__rows_total(g) * row_len : len;
        uint64_t z = g->dropout_key + (g->dropout_ctr + (uint64_t)(e0 / 4)) * golden;
        if (e0 % 4) {
            float four[4];
            uint32_t keep_bits;
            memcpy(&keep_bits, &keep, 4);
            dl__dropout_mask4(dl__mix64(z), cut, keep_bits, four, 4);
            for (done = 0; done < 4 - e0 % 4 && done < len; done++) {
                mask[done] = four[e0 % 4 + done];
                n->val[done] = x[done] * mask[done];
            }
            z += golden;
        }
        dl__dropout_run(x + done, n->val + done, mask + done, len - done, z, cut, keep);
        g->dropout_ctr += (uint64_t)((total + 3) / 4);
        return DL_OK;
    }
    for (i = 0; i < len; i++) n->val[i] = x[i] * mask[i];
    return DL_OK;
}

static void dl__bwd_dropout(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    size_t i, len = dl__numel(n);
    const float *dy = n->grad, *mask = n->aux;
    float *dx;
    int masked = g->training && n->fparam > 0.0f;
    if (!xn->needs_grad) return;
    dx = xn->grad;
    if (dl__grad_beta(xn) == 0.0f) { /* first writer: overwrite, no zeroing pass */
        if (masked) dl__mask_grad(dx, dy, mask, len, 0);
        else memcpy(dx, dy, len * sizeof(float));
    } else {
        if (masked) dl__mask_grad(dx, dy, mask, len, 1);
        else for (i = 0; i < len; i++) dx[i] += dy[i];
    }
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
    return dl__numel_at(&g->nodes[n->in[0]], g->max_batch);
}

/* Mean over rows of logsumexp(z) - z[label] (section 1.8); the softmax probabilities
   are kept in the scratch buffer because backward is (p - onehot) / rows. */
static int dl__fwd_sparse_ce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    int cols = dl__last_dim(p);
    size_t r, rows = dl__numel(p) / (size_t)cols;
    for (r = 0; r < rows; r++) {
        float lf = t->val[r];
        /* In range before the cast: (int) of a NaN or of 1e10 is undefined. */
        if (!(lf >= 0.0f && lf < (float)cols) || (float)(int)lf != lf)
            return dl__error("sparse_ce: label %g of row %zu is not a class in [0, %d)", (double)lf, r, cols);
    }
    n->val[0] = (float)(dl__ce_rows(p->val, t->val, n->aux, rows, cols) / (double)rows);
    return DL_OK;
}

static void dl__bwd_sparse_ce(dl_graph *g, dl__node *n)
{
    dl__node *p = dl__in(g, n, 0), *t = dl__in(g, n, 1);
    int cols = dl__last_dim(p), j, acc;
    size_t r, rows = dl__numel(p) / (size_t)cols;
    float s = n->grad[0] / (float)rows;
    if (!p->needs_grad) return;
    acc = dl__grad_beta(p) != 0.0f; /* the first writer overwrites: no zeroing pass */
    for (r = 0; r < rows; r++) {
        float *dz = p->grad + r * cols;
        const float *pr = n->aux + r * cols;
        int label = (int)t->val[r];
        for (j = 0; j < cols; j++) {
            float d = s * (pr[j] - (j == label ? 1.0f : 0.0f));
            dz[j] = acc ? dz[j] + d : d;
        }
    }
}

/* ---- 3. Ops: pooling and batch normalisation (channels last) ---------------------

   The c values of one pixel are contiguous, so every inner loop runs over channels:
   four lanes at a time (SSE2, the x86-64 baseline, or NEON), sixteen with AVX-512 for
   max pooling, the CNN's hottest of these. The compiler leaves such loops scalar at
   -O2 (for all it knows the buffers overlap), hence by hand. Pooling splits the batch
   over the thread pool; each sample's work is the same on any thread count. */
#if defined(DL__X86)
typedef __m128 dl__v4;
#define dl__v4_ld(p) _mm_loadu_ps(p)
#define dl__v4_st(p, v) _mm_storeu_ps(p, v)
#define dl__v4_set(f) _mm_set1_ps(f)
#define dl__v4_add(a, b) _mm_add_ps(a, b)
#define dl__v4_sub(a, b) _mm_sub_ps(a, b)
#define dl__v4_mul(a, b) _mm_mul_ps(a, b)
#define dl__v4_max(a, b) _mm_max_ps(a, b)
#define DL__V4 1
#elif defined(DL__NEON)
typedef float32x4_t dl__v4;
#define dl__v4_ld(p) vld1q_f32(p)
#define dl__v4_st(p, v) vst1q_f32(p, v)
#define dl__v4_set(f) vdupq_n_f32(f)
#define dl__v4_add(a, b) vaddq_f32(a, b)
#define dl__v4_sub(a, b) vsubq_f32(a, b)
#define dl__v4_mul(a, b) vmulq_f32(a, b)
#define dl__v4_max(a, b) vmaxq_f32(a, b)
#define DL__V4 1
#endif

/* s += x */
static void dl__ch_add(float *s, const float *x, int c)
{
    int k = 0;
#ifdef DL__V4
    for (; k + 4 <= c; k += 4) dl__v4_st(s + k, dl__v4_add(dl__v4_ld(s + k), dl__v4_ld(x + k)));
#endif
    for (; k < c; k++) s[k] += x[k];
}

/* s = max(s, x) */
DL__UNUSED static void dl__ch_max(float *s, const float *x, int c)
{
    int k = 0;
#ifdef DL__V4
    for (; k + 4 <= c; k += 4) dl__v4_st(s + k, dl__v4_max(dl__v4_ld(x + k), dl__v4_ld(s + k)));
#endif
    for (; k < c; k++) s[k] = x[k] > s[k] ? x[k] : s[k];
}

/* d += alpha x */
static void dl__ch_axpy(float *d, const float *x, float alpha, int c)
{
    int k = 0;
#ifdef DL__V4
    dl__v4 al = dl__v4_set(alpha);
    for (; k + 4 <= c; k += 4) dl__v4_st(d + k, dl__v4_add(dl__v4_ld(d + k), dl__v4_mul(dl__v4_ld(x + k), al)));
#endif
    for (; k < c; k++) d[k] += alpha * x[k];
}

/* y = x a + b (acc = 0), y += x a + b (acc = 1); a, b per channel */
static void dl__ch_affine(float *y, const float *x, const float *a, const float *b, int c, int acc)
{
    int k = 0;
#ifdef DL__V4
    for (; k + 4 <= c; k += 4) {
        dl__v4 v = dl__v4_add(dl__v4_mul(dl__v4_ld(x + k), dl__v4_ld(a + k)), dl__v4_ld(b + k));
        dl__v4_st(y + k, acc ? dl__v4_add(dl__v4_ld(y + k), v) : v);
    }
#endif
    for (; k < c; k++) y[k] = (acc ? y[k] : 0.0f) + x[k] * a[k] + b[k];
}

/* s += (x - m) w, w = x - m when w is NULL (a sum of squares) */
static void dl__ch_centered(float *s, const float *x, const float *m, const float *w, int c)
{
    int k = 0;
#ifdef DL__V4
    for (; k + 4 <= c; k += 4) {
        dl__v4 d = dl__v4_sub(dl__v4_ld(x + k), dl__v4_ld(m + k));
        dl__v4_st(s + k, dl__v4_add(dl__v4_ld(s + k), dl__v4_mul(d, w ? dl__v4_ld(w + k) : d)));
    }
#endif
    for (; k < c; k++) { float d = x[k] - m[k]; s[k] += d * (w ? w[k] : d); }
}

/* Max pooling over one window pixel: y = max(y, x) per channel, a = pix where x wins
   (ties keep the earlier pixel); backward: d += dy where a == pix. */
#ifdef DL__X86
DL__TARGET("avx512f") static int dl__maxpool_step_avx512(float *y, int32_t *a, const float *x, int32_t pix, int c)
{
    const __m512i p = _mm512_set1_epi32(pix);
    int k = 0;
    for (; k + 16 <= c; k += 16) {
        __m512 xv = _mm512_loadu_ps(x + k), yv = _mm512_loadu_ps(y + k);
        __mmask16 t = _mm512_cmp_ps_mask(xv, yv, _CMP_GT_OQ);
        _mm512_storeu_ps(y + k, _mm512_mask_mov_ps(yv, t, xv));
        _mm512_storeu_si512((void *)(a + k), _mm512_mask_mov_epi32(_mm512_loadu_si512((const void *)(a + k)), t, p));
    }
    return k;
}

DL__TARGET("avx512f") static int dl__maxpool_back_avx512(float *d, const int32_t *a, const float *dy, int32_t pix, int c)
{
    const __m512i p = _mm512_set1_epi32(pix);
    int k = 0;
    for (; k + 16 <= c; k += 16) {
        __mmask16 t = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512((const void *)(a + k)), p);
        __m512 dv = _mm512_loadu_ps(d + k);
        _mm512_storeu_ps(d + k, _mm512_mask_add_ps(dv, t, dv, _mm512_loadu_ps(dy + k)));
    }
    return k;
}
#endif

static void dl__maxpool_step(float *y, int32_t *a, const float *x, int32_t pix, int c)
{
    int k = 0;
#if defined(DL__X86)
    const __m128i p = _mm_set1_epi32(pix);
    if (dl__isa_cur == DL__ISA_AVX512) k = dl__maxpool_step_avx512(y, a, x, pix, c);
    for (; k + 4 <= c; k += 4) {
        __m128 xv = _mm_loadu_ps(x + k), yv = _mm_loadu_ps(y + k), t = _mm_cmpgt_ps(xv, yv);
        __m128i ti = _mm_castps_si128(t), av = _mm_loadu_si128((const __m128i *)(const void *)(a + k));
        _mm_storeu_ps(y + k, _mm_or_ps(_mm_and_ps(t, xv), _mm_andnot_ps(t, yv)));
        _mm_storeu_si128((__m128i *)(void *)(a + k), _mm_or_si128(_mm_and_si128(ti, p), _mm_andnot_si128(ti, av)));
    }
#elif defined(DL__NEON)
    const int32x4_t p = vdupq_n_s32(pix);
    for (; k + 4 <= c; k += 4) {
        float32x4_t xv = vld1q_f32(x + k), yv = vld1q_f32(y + k);
        uint32x4_t t = vcgtq_f32(xv, yv);
        vst1q_f32(y + k, vbslq_f32(t, xv, yv));
        vst1q_s32(a + k, vbslq_s32(t, p, vld1q_s32(a + k)));
    }
#endif
    for (; k < c; k++) {
        int take = x[k] > y[k];
        y[k] = take ? x[k] : y[k];
        a[k] = take ? pix : a[k];
    }
}

static void dl__maxpool_back(float *d, const int32_t *a, const float *dy, int32_t pix, int c)
{
    int k = 0;
#if defined(DL__X86)
    const __m128i p = _mm_set1_epi32(pix);
    if (dl__isa_cur == DL__ISA_AVX512) k = dl__maxpool_back_avx512(d, a, dy, pix, c);
    for (; k + 4 <= c; k += 4) {
        __m128 t = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(const void *)(a + k)), p));
        _mm_storeu_ps(d + k, _mm_add_ps(_mm_loadu_ps(d + k), _mm_and_ps(t, _mm_loadu_ps(dy + k))));
    }
#elif defined(DL__NEON)
    const int32x4_t p = vdupq_n_s32(pix);
    for (; k + 4 <= c; k += 4) {
        uint32x4_t t = vceqq_s32(vld1q_s32(a + k), p);
        float32x4_t add = vreinterpretq_f32_u32(vandq_u32(t, vreinterpretq_u32_f32(vld1q_f32(dy + k))));
        vst1q_f32(d + k, vaddq_f32(vld1q_f32(d + k), add));
    }
#endif
    for (; k < c; k++) if (a[k] == pix) d[k] += dy[k];
}

/* One output pixel's window, clipped to the image: rows [*y0, *y1), columns [*x0, *x1). */
static void dl__window(const dl__node *n, int h, int w, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    const int *ip = n->ip;
    int ys = oy * ip[DL__IP_SH] - ip[DL__IP_PT], xs = ox * ip[DL__IP_SW] - ip[DL__IP_PL];
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ys + ip[DL__IP_KH] < h ? ys + ip[DL__IP_KH] : h;
    *x1 = xs + ip[DL__IP_KW] < w ? xs + ip[DL__IP_KW] : w;
}

/* Max pooling keeps, per output value, the pixel (y * w + x) it came from: backward
   adds dy where a window pixel is that one. The index is an int32 in the float scratch. */
static size_t dl__aux_max_pool(const dl_graph *g, const dl__node *n) { return dl__numel_at(n, g->max_batch); }

/* A pooling pass over one sample (task = the sample) of the node in ctx. backward 2:
   the windows tile the image from its corner (stride = size, no padding) and dx is
   fresh, so each pixel is written once, with no zeroing pass and no read of dx. */
typedef struct dl__pool_job { dl_graph *g; dl__node *n; int backward; } dl__pool_job;

/* d = dy where a == pix, else 0 */
static void dl__maxpool_back_set(float *d, const int32_t *a, const float *dy, int32_t pix, int c)
{
    int k = 0;
#if defined(DL__X86)
    const __m128i p = _mm_set1_epi32(pix);
    for (; k + 4 <= c; k += 4) {
        __m128 t = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(const void *)(a + k)), p));
        _mm_storeu_ps(d + k, _mm_and_ps(t, _mm_loadu_ps(dy + k)));
    }
#elif defined(DL__NEON)
    const int32x4_t p = vdupq_n_s32(pix);
    for (; k + 4 <= c; k += 4)
        vst1q_f32(d + k, vreinterpretq_f32_u32(vandq_u32(vceqq_s32(vld1q_s32(a + k), p), vreinterpretq_u32_f32(vld1q_f32(dy + k)))));
#endif
    for (; k < c; k++) d[k] = a[k] == pix ? dy[k] : 0.0f;
}

static void dl__pool_task(void *ctx, int b)
{
    const dl__pool_job *j = (const dl__pool_job *)ctx;
    dl__node *n = j->n, *xn = dl__in(j->g, n, 0);
    int h = xn->shape.d[1], w = xn->shape.d[2], c = xn->shape.d[3];
    int oh = n->shape.d[1], ow = n->shape.d[2], oy, ox, y, x, y0, y1, x0, x1, k, is_max = n->op == DL__OP_MAX_POOL2D;
    const float *xs = xn->val + (size_t)b * h * w * c;
    float *dxs = j->backward ? xn->grad + (size_t)b * h * w * c : NULL;
    for (oy = 0; oy < oh; oy++)
        for (ox = 0; ox < ow; ox++) {
            size_t o = (((size_t)b * oh + oy) * ow + ox) * c;
            float *yv = n->val + o, inv;
            const float *dy = j->backward ? n->grad + o : NULL;
            int32_t *a = is_max ? (int32_t *)(void *)n->aux + o : NULL;
            dl__window(n, h, w, oy, ox, &y0, &y1, &x0, &x1);
            inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
            if (!j->backward) {
                if (is_max) { memcpy(yv, xs + ((size_t)y0 * w + x0) * c, (size_t)c * sizeof(float)); for (k = 0; k < c; k++) a[k] = y0 * w + x0; }
                else for (k = 0; k < c; k++) yv[k] = 0.0f;
            }
            for (y = y0; y < y1; y++)
                for (x = x0; x < x1; x++) {
                    size_t at = ((size_t)y * w + x) * c;
                    if (j->backward == 2) {
                        if (is_max) dl__maxpool_back_set(dxs + at, a, dy, (int32_t)(y * w + x), c);
                        else for (k = 0; k < c; k++) dxs[at + k] = dy[k] * inv;
                    } else if (j->backward) {
                        if (is_max) dl__maxpool_back(dxs + at, a, dy, (int32_t)(y * w + x), c);
                        else dl__ch_axpy(dxs + at, dy, inv, c);
                    } else {
                        if (is_max) dl__maxpool_step(yv, a, xs + at, (int32_t)(y * w + x), c);
                        else dl__ch_add(yv, xs + at, c);
                    }
                }
            if (!j->backward && !is_max) for (k = 0; k < c; k++) yv[k] *= inv;
        }
    if (j->backward == 2) {   /* the rows and columns no window covers */
        int ch = oh * n->ip[DL__IP_KH], cw = ow * n->ip[DL__IP_KW];   /* 'same' may pad past the end */
        if (ch > h) ch = h;
        if (cw > w) cw = w;
        for (y = 0; y < h; y++) {
            size_t from = y < ch ? (size_t)cw * c : 0;
            memset(dxs + (size_t)y * w * c + from, 0, ((size_t)w * c - from) * sizeof(float));
        }
    }
}

static int dl__fwd_pool(dl_graph *g, dl__node *n)
{
    dl__pool_job j;
    j.g = g; j.n = n; j.backward = 0;
    dl__tasks(n->shape.d[0], dl__pool_task, &j, dl__numel(dl__in(g, n, 0)));
    return DL_OK;
}

static void dl__bwd_pool(dl_graph *g, dl__node *n)
{
    dl__pool_job j;
    dl__node *xn = dl__in(g, n, 0);
    const int *ip = n->ip;
    if (!xn->needs_grad) return;
    j.g = g; j.n = n; j.backward = 1;
    if (xn->fresh && ip[DL__IP_SH] == ip[DL__IP_KH] && ip[DL__IP_SW] == ip[DL__IP_KW] && ip[DL__IP_PT] == 0 && ip[DL__IP_PL] == 0) {
        xn->fresh = 0;
        j.backward = 2;
    } else {
        dl__grad_acc(xn);
    }
    dl__tasks(n->shape.d[0], dl__pool_task, &j, dl__numel(xn));
}

static int dl__fwd_gap(dl_graph *g, dl__node *n)
{
    const dl__node *xn = dl__in(g, n, 0);
    int nb = xn->shape.d[0], hw = xn->shape.d[1] * xn->shape.d[2], c = xn->shape.d[3], b, p, k;
    float inv = 1.0f / (float)hw;
    for (b = 0; b < nb; b++) {
        float *y = n->val + (size_t)b * c;
        const float *x = xn->val + (size_t)b * hw * c;
        for (k = 0; k < c; k++) y[k] = 0.0f;
        for (p = 0; p < hw; p++) dl__ch_add(y, x + (size_t)p * c, c);
        for (k = 0; k < c; k++) y[k] *= inv;
    }
    return DL_OK;
}

static void dl__bwd_gap(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0);
    int nb = xn->shape.d[0], hw = xn->shape.d[1] * xn->shape.d[2], c = xn->shape.d[3], b, p;
    float inv = 1.0f / (float)hw, *dx;
    if (!xn->needs_grad) return;
    dx = dl__grad_acc(xn);
    for (b = 0; b < nb; b++)
        for (p = 0; p < hw; p++) dl__ch_axpy(dx + ((size_t)b * hw + p) * c, n->grad + (size_t)b * c, inv, c);
}

/* Batch norm's scratch: the mean and 1/sqrt(var + eps) the forward pass used (batch
   or moving statistics), then three per-channel rows of work. ip[2] says which the forward
   used (1: the batch's), for backward. */
static size_t dl__aux_batch_norm(const dl_graph *g, const dl__node *n) { (void)g; return 5 * (size_t)dl__last_dim(n); }

/* Per-channel sums over rows, in blocks of 256 rows whose partial sums are added to the
   total: float error grows with the block and block count, not the batch (64 x 26 x 26
   rows in the first layer of the MNIST CNN). With mean: of (x - mean)^2; with w too:
   of (x - mean) w. */
static void dl__channel_sums(const float *x, size_t rows, int c, const float *mean, const float *w, float *part, float *out)
{
    size_t r, r0;
    int k;
    for (k = 0; k < c; k++) out[k] = 0.0f;
    for (r0 = 0; r0 < rows; r0 += 256) {
        size_t r1 = r0 + 256 < rows ? r0 + 256 : rows;
        for (k = 0; k < c; k++) part[k] = 0.0f;
        for (r = r0; r < r1; r++) {
            if (mean) dl__ch_centered(part, x + r * c, mean, w ? w + r * c : NULL, c);
            else dl__ch_add(part, x + r * c, c);
        }
        dl__ch_add(out, part, c);
    }
}

static int dl__fwd_batch_norm(dl_graph *g, dl__node *n)
{
    const dl__node *xn = dl__in(g, n, 0);
    const float *gamma = dl__in(g, n, 1)->val, *beta = dl__in(g, n, 2)->val;
    float *mm = g->nodes[n->ip[0]].val, *mv = g->nodes[n->ip[1]].val;
    int c = dl__last_dim(n), k;
    size_t r, rows = dl__numel(n) / (size_t)c;
    float *mean = n->aux, *inv = n->aux + c, *part = n->aux + 2 * c, *var = n->aux + 3 * c;
    float eps = n->fparam, mom = n->fparam2;
    n->ip[2] = g->training;
    if (g->training) {
        float rn = 1.0f / (float)rows, unbias = rows > 1 ? (float)rows / (float)(rows - 1) : 1.0f;
        dl__channel_sums(xn->val, rows, c, NULL, NULL, part, mean);
        for (k = 0; k < c; k++) mean[k] *= rn;
        dl__channel_sums(xn->val, rows, c, mean, NULL, part, var);
        for (k = 0; k < c; k++) {
            var[k] *= rn;
            inv[k] = 1.0f / sqrtf(var[k] + eps);
            /* gradcheck evaluates many times; the moving statistics then drift, which
               changes nothing in training mode */
            mm[k] = mom * mm[k] + (1.0f - mom) * mean[k];
            mv[k] = mom * mv[k] + (1.0f - mom) * var[k] * unbias;
        }
    } else {
        for (k = 0; k < c; k++) { mean[k] = mm[k]; inv[k] = 1.0f / sqrtf(mv[k] + eps); }
    }
    /* y = x a + b per channel: a = gamma inv, b = beta - mean a (scratch part/var) */
    for (k = 0; k < c; k++) { part[k] = gamma[k] * inv[k]; var[k] = beta[k] - mean[k] * part[k]; }
    for (r = 0; r < rows; r++) dl__ch_affine(n->val + r * c, xn->val + r * c, part, var, c, 0);
    return DL_OK;
}

/* dx += dy A + x C + D per channel */
static void dl__ch_bn_dx(float *dx, const float *dy, const float *x, const float *A, const float *C, const float *D, int c)
{
    int k = 0;
#ifdef DL__V4
    for (; k + 4 <= c; k += 4) {
        dl__v4 v = dl__v4_add(dl__v4_mul(dl__v4_ld(dy + k), dl__v4_ld(A + k)), dl__v4_mul(dl__v4_ld(x + k), dl__v4_ld(C + k)));
        dl__v4_st(dx + k, dl__v4_add(dl__v4_ld(dx + k), dl__v4_add(v, dl__v4_ld(D + k))));
    }
#endif
    for (; k < c; k++) dx[k] += dy[k] * A[k] + x[k] * C[k] + D[k];
}

static void dl__bwd_batch_norm(dl_graph *g, dl__node *n)
{
    dl__node *xn = dl__in(g, n, 0), *gn = dl__in(g, n, 1), *bn = dl__in(g, n, 2);
    int c = dl__last_dim(n), k;
    size_t r, rows = dl__numel(n) / (size_t)c;
    const float *mean = n->aux, *inv = n->aux + c, *gamma = gn->val;
    /* scratch rows 2..4: sum dy and sum dy xhat, then A, C, D below */
    float *sdy = n->aux + 2 * c, *sdyx = n->aux + 3 * c, *D = n->aux + 4 * c;
    for (k = 0; k < c; k++) sdy[k] = sdyx[k] = 0.0f;
    for (r = 0; r < rows; r++) {
        dl__ch_add(sdy, n->grad + r * c, c);
        dl__ch_centered(sdyx, xn->val + r * c, mean, n->grad + r * c, c);
    }
    for (k = 0; k < c; k++) sdyx[k] *= inv[k];
    if (gn->needs_grad) dl__ch_add(dl__grad_acc(gn), sdyx, c);
    if (bn->needs_grad) dl__ch_add(dl__grad_acc(bn), sdy, c);
    if (xn->needs_grad) {
        /* training: dx = A (dy - mean(dy) - xhat mean(dy xhat)) with A = gamma inv (the
           batch statistics depend on x); evaluation: dx = A dy. Per channel that is
           dx += dy A + x C + D with C = -A inv mean(dy xhat), D = -A mean(dy) - mean C. */
        float *dx = dl__grad_acc(xn), rn = n->ip[2] ? 1.0f / (float)rows : 0.0f;
        float *A = sdy, *C = sdyx;
        for (k = 0; k < c; k++) {
            float a = gamma[k] * inv[k], cc = -a * inv[k] * sdyx[k] * rn;
            D[k] = -a * sdy[k] * rn - mean[k] * cc;
            A[k] = a;
            C[k] = cc;
        }
        for (r = 0; r < rows; r++) dl__ch_bn_dx(dx + r * c, n->grad + r * c, xn->val + r * c, A, C, D, c);
    }
}

/* conv2d with its bias and, when asked, ReLU: the kernels do the bias; ReLU is one
   pass over the output (on the pool when it is large), and its backward masks dy in
   place (y > 0 exactly where x > 0), so the op needs no buffer of its own for it.
   A gradient asked for on the node with dl_require_grad then reads the masked one. */
static int dl__fwd_conv2d(dl_graph *g, dl__node *n)
{
    dl_conv2d_params p;
    dl__conv_params(g, n, &p);
    dl_conv2d_fwd(&p, dl__in(g, n, 0)->val, dl__in(g, n, 1)->val, n->in[2] != DL_NONE ? dl__in(g, n, 2)->val : NULL, n->val);
    if (n->ip[DL__IP_RELU]) dl__relu_inplace(NULL, n->val, dl__numel(n), 0);
    return DL_OK;
}

static void dl__bwd_conv2d(dl_graph *g, dl__node *n)
{
    dl__node *x = dl__in(g, n, 0), *w = dl__in(g, n, 1), *b = n->in[2] != DL_NONE ? dl__in(g, n, 2) : NULL;
    dl_conv2d_params p;
    dl__conv_params(g, n, &p);
    if (n->ip[DL__IP_RELU]) dl__relu_inplace(n->val, n->grad, dl__numel(n), 1);
    if (x->needs_grad) dl_conv2d_bwd_data(&p, n->grad, w->val, x->grad, dl__grad_beta(x) != 0.0f);
    if (b && !b->needs_grad) b = NULL;
    if (w->needs_grad || b) {
        /* one accumulate flag for both: a fresh buffer beside one in use is zeroed first */
        int acc_w = w->needs_grad && !w->fresh, acc_b = b && !b->fresh;
        float *dw = w->needs_grad ? w->grad : NULL;
        if (w->needs_grad && b && acc_w != acc_b) { dl__grad_acc(w); dl__grad_acc(b); acc_w = 1; }
        if (dw) { w->fresh = 0; if (b) b->fresh = 0; dl_conv2d_bwd_weights(&p, x->val, n->grad, dw, b ? b->grad : NULL, acc_w); }
        else { /* bias alone */
            size_t r, rows = dl__numel(n) / (size_t)p.oc;
            int k;
            float *db = dl__grad_acc(b);
            for (r = 0; r < rows; r++) for (k = 0; k < p.oc; k++) db[k] += n->grad[r * p.oc + k];
        }
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
    { "sparse_ce",   dl__infer_loss,       dl__aux_sparse_ce, dl__fwd_sparse_ce, dl__bwd_sparse_ce, 0 },
    { "state",       NULL,                 NULL,              NULL,            NULL,           0 },
    { "max_pool2d",  dl__infer_pool,       dl__aux_max_pool,  dl__fwd_pool,    dl__bwd_pool,   0 },
    { "avg_pool2d",  dl__infer_pool,       NULL,              dl__fwd_pool,    dl__bwd_pool,   0 },
    { "global_avg_pool2d", dl__infer_gap,  NULL,              dl__fwd_gap,     dl__bwd_gap,    0 },
    { "batch_norm",  dl__infer_batch_norm, dl__aux_batch_norm, dl__fwd_batch_norm, dl__bwd_batch_norm, 0 },
    { "conv2d",      dl__infer_conv2d,     NULL,              dl__fwd_conv2d,  dl__bwd_conv2d, 0 }
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
        if (dl__owns_val(&g->nodes[i])) { DLCORE_FREE(g->nodes[i].val); DLCORE_FREE(g->nodes[i].grad); }
    DLCORE_FREE(g->nodes);
    DLCORE_FREE(g->params);
    DLCORE_FREE(g->states);
    DLCORE_FREE(g->arena);
    DLCORE_FREE(g->bucket);
    DLCORE_FREE(g);
}

static int dl__valid(const dl_graph *g, int id) { return id >= 0 && id < g->n; }

/* Appends a node for `op` over `ins` (ip: integer parameters, may be NULL), infers
   its shape; returns its handle or a negative value (the first failing handle passes
   through unchanged). */
static int dl__push_ip(dl_graph *g, int op, const int *ins, int n_in, float fparam,
                       const dl_shape *want, const char *name, const int *ip)
{
    dl__node *n;
    int i;
    if (!g) return dl__error("dl_graph: NULL graph");
    for (i = 0; i < n_in; i++) {
        if (ins[i] == DL_NONE && !((op == DL__OP_DENSE || op == DL__OP_CONV2D) && i == 2))
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
    if (ip) memcpy(n->ip, ip, sizeof n->ip);
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

static int dl__push(dl_graph *g, int op, const int *ins, int n_in, float fparam,
                    const dl_shape *want, const char *name)
{
    return dl__push_ip(g, op, ins, n_in, fparam, want, name, NULL);
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
    /* [kh, kw, in, out] (3-D: [k, in, out]), as Keras computes a conv kernel's fans */
    for (i = 0; i < s.ndim - 2; i++) rf *= (size_t)s.d[i];
    *fan_in = (float)((size_t)s.d[s.ndim - 2] * rf);
    *fan_out = (float)((size_t)s.d[s.ndim - 1] * rf);
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

DLDEF int dl_state(dl_graph *g, const char *name, dl_shape s, int init)
{
    dl__node *n;
    size_t i, numel = dl_shape_numel(s);
    int id, *st;
    if (s.ndim < 1 || numel == 0)
        return dl__error("dl_state '%s': needs 1 to 4 positive dims", name ? name : "?");
    id = dl__push(g, DL__OP_STATE, NULL, 0, 0, NULL, name);
    if (id < 0) return id;
    n = &g->nodes[id];
    n->shape = s;
    n->val = (float *)DLCORE_MALLOC(numel * sizeof(float));
    st = (int *)DLCORE_REALLOC(g->states, (size_t)(g->n_states + 1) * sizeof(int));
    if (st) g->states = st;
    if (!n->val || !st) { DLCORE_FREE(n->val); g->n--; return dl__error("dl_state '%s': out of memory", n->name); }
    g->states[g->n_states++] = id;
    for (i = 0; i < numel; i++) n->val[i] = init == DL_INIT_ONES ? 1.0f : 0.0f;
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

static int dl__pool_op(dl_graph *g, int op, int x, int kh, int kw, const dl_pool2d_opts *o)
{
    dl_pool2d_opts d;
    int ip[14], ins[1];
    const char *name = op == DL__OP_MAX_POOL2D ? "dl_op_max_pool2d" : "dl_op_avg_pool2d";
    if (o) d = *o; else memset(&d, 0, sizeof d);
    if (kh < 1 || kw < 1) return dl__error("%s: pool size %dx%d", name, kh, kw);
    if (d.stride_h < 0 || d.stride_w < 0 || d.padding < DL_PAD_VALID || d.padding > DL_PAD_EXPLICIT)
        return dl__error("%s: negative stride or unknown padding %d", name, d.padding);
    if (d.padding == DL_PAD_EXPLICIT && (d.pad_top < 0 || d.pad_bottom < 0 || d.pad_left < 0 || d.pad_right < 0 ||
                                         d.pad_top >= kh || d.pad_bottom >= kh || d.pad_left >= kw || d.pad_right >= kw))
        return dl__error("%s: pads %d %d %d %d must be in [0, pool size)", name, d.pad_top, d.pad_bottom, d.pad_left, d.pad_right);
    memset(ip, 0, sizeof ip);
    ip[DL__IP_KH] = kh; ip[DL__IP_KW] = kw;
    ip[DL__IP_SH] = d.stride_h ? d.stride_h : kh; ip[DL__IP_SW] = d.stride_w ? d.stride_w : kw;
    ip[DL__IP_DH] = ip[DL__IP_DW] = ip[DL__IP_GROUPS] = 1;
    ip[DL__IP_PT] = d.pad_top; ip[DL__IP_PB] = d.pad_bottom; ip[DL__IP_PL] = d.pad_left; ip[DL__IP_PR] = d.pad_right;
    ip[DL__IP_MODE] = d.padding;
    ins[0] = x;
    return dl__push_ip(g, op, ins, 1, 0, NULL, NULL, ip);
}

DLDEF int dl_op_conv2d(dl_graph *g, int x, int w, int bias, const dl_conv2d_opts *o)
{
    dl_conv2d_opts d;
    int ip[14], ins[3];
    if (o) d = *o; else memset(&d, 0, sizeof d);
    if (d.stride_h < 0 || d.stride_w < 0 || d.dil_h < 0 || d.dil_w < 0 || d.groups < 0 || d.padding < DL_PAD_VALID ||
        d.padding > DL_PAD_EXPLICIT || d.pad_top < 0 || d.pad_bottom < 0 || d.pad_left < 0 || d.pad_right < 0)
        return dl__error("dl_op_conv2d: negative stride, dilation, groups or pad, or unknown padding %d", d.padding);
    memset(ip, 0, sizeof ip);
    ip[DL__IP_SH] = d.stride_h ? d.stride_h : 1; ip[DL__IP_SW] = d.stride_w ? d.stride_w : 1;
    ip[DL__IP_DH] = d.dil_h ? d.dil_h : 1; ip[DL__IP_DW] = d.dil_w ? d.dil_w : 1;
    ip[DL__IP_GROUPS] = d.groups ? d.groups : 1;
    ip[DL__IP_PT] = d.pad_top; ip[DL__IP_PB] = d.pad_bottom; ip[DL__IP_PL] = d.pad_left; ip[DL__IP_PR] = d.pad_right;
    ip[DL__IP_MODE] = d.padding;
    ip[DL__IP_RELU] = d.relu != 0;
    ins[0] = x; ins[1] = w; ins[2] = bias;
    return dl__push_ip(g, DL__OP_CONV2D, ins, 3, 0, NULL, NULL, ip);
}

DLDEF int dl_op_max_pool2d(dl_graph *g, int x, int kh, int kw, const dl_pool2d_opts *o) { return dl__pool_op(g, DL__OP_MAX_POOL2D, x, kh, kw, o); }
DLDEF int dl_op_avg_pool2d(dl_graph *g, int x, int kh, int kw, const dl_pool2d_opts *o) { return dl__pool_op(g, DL__OP_AVG_POOL2D, x, kh, kw, o); }
DLDEF int dl_op_global_avg_pool2d(dl_graph *g, int x) { return dl__op1(g, DL__OP_GLOBAL_AVG_POOL2D, x, 0); }

DLDEF int dl_op_batch_norm(dl_graph *g, int x, int gamma, int beta, int moving_mean, int moving_var,
                           const dl_batch_norm_opts *o)
{
    int ins[3], ip[14], id;
    float mom = o && o->momentum != 0.0f ? o->momentum : 0.99f, eps = o && o->eps != 0.0f ? o->eps : 1e-3f;
    if (!(mom >= 0.0f && mom < 1.0f) || !(eps > 0.0f))
        return dl__error("dl_op_batch_norm: momentum %g must be in [0, 1) and eps %g positive", (double)mom, (double)eps);
    if (moving_mean < 0 && moving_mean != DL_NONE) return moving_mean;
    if (moving_var < 0 && moving_var != DL_NONE) return moving_var;
    memset(ip, 0, sizeof ip);
    ip[0] = moving_mean; ip[1] = moving_var;
    ins[0] = x; ins[1] = gamma; ins[2] = beta;
    id = dl__push_ip(g, DL__OP_BATCH_NORM, ins, 3, eps, NULL, NULL, ip);
    if (id >= 0) g->nodes[id].fparam2 = mom;
    return id;
}

DLDEF int dl_op_flatten(dl_graph *g, int x)
{
    dl_shape s;
    size_t per;
    if (!g) return dl__error("dl_op_flatten: NULL graph");
    if (x < 0) return x;
    if (!dl__valid(g, x) || !g->nodes[x].batched) return dl__error("dl_op_flatten: node %d is not a batched node", x);
    per = dl__numel(&g->nodes[x]) / (size_t)g->nodes[x].shape.d[0];
    if (per > (size_t)INT_MAX) return dl__error("dl_op_flatten: %zu values per sample do not fit in one dimension", per);
    s = dl_shape_make((int)per, 0, 0, 0);
    return dl_op_reshape(g, x, s);
}

/* ---- 3. Planner: one arena for everything a step touches --------------------------- */

static size_t dl__round16(size_t n) { return (n + 15) & ~(size_t)15; }   /* 64-byte slots */

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

#ifndef DLCORE_MAX_ARENA
#define DLCORE_MAX_ARENA ((size_t)1 << 30 << (sizeof(size_t) > 4 ? 2 : 0))
#endif

static int dl__arena_error(int max_batch, double bytes, const char *more)
{
    return dl__error("dl_graph_plan: batch %d needs a %s%.0f-byte arena, over the DLCORE_MAX_ARENA limit of %.0f "
                     "bytes (use a smaller batch, or build with a larger DLCORE_MAX_ARENA)",
                     max_batch, more, bytes, (double)DLCORE_MAX_ARENA);
}

/* The value buffers alone, summed in double: a lower bound on the arena that no
   claimed shape can make wrap around. Under the limit, the exact size_t sums
   below (values, scratch no larger than a value, gradients) cannot wrap either. */
static int dl__plan_fits(const dl_graph *g, int max_batch)
{
    double floats = 0.0;
    int i;
    for (i = 0; i < g->n; i++) {
        const dl__node *n = &g->nodes[i];
        if (n->is_param || dl__ops[n->op].view) continue;
        floats += n->batched ? (double)dl__numel(n) / (double)n->shape.d[0] * (double)max_batch : (double)dl__numel(n);
    }
    if (floats * sizeof(float) > (double)DLCORE_MAX_ARENA) return dl__arena_error(max_batch, floats * sizeof(float), "more than ");
    return DL_OK;
}

DLDEF int dl_graph_plan(dl_graph *g, int max_batch)
{
    size_t total = 0, grads_at, grad_floats;
    int i, j, count = 0, *order, old_batch;
    float *arena;
    if (!g || g->n == 0) return dl__error("dl_graph_plan: empty graph");
    if (max_batch < 1) return dl__error("dl_graph_plan: max_batch %d must be >= 1", max_batch);
    if (dl__plan_fits(g, max_batch) != DL_OK) return DL_ERR;
    /* On failure below, the old plan stays in force: max_batch is put back. */
    old_batch = g->max_batch;
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
        if (!dl__owns_val(n) && !dl__ops[n->op].view) total += dl__round16(dl__numel_at(n, max_batch));
        total += dl__round16(n->aux_floats);
    }
    order = (int *)DLCORE_MALLOC((size_t)g->n * sizeof(int));
    if (!order) { g->max_batch = old_batch; return dl__error("dl_graph_plan: out of memory"); }
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
    if (total > DLCORE_MAX_ARENA / sizeof(float)) {
        g->max_batch = old_batch;
        return dl__arena_error(max_batch, (double)total * sizeof(float), "");
    }
    /* Parameters keep grad, m and v in one block of their own, so re-planning for a
       larger batch never loses optimizer state. */
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (!p->grad) {
            size_t len = dl__numel(p);
            p->grad = (float *)DLCORE_MALLOC(3 * len * sizeof(float));
            if (!p->grad) { g->max_batch = old_batch; return dl__error("dl_graph_plan: out of memory for '%s'", p->name); }
            memset(p->grad, 0, 3 * len * sizeof(float));
            p->m = p->grad + len;
            p->v = p->grad + 2 * len;
        }
    }
    arena = (float *)DLCORE_MALLOC((total ? total : 1) * sizeof(float));
    if (!arena) {
        g->max_batch = old_batch;
        return dl__error("dl_graph_plan: out of memory for a %zu-byte arena", total * sizeof(float));
    }
    memset(arena, 0, total * sizeof(float));
    DLCORE_FREE(g->arena);
    g->arena = arena;
    g->arena_floats = total;
    total = 0;
    for (i = 0; i < g->n; i++) {
        dl__node *n = &g->nodes[i];
        if (dl__owns_val(n)) continue;
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
    g->rows_first = g->rows_total = g->rows_empty = 0;
    for (i = 0; i < g->n; i++)
        if (g->nodes[i].batched) g->nodes[i].shape.d[0] = batch;
    return DL_OK;
}

DLDEF int dl_graph_set_rows(dl_graph *g, int first, int total)
{
    if (!g || !g->planned) return dl__error("dl_graph_set_rows: plan the graph first");
    if (total < 1 || first < 0 || first > total - g->batch)
        return dl__error("dl_graph_set_rows: rows [%d, %d) are not inside a global batch of %d", first, first + g->batch, total);
    g->rows_first = first;
    g->rows_total = total;
    g->rows_empty = 0;
    return DL_OK;
}

static int dl__comm_check(const dl_comm *c, const char *who)
{
    if (!c) return DL_OK;
    if (c->size < 1 || c->rank < 0 || c->rank >= c->size)
        return dl__error("%s: comm rank %d of size %d is not a rank in [0, size)", who, c->rank, c->size);
    if (!c->allreduce || !c->bcast) return dl__error("%s: comm needs allreduce and bcast", who);
    if (!c->iallreduce != !c->wait) return dl__error("%s: comm has one of iallreduce and wait without the other", who);
    if (!c->reduce_scatter != !c->allgather)
        return dl__error("%s: comm has one of reduce_scatter and allgather without the other", who);
    return DL_OK;
}

DLDEF void dl_comm_shard(size_t count, int rank, int size, size_t *lo, size_t *hi)
{
    size_t blocks = count / 16;
    if (size < 1 || rank < 0 || rank >= size) { *lo = *hi = 0; return; }
    *lo = blocks * (size_t)rank / (size_t)size * 16;
    *hi = rank + 1 == size ? count : blocks * (size_t)(rank + 1) / (size_t)size * 16;
}

/* Gradients under this many elements are summed together, in one call (the bucket). */
static size_t dl__comm_small(const dl_comm *c) { return c->shard_min ? c->shard_min : 4096; }

/* The bucket: dl_fit's two figures and every small gradient, which dl_graph_step sums
   in one allreduce at the end of backward. Made before training, where a rank that
   cannot make it can still tell the others. */
static int dl__comm_bucket_reserve(dl_graph *g, const dl_comm *c, const char *who)
{
    size_t need = 2;
    int i;
    for (i = 0; c && i < g->n_params; i++) {
        size_t len = dl__numel(&g->nodes[g->params[i]]);
        if (len < dl__comm_small(c)) need += len;
    }
    if (need <= g->bucket_cap) return DL_OK;
    DLCORE_FREE(g->bucket);
    g->bucket_cap = 0;
    g->bucket = (float *)DLCORE_MALLOC(need * sizeof(float));
    if (!g->bucket) return dl__error("%s: out of memory for the gradient bucket (%zu floats)", who, need);
    g->bucket_cap = need;
    return DL_OK;
}

/* After sharded updates each rank holds whole Adam/momentum state only in its own
   shards; this makes it whole everywhere (collective), before the state is handed
   on: rank 0's copy seeds another comm, and a one-process run needs all of it. */
static int dl__comm_gather_state(dl_graph *g, const dl_comm *c, const char *who)
{
    int i, rc = DL_OK;
    if (!g->state_shard || !c) return DL_OK;
    for (i = 0; i < g->n_params && rc == DL_OK; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        size_t len = dl__numel(p);
        if (!p->state_shard) continue;
        rc = c->allgather(c->user, p->m, len);
        if (rc == DL_OK) rc = c->allgather(c->user, p->v, len);
        p->state_shard = 0;
    }
    g->state_shard = 0;
    return rc == DL_OK ? DL_OK
         : dl__error("%s: the comm's allgather of the optimizer state failed on rank %d of %d", who, c->rank, c->size);
}

/* Rank 0's parameters, optimizer state and random streams on every rank: the
   replicas start equal and, applying the same updates, stay equal. */
static int dl__comm_bcast_graph(dl_graph *g, const dl_comm *c, const char *who)
{
    uint64_t st[3];
    int i, rc = DL_OK;
    st[0] = g->dropout_key; st[1] = g->dropout_ctr; st[2] = (uint64_t)g->opt_t;
    rc |= c->bcast(c->user, st, sizeof st);
    g->dropout_key = st[0]; g->dropout_ctr = st[1]; g->opt_t = (long)st[2];
    for (i = 0; i < g->n_params && rc == DL_OK; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        size_t len = dl__numel(p);
        rc |= c->bcast(c->user, p->val, len * sizeof(float));
        if (p->m) rc |= c->bcast(c->user, p->m, 2 * len * sizeof(float));   /* m and v, adjacent */
    }
    return rc == DL_OK ? DL_OK : dl__error("%s: the comm's bcast of the parameters failed on rank %d of %d", who, c->rank, c->size);
}

DLDEF int dl_graph_set_comm(dl_graph *g, const dl_comm *comm)
{
    if (!g) return dl__error("dl_graph_set_comm: NULL graph");
    if (dl__comm_check(comm, "dl_graph_set_comm") != DL_OK) return DL_ERR;
    if (dl__comm_gather_state(g, g->comm, "dl_graph_set_comm") != DL_OK) return DL_ERR;
    g->comm = comm;
    if (!comm) return DL_OK;
    {   /* the broadcast is collective: a rank without its bucket still joins it */
        int rc = dl__comm_bucket_reserve(g, comm, "dl_graph_set_comm");
        if (dl__comm_bcast_graph(g, comm, "dl_graph_set_comm") != DL_OK) return DL_ERR;
        if (rc != DL_OK) g->comm = NULL;
        return rc;
    }
}

DLDEF void dl_graph_set_training(dl_graph *g, int training) { if (g) g->training = training != 0; }

/* ---- 3. Running: forward, backward, gradient check ------------------------------- */

/* Seconds from a monotonic clock, for dl_fit's epoch times and its profile. */
static double dl__now(void)
{
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif defined(_WIN32)
    /* clock() there is coarse (1 ms at best); the performance counter is monotonic and finer. */
    LARGE_INTEGER t, f;
    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (double)t.QuadPart / (double)f.QuadPart;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

/* Nodes 0..upto; with wanted_only, just those `upto` depends on. Training and
   evaluation need the loss alone, not the probabilities a model's output node
   computes beside it. Inputs come before their users, so one pass down marks them. */
static int dl__forward(dl_graph *g, int upto, int wanted_only)
{
    int i, j;
    if (!g || !g->planned) return dl__error("dl_forward: plan the graph first (dl_graph_plan)");
    if (!dl__valid(g, upto)) return dl__error("dl_forward: no node %d", upto);
    for (i = 0; i < upto; i++) g->nodes[i].wanted = !wanted_only;
    g->nodes[upto].wanted = 1;
    for (i = upto; i >= 0; i--) {
        const dl__node *n = &g->nodes[i];
        if (n->wanted)
            for (j = 0; j < n->n_in; j++)
                if (n->in[j] != DL_NONE) g->nodes[n->in[j]].wanted = 1;
    }
    for (i = 0; i <= upto; i++) {
        dl__node *n = &g->nodes[i];
        if (n->wanted && dl__ops[n->op].forward) {
            double t0 = g->profile ? dl__now() : 0.0;
            if (dl__ops[n->op].forward(g, n) != DL_OK) return DL_ERR;
            if (g->profile) n->t_fwd += dl__now() - t0;
        }
    }
    return DL_OK;
}

DLDEF int dl_forward(dl_graph *g, int upto) { return dl__forward(g, upto, 0); }

/* Claims a gradient buffer for this pass; its first writer overwrites it
   (dl__grad_beta / dl__grad_acc), so nothing is zeroed twice. */
static void dl__touch_grad(dl_graph *g, dl__node *n)
{
    if (n->touched == g->pass) return;
    n->touched = g->pass;
    n->fresh = 1;
}

static void dl__comm_ready(dl_graph *g, int node);   /* with dl_graph_step, below */

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
    /* A rank's share of a split global batch (1 when not split): the gradients summed
       over ranks are then the global batch's. */
    l->grad[0] = g->rows_empty ? 0.0f : (float)g->batch / (float)dl__rows_total(g);
    l->fresh = 0;
    for (i = loss; i >= 0; i--) {
        dl__node *n = &g->nodes[i];
        if (!n->needs_grad || n->touched != g->pass || !dl__ops[n->op].backward) continue;
        for (j = 0; j < n->n_in; j++)
            if (n->in[j] != DL_NONE && g->nodes[n->in[j]].needs_grad) dl__touch_grad(g, &g->nodes[n->in[j]]);
        if (g->profile) {
            double t0 = dl__now();
            dl__ops[n->op].backward(g, n);
            n->t_bwd += dl__now() - t0;
        } else {
            dl__ops[n->op].backward(g, n);
        }
        if (g->comm_live) dl__comm_ready(g, i);
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
DLDEF int dl_graph_state_count(const dl_graph *g) { return g ? g->n_states : 0; }
DLDEF int dl_graph_state(const dl_graph *g, int i) { return g && i >= 0 && i < g->n_states ? g->states[i] : -1; }
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

/* What one optimizer step applies to every parameter, worked out once per step. */
typedef struct dl__step {
    const dl_optimizer *o;
    float lr, scale, b1, b2, eps, c1, c2, decay;
    long  t;          /* the step's number: Adam's bias correction */
} dl__step;

static int dl__step_begin(dl_graph *g, const dl_optimizer *o, int epoch, dl__step *st, const char *who)
{
    if (!g || !g->planned) return dl__error("%s: plan the graph first", who);
    if (!o || o->kind < DL_SGD || o->kind > DL_ADAMW) return dl__error("%s: unknown optimizer kind", who);
    st->o = o;
    st->lr = dl_lr_at(o, epoch);
    if (!(st->lr >= 0.0f) || !isfinite(st->lr))
        return dl__error("%s: learning rate %g is not a finite value >= 0", who, (double)st->lr);
    st->scale = 1.0f;
    st->b1 = o->beta1 > 0.0f ? o->beta1 : 0.9f;
    st->b2 = o->beta2 > 0.0f ? o->beta2 : 0.999f;
    st->eps = o->eps > 0.0f ? o->eps : 1e-7f;
    st->t = g->opt_t + 1;
    st->c1 = st->c2 = 1.0f;
    if (o->kind != DL_SGD) {
        st->c1 = 1.0f / (1.0f - powf(st->b1, (float)st->t));
        st->c2 = 1.0f / (1.0f - powf(st->b2, (float)st->t));
    }
    st->decay = o->kind == DL_ADAMW ? 1.0f - st->lr * o->weight_decay : 1.0f;
    return DL_OK;
}

/* Global-norm clipping: the factor that brings all gradients' L2 norm to clip_norm. */
static float dl__clip_scale(dl_graph *g, const dl_optimizer *o)
{
    double sq = 0.0;
    int i;
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        size_t k, len = dl__numel(p);
        for (k = 0; k < len; k++) { float gr = dl__reg_grad(p, k, o, p->touched == g->pass); sq += (double)gr * gr; }
    }
    return sqrt(sq) > o->clip_norm ? (float)(o->clip_norm / sqrt(sq)) : 1.0f;
}

static dl__adam_k dl__adam_consts(const dl__step *st)
{
    dl__adam_k ak;
    ak.b1 = st->b1; ak.b2 = st->b2; ak.eps = st->eps; ak.c1 = st->c1; ak.c2 = st->c2;
    ak.lr = st->lr; ak.decay = st->decay; ak.scale = st->scale;
    return ak;
}

/* Elements [k0, k1) of parameter p. */
static void dl__update_param(dl_graph *g, dl__node *p, const dl__step *st, size_t k0, size_t k1)
{
    const dl_optimizer *o = st->o;
    size_t k;
    int reached = p->touched == g->pass;
    float *w = p->val, *m = p->m, *v = p->v, lr = st->lr, scale = st->scale;
    if (o->kind == DL_SGD) {
        for (k = k0; k < k1; k++) {
            float gr = dl__reg_grad(p, k, o, reached) * scale, step = gr;
            if (o->momentum > 0.0f) {
                m[k] = o->momentum * m[k] + gr;
                step = o->nesterov ? gr + o->momentum * m[k] : m[k];
            }
            w[k] -= lr * step;
        }
    } else if (reached && !(p->regularize && (o->l1 != 0.0f || o->l2 != 0.0f))) {
        dl__adam_k ak = dl__adam_consts(st);
        dl__adam(w + k0, m + k0, v + k0, p->grad + k0, k1 - k0, &ak);
    } else {
        for (k = k0; k < k1; k++) {
            float gr = dl__reg_grad(p, k, o, reached) * scale;
            m[k] = st->b1 * m[k] + (1.0f - st->b1) * gr;
            v[k] = st->b2 * v[k] + (1.0f - st->b2) * gr * gr;
            w[k] = w[k] * st->decay - lr * (m[k] * st->c1) / (sqrtf(v[k] * st->c2) + st->eps);
        }
    }
}

DLDEF int dl_graph_update(dl_graph *g, const dl_optimizer *o, int epoch)
{
    dl__step st;
    int i;
    if (dl__step_begin(g, o, epoch, &st, "dl_graph_update") != DL_OK) return DL_ERR;
    if (o->clip_norm > 0.0f) st.scale = dl__clip_scale(g, o);
    for (i = 0; i < g->n_params; i++) dl__update_param(g, &g->nodes[g->params[i]], &st, 0, dl__numel(&g->nodes[g->params[i]]));
    g->opt_t = st.t;
    return DL_OK;
}

/* ---- 3. Fused backward + update ----------------------------------------------------
   At batch 32 a weight's Adam update streams w, m, v and the gradient through memory:
   for the MNIST MLP's 100k weights that is 2.8 MB per step, more than L2, and it cost
   as much as the weight-gradient GEMM itself. dl_graph_step lets that GEMM hand each
   finished band of dW (a few rows, still in L1) straight to Adam, so the gradient is
   never stored, and w, m, v are streamed while the GEMM computes. A weight qualifies
   when one matmul/dense is its only user (so its gradient is complete in one GEMM),
   the optimizer is Adam/AdamW, and nothing needs all gradients first (clip_norm) or
   the penalty term (L1/L2 on that weight). Others are updated after the pass, as
   dl_graph_update does. Each element goes through the same arithmetic either way. */
typedef struct { float *w, *m, *v; ptrdiff_t ld; dl__adam_k k; } dl__adam_epi_ctx;

static void dl__adam_epi(void *ctx, const float *band, ptrdiff_t ldband, int row, int col, int rows, int cols)
{
    const dl__adam_epi_ctx *e = (const dl__adam_epi_ctx *)ctx;
    int r;
    if (cols == e->ld && ldband == e->ld) { /* whole rows: one contiguous run */
        size_t off = (size_t)row * (size_t)e->ld;
        dl__adam(e->w + off, e->m + off, e->v + off, band, (size_t)rows * (size_t)cols, &e->k);
        return;
    }
    for (r = 0; r < rows; r++) {
        size_t off = (size_t)(row + r) * (size_t)e->ld + (size_t)col;
        dl__adam(e->w + off, e->m + off, e->v + off, band + (ptrdiff_t)r * ldband, (size_t)cols, &e->k);
    }
}

/* dW = x^T dy (x: m x k, dy: m x nn) consumed by the step's Adam update of w. */
static void dl__fused_update(dl_graph *g, dl__node *w, const float *x, const float *dy, int m, int k, int nn)
{
    dl__adam_epi_ctx e;
    e.w = w->val; e.m = w->m; e.v = w->v; e.ld = nn;
    e.k = dl__adam_consts(g->fuse);
    dl__sgemm_epi(1, 0, k, nn, m, 1.0f, x, k, dy, nn, w->grad, dl__adam_epi, &e);
    w->fresh = 0;            /* nothing to zero: the gradient was consumed, not stored */
    w->fused_pass = g->pass;
}

/* Data parallelism: a parameter's gradient is complete once its lowest-numbered
   user's backward has run (backward walks the nodes downwards); its sum over the
   ranks starts then, so with a non-blocking hook it travels while the layers below
   compute theirs, as DDP's buckets do. Every rank runs the same graph, so all start
   the same reductions in the same order. */
static void dl__comm_start(dl_graph *g, dl__node *p)
{
    const dl_comm *c = g->comm;
    size_t len = dl__numel(p);
    int rc;
    dl__grad_acc(p);   /* a gradient no op wrote this pass is zero, not stale */
    p->comm_req = NULL;
    p->comm_shard = g->shard_ok && len >= dl__comm_small(c);
    /* a small gradient waits for the bucket: one call for all of them, not one each */
    if (!c->iallreduce && len < dl__comm_small(c)) { p->comm_state = 3; return; }
    if (p->comm_shard) { rc = c->reduce_scatter(c->user, p->grad, len); p->comm_state = 2; }
    else if (c->iallreduce) { rc = c->iallreduce(c->user, p->grad, len, DL_COMM_F32, &p->comm_req); p->comm_state = 1; }
    else { rc = c->allreduce(c->user, p->grad, len, DL_COMM_F32); p->comm_state = 2; }
    if (rc != DL_OK && !g->comm_failed) {
        g->comm_failed = 1;
        dl__error("dl_graph_step: the comm's %s of '%s' (%zu floats) failed on rank %d of %d",
                  p->comm_shard ? "reduce_scatter" : c->iallreduce ? "iallreduce" : "allreduce", p->name, len, c->rank, c->size);
    }
    if (rc != DL_OK) p->comm_state = 2;
}

static void dl__comm_ready(dl_graph *g, int node)
{
    int i;
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->ready_at == node && p->touched == g->pass && p->comm_state == 0) dl__comm_start(g, p);
    }
}

/* Before backward: where each gradient completes. After it: the stragglers (a
   parameter whose lowest user was not reached) started, and all waited for. */
static void dl__comm_prepare(dl_graph *g)
{
    int i, j;
    for (i = 0; i < g->n_params; i++) {
        g->nodes[g->params[i]].ready_at = -1;
        g->nodes[g->params[i]].comm_state = 0;
        g->nodes[g->params[i]].comm_shard = 0;
    }
    for (i = g->n - 1; i >= 0; i--)
        for (j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] != DL_NONE && g->nodes[g->nodes[i].in[j]].is_param) g->nodes[g->nodes[i].in[j]].ready_at = i;
    g->comm_failed = 0;
    g->comm_live = 1;
}

/* The bucket's one allreduce: dl_fit's figures first, then the small gradients in
   parameter order (the same on every rank). */
static void dl__comm_bucket_sum(dl_graph *g)
{
    const dl_comm *c = g->comm;
    size_t used = (size_t)g->n_figures, len;
    int i, n = 0;
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->comm_state == 3) { used += dl__numel(p); n++; }
    }
    if (used == 0) return;
    /* made by dl_fit or dl_graph_set_comm; grown here only if shard_min changed since */
    if (used > g->bucket_cap && dl__comm_bucket_reserve(g, c, "dl_graph_step") != DL_OK) { g->comm_failed = 1; return; }
    memcpy(g->bucket, g->figures, (size_t)g->n_figures * sizeof(float));
    for (i = 0, used = (size_t)g->n_figures; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->comm_state != 3) continue;
        len = dl__numel(p);
        memcpy(g->bucket + used, p->grad, len * sizeof(float));
        used += len;
    }
    if (c->allreduce(c->user, g->bucket, used, DL_COMM_F32) != DL_OK) {
        if (!g->comm_failed)
            dl__error("dl_graph_step: the comm's allreduce of %d small gradients and %d figures (%zu floats) failed on rank %d of %d",
                      n, g->n_figures, used, c->rank, c->size);
        g->comm_failed = 1;
        return;
    }
    memcpy(g->figures, g->bucket, (size_t)g->n_figures * sizeof(float));
    for (i = 0, used = (size_t)g->n_figures; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->comm_state != 3) continue;
        len = dl__numel(p);
        memcpy(p->grad, g->bucket + used, len * sizeof(float));
        used += len;
        p->comm_state = 2;
    }
}

static int dl__comm_finish(dl_graph *g)
{
    const dl_comm *c = g->comm;
    int i;
    g->comm_live = 0;
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->touched == g->pass && p->comm_state == 0) dl__comm_start(g, p);
    }
    dl__comm_bucket_sum(g);
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        if (p->comm_state != 1) continue;
        p->comm_state = 2;
        if (c->wait(c->user, p->comm_req) != DL_OK && !g->comm_failed) {
            g->comm_failed = 1;
            dl__error("dl_graph_step: the comm's wait for '%s' failed on rank %d of %d", p->name, c->rank, c->size);
        }
    }
    return g->comm_failed ? DL_ERR : DL_OK;
}

DLDEF int dl_graph_step(dl_graph *g, int loss, const dl_optimizer *o, int epoch)
{
    dl__step st;
    int i, j, fuse;
    g->figures_bad = 0;
    if (dl__step_begin(g, o, epoch, &st, "dl_graph_step") != DL_OK) return DL_ERR;
    /* with a comm a gradient must be summed over the ranks before its update */
    fuse = o->kind != DL_SGD && !(o->clip_norm > 0.0f) && !g->comm;
    /* fusable: 1 = no user seen yet, 2 = one user, a matmul/dense reading it as w, 0 = no */
    for (i = 0; i < g->n_params; i++) g->nodes[g->params[i]].fusable = fuse;
    for (i = 0; fuse && i < g->n; i++) {
        dl__node *n = &g->nodes[i];
        for (j = 0; j < n->n_in; j++) {
            dl__node *p = n->in[j] == DL_NONE ? NULL : &g->nodes[n->in[j]];
            if (p && p->is_param)
                p->fusable = p->fusable == 1 && j == 1 && (n->op == DL__OP_MATMUL || n->op == DL__OP_DENSE) ? 2 : 0;
        }
    }
    for (i = 0; i < g->n_params; i++) {
        dl__node *p = &g->nodes[g->params[i]];
        /* a gradient asked for with dl_require_grad is stored, so that weight is not fused */
        p->fusable = p->fusable == 2 && !p->keep_grad && !(p->regularize && (o->l1 != 0.0f || o->l2 != 0.0f));
    }
    g->fuse = fuse ? &st : NULL;
    g->shard_ok = g->comm && g->comm->size > 1 && g->comm->reduce_scatter && !(o->clip_norm > 0.0f);
    if (g->comm) dl__comm_prepare(g);
    i = dl_backward(g, loss);
    g->fuse = NULL;
    if (g->comm) {   /* wait even when backward failed: no reduction may stay in flight */
        double t0 = g->profile ? dl__now() : 0.0;
        int rc = dl__comm_finish(g);
        if (g->profile) g->t_comm += dl__now() - t0;
        if (i == DL_OK && rc != DL_OK) return DL_ERR;
    }
    if (i != DL_OK) return DL_ERR;
    /* dl_fit's summed loss: where it is not finite no rank updates, and dl_fit stops */
    g->figures_bad = g->n_figures > 0 && !isfinite(g->figures[0]);
    if (g->figures_bad) return DL_ERR;
    {
        double t0 = g->profile ? dl__now() : 0.0, t_shared = 0.0;
        const dl_comm *c = g->comm;
        if (o->clip_norm > 0.0f) st.scale = dl__clip_scale(g, o);
        for (i = 0; i < g->n_params; i++) {
            dl__node *p = &g->nodes[g->params[i]];
            size_t lo, hi, len = dl__numel(p);
            if (p->fused_pass == g->pass) continue;
            if (!c || !p->comm_shard) { dl__update_param(g, p, &st, 0, len); continue; }
            p->comm_shard = 0;   /* this step's; a later step without the comm updates whole */
            /* this rank's shard of the sum is all it has: it updates that shard, and
               every rank's updated shard then goes to every rank */
            dl_comm_shard(len, c->rank, c->size, &lo, &hi);
            dl__update_param(g, p, &st, lo, hi);
            p->state_shard = g->state_shard = 1;
            {
                double t1 = g->profile ? dl__now() : 0.0;
                if (c->allgather(c->user, p->val, len) != DL_OK) {   /* the rest still join in */
                    if (!g->comm_failed)
                        dl__error("dl_graph_step: the comm's allgather of '%s' (%zu floats) failed on rank %d of %d",
                                  p->name, len, c->rank, c->size);
                    g->comm_failed = 1;
                }
                if (g->profile) t_shared += dl__now() - t1;
            }
        }
        if (g->profile) { g->t_update += dl__now() - t0 - t_shared; g->t_comm += t_shared; }
        if (c && g->comm_failed) return DL_ERR;
    }
    g->opt_t = st.t;
    return DL_OK;
}

/* ==== 4. IO ======================================================================== */
/* dlcore section 4: IO - CRC-32, inflate/gunzip, IDX files, data sets. libc only. */
#include <errno.h>
#include <limits.h>

#ifndef DLCORE_GUNZIP_MAX
#define DLCORE_GUNZIP_MAX ((size_t)1 << 30)
#endif

DLDEF void dl_free(void *p) { DLCORE_FREE(p); }

/* ---- CRC-32 (reflected polynomial 0xEDB88320), table generated once offline ---- */

static const uint32_t dl__crc32_table[256] = {
    0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu,
    0xE963A535u, 0x9E6495A3u, 0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u,
    0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u, 0x1DB71064u, 0x6AB020F2u,
    0xF3B97148u, 0x84BE41DEu, 0x1ADAD47Du, 0x6DDDE4EBu, 0xF4D4B551u, 0x83D385C7u,
    0x136C9856u, 0x646BA8C0u, 0xFD62F97Au, 0x8A65C9ECu, 0x14015C4Fu, 0x63066CD9u,
    0xFA0F3D63u, 0x8D080DF5u, 0x3B6E20C8u, 0x4C69105Eu, 0xD56041E4u, 0xA2677172u,
    0x3C03E4D1u, 0x4B04D447u, 0xD20D85FDu, 0xA50AB56Bu, 0x35B5A8FAu, 0x42B2986Cu,
    0xDBBBC9D6u, 0xACBCF940u, 0x32D86CE3u, 0x45DF5C75u, 0xDCD60DCFu, 0xABD13D59u,
    0x26D930ACu, 0x51DE003Au, 0xC8D75180u, 0xBFD06116u, 0x21B4F4B5u, 0x56B3C423u,
    0xCFBA9599u, 0xB8BDA50Fu, 0x2802B89Eu, 0x5F058808u, 0xC60CD9B2u, 0xB10BE924u,
    0x2F6F7C87u, 0x58684C11u, 0xC1611DABu, 0xB6662D3Du, 0x76DC4190u, 0x01DB7106u,
    0x98D220BCu, 0xEFD5102Au, 0x71B18589u, 0x06B6B51Fu, 0x9FBFE4A5u, 0xE8B8D433u,
    0x7807C9A2u, 0x0F00F934u, 0x9609A88Eu, 0xE10E9818u, 0x7F6A0DBBu, 0x086D3D2Du,
    0x91646C97u, 0xE6635C01u, 0x6B6B51F4u, 0x1C6C6162u, 0x856530D8u, 0xF262004Eu,
    0x6C0695EDu, 0x1B01A57Bu, 0x8208F4C1u, 0xF50FC457u, 0x65B0D9C6u, 0x12B7E950u,
    0x8BBEB8EAu, 0xFCB9887Cu, 0x62DD1DDFu, 0x15DA2D49u, 0x8CD37CF3u, 0xFBD44C65u,
    0x4DB26158u, 0x3AB551CEu, 0xA3BC0074u, 0xD4BB30E2u, 0x4ADFA541u, 0x3DD895D7u,
    0xA4D1C46Du, 0xD3D6F4FBu, 0x4369E96Au, 0x346ED9FCu, 0xAD678846u, 0xDA60B8D0u,
    0x44042D73u, 0x33031DE5u, 0xAA0A4C5Fu, 0xDD0D7CC9u, 0x5005713Cu, 0x270241AAu,
    0xBE0B1010u, 0xC90C2086u, 0x5768B525u, 0x206F85B3u, 0xB966D409u, 0xCE61E49Fu,
    0x5EDEF90Eu, 0x29D9C998u, 0xB0D09822u, 0xC7D7A8B4u, 0x59B33D17u, 0x2EB40D81u,
    0xB7BD5C3Bu, 0xC0BA6CADu, 0xEDB88320u, 0x9ABFB3B6u, 0x03B6E20Cu, 0x74B1D29Au,
    0xEAD54739u, 0x9DD277AFu, 0x04DB2615u, 0x73DC1683u, 0xE3630B12u, 0x94643B84u,
    0x0D6D6A3Eu, 0x7A6A5AA8u, 0xE40ECF0Bu, 0x9309FF9Du, 0x0A00AE27u, 0x7D079EB1u,
    0xF00F9344u, 0x8708A3D2u, 0x1E01F268u, 0x6906C2FEu, 0xF762575Du, 0x806567CBu,
    0x196C3671u, 0x6E6B06E7u, 0xFED41B76u, 0x89D32BE0u, 0x10DA7A5Au, 0x67DD4ACCu,
    0xF9B9DF6Fu, 0x8EBEEFF9u, 0x17B7BE43u, 0x60B08ED5u, 0xD6D6A3E8u, 0xA1D1937Eu,
    0x38D8C2C4u, 0x4FDFF252u, 0xD1BB67F1u, 0xA6BC5767u, 0x3FB506DDu, 0x48B2364Bu,
    0xD80D2BDAu, 0xAF0A1B4Cu, 0x36034AF6u, 0x41047A60u, 0xDF60EFC3u, 0xA867DF55u,
    0x316E8EEFu, 0x4669BE79u, 0xCB61B38Cu, 0xBC66831Au, 0x256FD2A0u, 0x5268E236u,
    0xCC0C7795u, 0xBB0B4703u, 0x220216B9u, 0x5505262Fu, 0xC5BA3BBEu, 0xB2BD0B28u,
    0x2BB45A92u, 0x5CB36A04u, 0xC2D7FFA7u, 0xB5D0CF31u, 0x2CD99E8Bu, 0x5BDEAE1Du,
    0x9B64C2B0u, 0xEC63F226u, 0x756AA39Cu, 0x026D930Au, 0x9C0906A9u, 0xEB0E363Fu,
    0x72076785u, 0x05005713u, 0x95BF4A82u, 0xE2B87A14u, 0x7BB12BAEu, 0x0CB61B38u,
    0x92D28E9Bu, 0xE5D5BE0Du, 0x7CDCEFB7u, 0x0BDBDF21u, 0x86D3D2D4u, 0xF1D4E242u,
    0x68DDB3F8u, 0x1FDA836Eu, 0x81BE16CDu, 0xF6B9265Bu, 0x6FB077E1u, 0x18B74777u,
    0x88085AE6u, 0xFF0F6A70u, 0x66063BCAu, 0x11010B5Cu, 0x8F659EFFu, 0xF862AE69u,
    0x616BFFD3u, 0x166CCF45u, 0xA00AE278u, 0xD70DD2EEu, 0x4E048354u, 0x3903B3C2u,
    0xA7672661u, 0xD06016F7u, 0x4969474Du, 0x3E6E77DBu, 0xAED16A4Au, 0xD9D65ADCu,
    0x40DF0B66u, 0x37D83BF0u, 0xA9BCAE53u, 0xDEBB9EC5u, 0x47B2CF7Fu, 0x30B5FFE9u,
    0xBDBDF21Cu, 0xCABAC28Au, 0x53B39330u, 0x24B4A3A6u, 0xBAD03605u, 0xCDD70693u,
    0x54DE5729u, 0x23D967BFu, 0xB3667A2Eu, 0xC4614AB8u, 0x5D681B02u, 0x2A6F2B94u,
    0xB40BBE37u, 0xC30C8EA1u, 0x5A05DF1Bu, 0x2D02EF8Du
};

DLDEF uint32_t dl_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
    while (n--) crc = dl__crc32_table[(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

/* ---- Inflate (RFC 1951) ----------------------------------------------------------
   Bits are taken LSB-first from a 64-bit buffer. Huffman codes are decoded through
   a 2^10-entry table (most codes are short); longer codes fall back to walking the
   canonical code one bit at a time, which needs only the per-length counts. */

#define DL__HUFF_FAST 10

typedef struct dl__huff {
    uint16_t fast[1 << DL__HUFF_FAST];  /* (length << 9) | symbol; 0: use slow path */
    uint16_t count[16];                 /* number of codes of each length */
    uint16_t sym[288];                  /* symbols ordered by (length, value) */
} dl__huff;

typedef struct dl__inflater {
    const unsigned char *in;
    size_t in_len, pos, base;           /* base: offset of in[0] for messages */
    uint64_t bits;
    int nbits;
    unsigned char *out;
    size_t out_len, out_cap, out_max;
    size_t start;                       /* where this stream's output begins */
    dl__huff lit, dist;
} dl__inflater;

static const uint16_t dl__len_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258 };
static const unsigned char dl__len_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 };
static const uint16_t dl__dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 };
static const unsigned char dl__dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 };

/* Byte offset (in the caller's buffer) of the byte holding the next unread bit. */
static size_t dl__inf_offset(const dl__inflater *s)
{
    return s->base + s->pos - (size_t)(s->nbits / 8);
}

static int dl__inf_fail(const dl__inflater *s, const char *what)
{
    return dl__error("deflate: %s at byte offset %lu", what, (unsigned long)dl__inf_offset(s));
}

static void dl__inf_refill(dl__inflater *s)
{
    while (s->nbits <= 56 && s->pos < s->in_len) {
        s->bits |= (uint64_t)s->in[s->pos++] << s->nbits;
        s->nbits += 8;
    }
}

/* n <= 16. Returns the bits, or -1 (message set) if the input ends first. */
static int dl__inf_bits(dl__inflater *s, int n)
{
    int v;
    if (s->nbits < n) {
        dl__inf_refill(s);
        if (s->nbits < n) return dl__inf_fail(s, "truncated input (stream ends inside a block)");
    }
    v = (int)(s->bits & ((1u << n) - 1u));
    s->bits >>= n;
    s->nbits -= n;
    return v;
}

/* Builds the decoder for n code lengths (each 0..15). Over-subscribed sets are
   rejected; incomplete ones are accepted, their unused codes fail when met. */
static int dl__huff_build(dl__huff *h, const unsigned char *lens, int n)
{
    uint16_t offs[16], next[16];
    int i, len, left = 1, code = 0;
    memset(h->count, 0, sizeof h->count);
    for (i = 0; i < n; i++) h->count[lens[i]]++;
    h->count[0] = 0;
    for (len = 1; len < 16; len++) {
        left = (left << 1) - h->count[len];
        if (left < 0) return -1;
    }
    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (len = 1; len < 16; len++) {
        code = (code + (len > 1 ? h->count[len - 1] : 0)) << 1;
        next[len] = (uint16_t)code;
    }
    memset(h->fast, 0, sizeof h->fast);
    for (i = 0; i < n; i++) {
        int l = lens[i], c, rev = 0, b, j;
        if (!l) continue;
        h->sym[offs[l]++] = (uint16_t)i;
        c = next[l]++;
        if (l > DL__HUFF_FAST) continue;
        for (b = 0; b < l; b++) rev |= ((c >> b) & 1) << (l - 1 - b);
        for (j = rev; j < (1 << DL__HUFF_FAST); j += 1 << l)
            h->fast[j] = (uint16_t)((l << 9) | i);
    }
    return 0;
}

static int dl__huff_decode(dl__inflater *s, const dl__huff *h)
{
    int e, len, code = 0, first = 0, index = 0;
    if (s->nbits < 15) dl__inf_refill(s);
    e = h->fast[s->bits & ((1u << DL__HUFF_FAST) - 1u)];
    if (e) {
        len = e >> 9;
        if (len > s->nbits) return dl__inf_fail(s, "truncated input (stream ends inside a code)");
        s->bits >>= len;
        s->nbits -= len;
        return e & 511;
    }
    for (len = 1; len < 16; len++) {
        int cnt = h->count[len];
        if (len > s->nbits) return dl__inf_fail(s, "truncated input (stream ends inside a code)");
        code |= (int)((s->bits >> (len - 1)) & 1u);
        if (code - first < cnt) {
            s->bits >>= len;
            s->nbits -= len;
            return h->sym[index + code - first];
        }
        index += cnt;
        first = (first + cnt) << 1;
        code <<= 1;
    }
    return dl__inf_fail(s, "invalid Huffman code (unused by the block's code set)");
}

/* Makes room for n more output bytes (plus the final NUL) within out_max. */
static int dl__inf_reserve(dl__inflater *s, size_t n)
{
    size_t need, cap;
    unsigned char *p;
    if (n > s->out_max - s->out_len) {
        char what[96];
        snprintf(what, sizeof what, "output exceeds the limit of %lu bytes", (unsigned long)s->out_max);
        return dl__inf_fail(s, what);
    }
    need = s->out_len + n;
    if (need <= s->out_cap) return 0;
    cap = s->out_cap < 4096 ? 4096 : s->out_cap;
    while (cap < need) cap = cap > s->out_max / 2 ? s->out_max : cap * 2;
    p = (unsigned char *)DLCORE_REALLOC(s->out, cap + 1);
    if (!p) return dl__inf_fail(s, "out of memory growing the output");
    s->out = p;
    s->out_cap = cap;
    return 0;
}

static int dl__inf_stored(dl__inflater *s)
{
    size_t len, nlen;
    /* Back up to the byte boundary: whole bytes still buffered are unread input. */
    s->pos -= (size_t)(s->nbits / 8);
    s->bits = 0;
    s->nbits = 0;
    if (s->in_len - s->pos < 4) return dl__inf_fail(s, "truncated input (stored block header)");
    len = (size_t)s->in[s->pos] | (size_t)s->in[s->pos + 1] << 8;
    nlen = (size_t)s->in[s->pos + 2] | (size_t)s->in[s->pos + 3] << 8;
    if (len != (~nlen & 0xFFFFu)) return dl__inf_fail(s, "stored block length does not match its complement");
    s->pos += 4;
    if (s->in_len - s->pos < len) return dl__inf_fail(s, "truncated input (stored block data)");
    if (dl__inf_reserve(s, len)) return -1;
    if (len) memcpy(s->out + s->out_len, s->in + s->pos, len);
    s->out_len += len;
    s->pos += len;
    return 0;
}

static int dl__inf_codes(dl__inflater *s)
{
    for (;;) {
        int sym = dl__huff_decode(s, &s->lit), e, dsym;
        size_t len, dist, i;
        unsigned char *dst;
        if (sym < 0) return -1;
        if (sym < 256) {
            if (s->out_len == s->out_cap && dl__inf_reserve(s, 1)) return -1;
            s->out[s->out_len++] = (unsigned char)sym;
            continue;
        }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return dl__inf_fail(s, "invalid length symbol (286 or 287)");
        if ((e = dl__inf_bits(s, dl__len_extra[sym])) < 0) return -1;
        len = (size_t)dl__len_base[sym] + (size_t)e;
        if ((dsym = dl__huff_decode(s, &s->dist)) < 0) return -1;
        if (dsym >= 30) return dl__inf_fail(s, "invalid distance symbol (30 or 31)");
        if ((e = dl__inf_bits(s, dl__dist_extra[dsym])) < 0) return -1;
        dist = (size_t)dl__dist_base[dsym] + (size_t)e;
        if (dist > s->out_len - s->start) {
            char what[96];
            snprintf(what, sizeof what, "distance %lu too far back (only %lu bytes output)",
                     (unsigned long)dist, (unsigned long)(s->out_len - s->start));
            return dl__inf_fail(s, what);
        }
        if (dl__inf_reserve(s, len)) return -1;
        dst = s->out + s->out_len;
        for (i = 0; i < len; i++) dst[i] = dst[(ptrdiff_t)i - (ptrdiff_t)dist];
        s->out_len += len;
    }
}

static int dl__inf_fixed(dl__inflater *s)
{
    unsigned char lens[288];
    int i;
    for (i = 0; i < 144; i++) lens[i] = 8;
    for (; i < 256; i++) lens[i] = 9;
    for (; i < 280; i++) lens[i] = 7;
    for (; i < 288; i++) lens[i] = 8;
    dl__huff_build(&s->lit, lens, 288);
    for (i = 0; i < 32; i++) lens[i] = 5;   /* 30 and 31 exist but are invalid */
    dl__huff_build(&s->dist, lens, 32);
    return dl__inf_codes(s);
}

static int dl__inf_dynamic(dl__inflater *s)
{
    static const unsigned char order[19] = {
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15 };
    unsigned char lens[286 + 30];
    int nlen, ndist, ncode, i, n;
    if ((nlen = dl__inf_bits(s, 5)) < 0 || (ndist = dl__inf_bits(s, 5)) < 0 ||
        (ncode = dl__inf_bits(s, 4)) < 0) return -1;
    nlen += 257;
    ndist += 1;
    ncode += 4;
    if (nlen > 286) return dl__inf_fail(s, "too many literal/length codes (HLIT > 29)");
    if (ndist > 30) return dl__inf_fail(s, "too many distance codes (HDIST > 29)");
    memset(lens, 0, sizeof lens);
    for (i = 0; i < ncode; i++) {
        int v = dl__inf_bits(s, 3);
        if (v < 0) return -1;
        lens[order[i]] = (unsigned char)v;
    }
    if (dl__huff_build(&s->lit, lens, 19)) return dl__inf_fail(s, "over-subscribed code-length code");
    for (n = 0; n < nlen + ndist;) {
        int sym = dl__huff_decode(s, &s->lit), rep, val = 0;
        if (sym < 0) return -1;
        if (sym < 16) { lens[n++] = (unsigned char)sym; continue; }
        if (sym == 16) {
            if (n == 0) return dl__inf_fail(s, "code length repeat with no previous length");
            val = lens[n - 1];
            if ((rep = dl__inf_bits(s, 2)) < 0) return -1;
            rep += 3;
        } else if (sym == 17) {
            if ((rep = dl__inf_bits(s, 3)) < 0) return -1;
            rep += 3;
        } else {
            if ((rep = dl__inf_bits(s, 7)) < 0) return -1;
            rep += 11;
        }
        if (rep > nlen + ndist - n) return dl__inf_fail(s, "code length repeat runs past the end of the lengths");
        while (rep--) lens[n++] = (unsigned char)val;
    }
    if (lens[256] == 0) return dl__inf_fail(s, "no end-of-block code in the literal/length code");
    if (dl__huff_build(&s->lit, lens, nlen)) return dl__inf_fail(s, "over-subscribed literal/length code");
    if (dl__huff_build(&s->dist, lens + nlen, ndist)) return dl__inf_fail(s, "over-subscribed distance code");
    return dl__inf_codes(s);
}

/* Decodes one deflate stream from s->in[s->pos]; output appends to s->out. */
static int dl__inf_run(dl__inflater *s)
{
    int final, type, rc;
    do {
        if ((final = dl__inf_bits(s, 1)) < 0 || (type = dl__inf_bits(s, 2)) < 0) return -1;
        if (type == 0) rc = dl__inf_stored(s);
        else if (type == 1) rc = dl__inf_fixed(s);
        else if (type == 2) rc = dl__inf_dynamic(s);
        else rc = dl__inf_fail(s, "invalid block type 3");
        if (rc) return -1;
    } while (!final);
    /* Unused whole bytes in the bit buffer belong to whatever follows the stream. */
    s->pos -= (size_t)(s->nbits / 8);
    s->bits = 0;
    s->nbits = 0;
    return 0;
}

static dl__inflater *dl__inf_new(size_t out_max, size_t cap_hint)
{
    dl__inflater *s = (dl__inflater *)DLCORE_MALLOC(sizeof *s);
    if (!s) { dl__error("deflate: out of memory"); return NULL; }
    memset(s, 0, sizeof *s);
    s->out_max = out_max;
    if (cap_hint > out_max) cap_hint = out_max;
    /* Never NULL, so that even empty output is a valid pointer (for memcpy/CRC). */
    s->out = (unsigned char *)DLCORE_MALLOC(cap_hint + 1);
    if (!s->out && cap_hint) {   /* the hint was too greedy: start small */
        cap_hint = 0;
        s->out = (unsigned char *)DLCORE_MALLOC(1);
    }
    if (!s->out) {
        DLCORE_FREE(s);
        dl__error("deflate: out of memory");
        return NULL;
    }
    s->out_cap = cap_hint;
    return s;
}

/* Hands the output to the caller (NUL-terminated, never NULL) and frees s. */
static int dl__inf_finish(dl__inflater *s, int rc, unsigned char **out, size_t *out_len)
{
    if (rc == 0) {
        s->out[s->out_len] = 0;
        *out = s->out;
        *out_len = s->out_len;
    } else {
        DLCORE_FREE(s->out);
    }
    DLCORE_FREE(s);
    return rc ? DL_ERR : DL_OK;
}

DLDEF int dl_inflate(const void *in, size_t in_len, size_t *in_used,
                     unsigned char **out, size_t *out_len, size_t max_out)
{
    dl__inflater *s;
    int rc;
    *out = NULL;
    *out_len = 0;
    if (in_used) *in_used = 0;
    if (!in && in_len) return dl__error("deflate: NULL input");
    if (!(s = dl__inf_new(max_out, 0))) return DL_ERR;
    s->in = (const unsigned char *)in;
    s->in_len = in_len;
    rc = dl__inf_run(s);
    if (rc == 0 && in_used) *in_used = s->pos;
    return dl__inf_finish(s, rc, out, out_len);
}

/* ---- gzip (RFC 1952) ------------------------------------------------------------- */

static uint32_t dl__le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parses the member header at in[pos]; on success *data_at is where deflate data starts. */
static int dl__gz_header(const unsigned char *in, size_t len, size_t pos, size_t *data_at)
{
    size_t p = pos;
    int flg;
    if (len - pos < 10) return dl__error("gzip: truncated header at byte offset %lu", (unsigned long)pos);
    if (in[p] != 0x1F || in[p + 1] != 0x8B)
        return dl__error("gzip: bad magic %02X %02X at byte offset %lu (expected 1F 8B)",
                         in[p], in[p + 1], (unsigned long)pos);
    if (in[p + 2] != 8)
        return dl__error("gzip: unknown compression method %d at byte offset %lu (only 8, deflate)",
                         in[p + 2], (unsigned long)(pos + 2));
    flg = in[p + 3];
    if (flg & 0xE0)
        return dl__error("gzip: reserved flag bits set (0x%02X) at byte offset %lu", flg, (unsigned long)(pos + 3));
    p += 10;
    if (flg & 4) { /* FEXTRA */
        size_t xlen;
        if (len - p < 2) return dl__error("gzip: truncated extra field at byte offset %lu", (unsigned long)p);
        xlen = (size_t)in[p] | (size_t)in[p + 1] << 8;
        p += 2;
        if (len - p < xlen) return dl__error("gzip: truncated extra field at byte offset %lu", (unsigned long)p);
        p += xlen;
    }
    if (flg & 8) { /* FNAME */
        const unsigned char *z = (const unsigned char *)memchr(in + p, 0, len - p);
        if (!z) return dl__error("gzip: unterminated file name at byte offset %lu", (unsigned long)p);
        p = (size_t)(z - in) + 1;
    }
    if (flg & 16) { /* FCOMMENT */
        const unsigned char *z = (const unsigned char *)memchr(in + p, 0, len - p);
        if (!z) return dl__error("gzip: unterminated comment at byte offset %lu", (unsigned long)p);
        p = (size_t)(z - in) + 1;
    }
    if (flg & 2) { /* FHCRC: low 16 bits of the CRC-32 of the header so far */
        uint32_t want;
        if (len - p < 2) return dl__error("gzip: truncated header CRC at byte offset %lu", (unsigned long)p);
        want = (uint32_t)in[p] | (uint32_t)in[p + 1] << 8;
        if ((dl_crc32(0, in + pos, p - pos) & 0xFFFFu) != want)
            return dl__error("gzip: header CRC mismatch at byte offset %lu", (unsigned long)p);
        p += 2;
    }
    *data_at = p;
    return DL_OK;
}

/* Decodes the member at in[*pos] and checks its trailer; advances *pos past it. */
static int dl__gz_member(dl__inflater *s, const unsigned char *in, size_t len, size_t *pos)
{
    size_t at = 0, n;
    uint32_t crc, want_crc, want_size;
    if (dl__gz_header(in, len, *pos, &at)) return -1;
    s->in = in + at;
    s->in_len = len - at;
    s->base = at;
    s->pos = 0;
    s->bits = 0;
    s->nbits = 0;
    s->start = s->out_len;
    if (dl__inf_run(s)) return -1;
    at += s->pos;
    if (len - at < 8) return dl__error("gzip: truncated trailer at byte offset %lu", (unsigned long)at);
    n = s->out_len - s->start;
    crc = dl_crc32(0, s->out + s->start, n);
    want_crc = dl__le32(in + at);
    want_size = dl__le32(in + at + 4);
    if (crc != want_crc)
        return dl__error("gzip: CRC-32 mismatch at byte offset %lu (stored %08lX, data gives %08lX)",
                         (unsigned long)at, (unsigned long)want_crc, (unsigned long)crc);
    if ((uint32_t)n != want_size)
        return dl__error("gzip: size mismatch at byte offset %lu (ISIZE %lu, data has %lu bytes)",
                         (unsigned long)(at + 4), (unsigned long)want_size, (unsigned long)n);
    *pos = at + 8;
    return 0;
}

DLDEF int dl_gunzip_limit(const void *in, size_t in_len, unsigned char **out,
                          size_t *out_len, size_t max_out)
{
    const unsigned char *p = (const unsigned char *)in;
    dl__inflater *s;
    size_t pos = 0, hint = 0;
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    if (!in || in_len == 0) return dl__error("gzip: empty input");
    /* The last ISIZE sizes the buffer for the common single-member file; a lying
       trailer cannot make it exceed what deflate can expand to (1032:1). */
    if (in_len >= 18) {
        hint = dl__le32(p + in_len - 4);
        if (hint / 1032 > in_len) hint = 0;
    }
    if (!(s = dl__inf_new(max_out, hint))) return DL_ERR;
    do {
        if (pos > 0 && (p[pos] != 0x1F || (in_len - pos > 1 && p[pos + 1] != 0x8B))) {
            rc = dl__error("gzip: %lu bytes of trailing data after the last member at byte offset %lu",
                           (unsigned long)(in_len - pos), (unsigned long)pos);
            break;
        }
        rc = dl__gz_member(s, p, in_len, &pos);
    } while (rc == 0 && pos < in_len);
    return dl__inf_finish(s, rc, out, out_len);
}

DLDEF int dl_gunzip(const void *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    return dl_gunzip_limit(in, in_len, out, out_len, DLCORE_GUNZIP_MAX);
}

/* ---- Files ------------------------------------------------------------------------ */

DLDEF int dl_read_file(const char *path, unsigned char **data, size_t *len)
{
    FILE *f;
    unsigned char *buf = NULL, *nb;
    size_t n = 0, cap = 0, got;
    *data = NULL;
    *len = 0;
    if (!(f = fopen(path, "rb"))) return dl__error("%s: cannot open: %s", path, strerror(errno));
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : (size_t)1 << 16;
            if (!(nb = (unsigned char *)DLCORE_REALLOC(buf, cap + 1))) {
                DLCORE_FREE(buf);
                fclose(f);
                return dl__error("%s: out of memory reading the file", path);
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        DLCORE_FREE(buf);
        fclose(f);
        return dl__error("%s: read error after %lu bytes", path, (unsigned long)n);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DL_OK;
}

/* ---- IDX files ------------------------------------------------------------------- */

static int dl__idx_type_size(int type)
{
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

static uint32_t dl__be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Takes raw (from DLCORE_MALLOC) and gunzips it when it starts with the gzip
   magic; messages name path. */
static int dl__maybe_gunzip(unsigned char *raw, size_t n, const char *path, unsigned char **data, size_t *len)
{
    unsigned char *plain;
    size_t plain_len;
    if (n < 2 || raw[0] != 0x1F || raw[1] != 0x8B) {
        *data = raw;
        *len = n;
        return DL_OK;
    }
    if (dl_gunzip(raw, n, &plain, &plain_len)) {
        char msg[400];
        size_t k = strlen(dl_last_error());
        if (k >= sizeof msg) k = sizeof msg - 1;
        memcpy(msg, dl_last_error(), k);
        msg[k] = 0;
        DLCORE_FREE(raw);
        return dl__error("%s: %s", path, msg);
    }
    DLCORE_FREE(raw);
    *data = plain;
    *len = plain_len;
    return DL_OK;
}

static int dl__idx_parse(dl_idx *idx, const char *path, size_t len)
{
    const unsigned char *b = idx->buf_;
    size_t header, need, esize;
    int i;
    if (len < 4) return dl__error("%s: too short for an IDX header (%lu bytes)", path, (unsigned long)len);
    if (b[0] || b[1] || !dl__idx_type_size(b[2]))
        return dl__error("%s: bad IDX magic 0x%08lX (expected 0x000008xx .. 0x00000Exx)",
                         path, (unsigned long)dl__be32(b));
    idx->type = b[2];
    idx->ndim = b[3];
    if (idx->ndim < 1 || idx->ndim > 4)
        return dl__error("%s: unsupported IDX rank %d (magic 0x%08lX; 1 to 4 handled)",
                         path, idx->ndim, (unsigned long)dl__be32(b));
    header = 4 + 4 * (size_t)idx->ndim;
    if (len < header) return dl__error("%s: truncated IDX header (%lu bytes)", path, (unsigned long)len);
    esize = (size_t)dl__idx_type_size(idx->type);
    idx->count = 1;
    for (i = 0; i < idx->ndim; i++) {
        uint32_t d = dl__be32(b + 4 + 4 * i);
        if (d > (uint32_t)INT_MAX || (d && idx->count > ((size_t)-1 / esize) / d))
            return dl__error("%s: absurd IDX dimension %d = %lu", path, i, (unsigned long)d);
        idx->dims[i] = (int)d;
        idx->count *= d;
    }
    need = idx->count * esize;
    if (len - header < need)
        return dl__error("%s: truncated: the header declares %lu elements (%lu bytes) but only %lu bytes follow",
                         path, (unsigned long)idx->count, (unsigned long)need, (unsigned long)(len - header));
    if (len - header > need)
        return dl__error("%s: %lu unexpected bytes after the %lu declared data bytes",
                         path, (unsigned long)(len - header - need), (unsigned long)need);
    idx->data = b + header;
    return DL_OK;
}

/* An IDX file's image, raw or gzip, taken over (the fuzz targets call this directly). */
static int dl__idx_take(dl_idx *idx, unsigned char *raw, size_t n, const char *path)
{
    size_t len;
    memset(idx, 0, sizeof *idx);
    if (dl__maybe_gunzip(raw, n, path, &idx->buf_, &len)) return DL_ERR;
    if (dl__idx_parse(idx, path, len)) {
        dl_idx_free(idx);
        return DL_ERR;
    }
    return DL_OK;
}

DLDEF int dl_idx_read(dl_idx *idx, const char *path)
{
    unsigned char *raw;
    size_t n;
    memset(idx, 0, sizeof *idx);
    if (dl_read_file(path, &raw, &n)) return DL_ERR;
    return dl__idx_take(idx, raw, n, path);
}

DLDEF double dl_idx_value(const dl_idx *idx, size_t i)
{
    const unsigned char *p;
    if (!idx || !idx->data || i >= idx->count) return NAN;   /* a user's index: no assert */
    p = idx->data + i * (size_t)dl__idx_type_size(idx->type);
    switch (idx->type) {
    case 0x08: return p[0];
    case 0x09: return p[0] < 128 ? (double)p[0] : (double)p[0] - 256.0;
    case 0x0B: { int v = p[0] << 8 | p[1]; return v < 32768 ? v : v - 65536; }
    case 0x0C: return (double)(int32_t)dl__be32(p);
    case 0x0D: { uint32_t u = dl__be32(p); float f; memcpy(&f, &u, 4); return f; }
    default: {
        uint64_t u = (uint64_t)dl__be32(p) << 32 | dl__be32(p + 4);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    }
}

DLDEF void dl_idx_free(dl_idx *idx)
{
    DLCORE_FREE(idx->buf_);
    memset(idx, 0, sizeof *idx);
}

/* ---- Data sets --------------------------------------------------------------------- */

/* Training reads shuffled rows from all over a buffer far larger than the caches, and
   with 4 KiB pages nearly every row also misses the TLB. On Linux a data set's inputs
   from the default allocator ask for transparent huge pages (Debian's THP setting is
   "madvise": nothing else gets them): the MNIST batch gather went from 40 to 29 us per
   batch of 128, 10 to 8 us per 32, on Zen 5. Only the 2 MiB-aligned interior of the
   block is advised, before anything touches it; a custom DLCORE_MALLOC is left alone.
   <sys/mman.h> hides madvise under -std=c99, hence the declaration (as for fileno). */
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) && defined(DL__DEFAULT_MALLOC)
#ifdef __cplusplus
#include <sys/mman.h>
#else
int madvise(void *addr, size_t length, int advice);
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
static void dl__advise_huge_pages(void *p, size_t bytes)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (hi > lo) (void)madvise((void *)lo, (size_t)(hi - lo), MADV_HUGEPAGE);
}
#else
static void dl__advise_huge_pages(void *p, size_t bytes) { (void)p; (void)bytes; }
#endif

DLDEF int dl_dataset_alloc(dl_dataset *ds, int n, int ndim, const int *shape, int y_size)
{
    size_t xs = 1, nx, ny;
    int i;
    memset(ds, 0, sizeof *ds);
    if (n < 0 || y_size < 0 || ndim < 1 || ndim > 3 || !shape)
        return dl__error("dl_dataset_alloc: bad arguments (n %d, ndim %d, y_size %d)", n, ndim, y_size);
    for (i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || xs > (size_t)INT_MAX / (size_t)shape[i])
            return dl__error("dl_dataset_alloc: bad sample shape (dimension %d is %d)", i, shape[i]);
        xs *= (size_t)shape[i];
        ds->shape[i] = shape[i];
    }
    if (n && (xs > ((size_t)-1 / sizeof(float)) / (size_t)n ||
              (size_t)y_size > ((size_t)-1 / sizeof(float)) / (size_t)n))
        return dl__error("dl_dataset_alloc: %d samples of %lu floats do not fit in memory", n, (unsigned long)xs);
    nx = (size_t)n * xs;
    ny = (size_t)n * (size_t)y_size;
    ds->x = (float *)DLCORE_MALLOC((nx ? nx : 1) * sizeof(float));
    ds->y = (float *)DLCORE_MALLOC((ny ? ny : 1) * sizeof(float));
    if (ds->x) dl__advise_huge_pages(ds->x, nx * sizeof(float));
    if (!ds->x || !ds->y) {
        DLCORE_FREE(ds->x);
        DLCORE_FREE(ds->y);
        memset(ds, 0, sizeof *ds);
        return dl__error("dl_dataset_alloc: out of memory for %d samples of %lu floats", n, (unsigned long)xs);
    }
    memset(ds->x, 0, (nx ? nx : 1) * sizeof(float));
    memset(ds->y, 0, (ny ? ny : 1) * sizeof(float));
    ds->n = n;
    ds->ndim = ndim;
    ds->x_size = (int)xs;
    ds->y_size = y_size;
    ds->owned = 1;
    return DL_OK;
}

DLDEF void dl_dataset_free(dl_dataset *ds)
{
    if (!ds) return;
    if (ds->owned) {
        DLCORE_FREE(ds->x);
        DLCORE_FREE(ds->x8);
        DLCORE_FREE(ds->y);
    }
    memset(ds, 0, sizeof *ds);
}

DLDEF int dl_dataset_split(const dl_dataset *src, int first, int count, dl_dataset *view)
{
    if (first < 0 || count < 0 || first > src->n || count > src->n - first)
        return dl__error("dl_dataset_split: rows [%d, %d+%d) outside a data set of %d samples",
                         first, first, count, src->n);
    *view = *src;
    if (src->x) view->x = src->x + (size_t)first * (size_t)src->x_size;
    if (src->x8) view->x8 = src->x8 + (size_t)first * (size_t)src->x_size;
    view->y = src->y + (size_t)first * (size_t)src->y_size;
    view->n = count;
    view->owned = 0;
    return DL_OK;
}

DLDEF int dl_dataset_pack_u8(dl_dataset *ds)
{
    size_t i, nx;
    unsigned char *x8;
    if (!ds || !ds->x || ds->n < 1) return dl__error("dl_dataset_pack_u8: no float inputs to pack");
    if (!ds->owned) return dl__error("dl_dataset_pack_u8: a view cannot be packed (pack the data set it views)");
    nx = (size_t)ds->n * (size_t)ds->x_size;
    x8 = (unsigned char *)DLCORE_MALLOC(nx);
    if (!x8) return dl__error("dl_dataset_pack_u8: out of memory for %lu bytes", (unsigned long)nx);
    dl__advise_huge_pages(x8, nx);
    for (i = 0; i < nx; i++) {
        float v = ds->x[i], back;
        uint32_t bv, bb;
        int k = v >= 0.0f && v <= 1.0f ? (int)(v * 255.0f + 0.5f) : -1;
        back = (float)k * (1.0f / 255.0f);
        memcpy(&bv, &v, 4);
        memcpy(&bb, &back, 4);
        if (k < 0 || bv != bb) {
            DLCORE_FREE(x8);
            return dl__error("dl_dataset_pack_u8: value %.9g of sample %lu (index %lu) is not k/255 for an integer k in 0..255",
                             (double)v, (unsigned long)(i / (size_t)ds->x_size), (unsigned long)(i % (size_t)ds->x_size));
        }
        x8[i] = (unsigned char)k;
    }
    DLCORE_FREE(ds->x);
    ds->x = NULL;
    ds->x8 = x8;
    return DL_OK;
}

DLDEF int dl_dataset_get_x(const dl_dataset *ds, int first, int count, float *out)
{
    size_t xs;
    if (!ds || (!ds->x && !ds->x8) || !out || first < 0 || count < 0 || first > ds->n || count > ds->n - first)
        return dl__error("dl_dataset_get_x: rows [%d, %d+%d) outside a data set of %d samples",
                         first, first, count, ds ? ds->n : 0);
    xs = (size_t)ds->x_size;
    dl__init();
    if (ds->x) memcpy(out, ds->x + (size_t)first * xs, (size_t)count * xs * sizeof(float));
    else dl__u8_to_f32(ds->x8 + (size_t)first * xs, out, (size_t)count * xs);
    return DL_OK;
}

/* Finds <dir>/<prefix>-<kind>-<idxn>-ubyte in its accepted spellings; on failure
   the message lists every path tried. */
static int dl__idx_find(char *path, size_t size, const char *dir, const char *prefix,
                        const char *kind, const char *idxn)
{
    static const char *const forms[4] = { "%s/%s-%s-%s-ubyte", "%s/%s-%s-%s-ubyte.gz",
                                          "%s/%s-%s.%s-ubyte", "%s/%s-%s.%s-ubyte.gz" };
    char tried[1024];
    size_t used = 0;
    int i;
    tried[0] = 0;
    for (i = 0; i < 4; i++) {
        FILE *f;
        int w = snprintf(path, size, forms[i], dir, prefix, kind, idxn);
        if (w < 0 || (size_t)w >= size) return dl__error("%s/%s: path too long", dir, prefix);
        if ((f = fopen(path, "rb")) != NULL) {
            fclose(f);
            return DL_OK;
        }
        w = snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", path);
        if (w > 0 && (size_t)w < sizeof tried - used) used += (size_t)w;
    }
    return dl__error("no %s file for '%s' in %s (tried %s)", kind, prefix, dir, tried);
}

static int dl__idx_fill(dl_dataset *ds, const dl_idx *im, const dl_idx *lb)
{
    int shape[2], i, maxl = -1;
    size_t k, nx;
    shape[0] = im->dims[1];
    shape[1] = im->dims[2];
    if (dl_dataset_alloc(ds, im->dims[0], 2, shape, 1)) return DL_ERR;
    nx = (size_t)ds->n * (size_t)ds->x_size;
    for (k = 0; k < nx; k++) ds->x[k] = (float)im->data[k] * (1.0f / 255.0f);
    for (i = 0; i < ds->n; i++) {
        int l = lb->data[i];
        ds->y[i] = (float)l;
        if (l > maxl) maxl = l;
    }
    ds->n_classes = maxl + 1;
    return DL_OK;
}

/* An images file and a labels file that belong together -> ds; messages name the file. */
static int dl__idx_pair(dl_dataset *ds, const dl_idx *im, const dl_idx *lb, const char *ipath, const char *lpath)
{
    memset(ds, 0, sizeof *ds);
    if (im->type != 0x08 || im->ndim != 3)
        return dl__error("%s: magic 0x%08X is not u8 images (expected 0x00000803)", ipath, (unsigned)(im->type << 8 | im->ndim));
    if (lb->type != 0x08 || lb->ndim != 1)
        return dl__error("%s: magic 0x%08X is not u8 labels (expected 0x00000801)", lpath, (unsigned)(lb->type << 8 | lb->ndim));
    if (im->dims[1] < 1 || im->dims[2] < 1 || im->dims[1] > 65535 || im->dims[2] > 65535)
        return dl__error("%s: absurd image size %d x %d", ipath, im->dims[1], im->dims[2]);
    if ((long long)im->dims[1] * im->dims[2] > INT_MAX)
        return dl__error("%s: images of %d x %d = %lld pixels overflow a sample's size (at most %d values)", ipath,
                         im->dims[1], im->dims[2], (long long)im->dims[1] * im->dims[2], INT_MAX);
    if (im->dims[0] == 0) return dl__error("%s: the file holds 0 images", ipath);
    if (im->dims[0] != lb->dims[0])
        return dl__error("%s has %d images but %s has %d labels", ipath, im->dims[0], lpath, lb->dims[0]);
    if (dl__idx_fill(ds, im, lb) != DL_OK) {
        char msg[sizeof dl__errbuf];
        memcpy(msg, dl__errbuf, sizeof msg);
        return dl__error("%s: %s", ipath, msg);
    }
    return DL_OK;
}

DLDEF int dl_idx_load(dl_dataset *ds, const char *dir, const char *prefix)
{
    char ipath[1024], lpath[1024];
    dl_idx im, lb;
    int rc = DL_ERR;
    memset(ds, 0, sizeof *ds);
    if (!dir || !*dir) dir = ".";
    if (!prefix) return dl__error("dl_idx_load: NULL prefix");
    if (dl__idx_find(ipath, sizeof ipath, dir, prefix, "images", "idx3") ||
        dl__idx_find(lpath, sizeof lpath, dir, prefix, "labels", "idx1"))
        return DL_ERR;
    if (dl_idx_read(&im, ipath)) return DL_ERR;
    if (dl_idx_read(&lb, lpath)) {
        dl_idx_free(&im);
        return DL_ERR;
    }
    rc = dl__idx_pair(ds, &im, &lb, ipath, lpath);
    dl_idx_free(&im);
    dl_idx_free(&lb);
    return rc;
}

/* ==== 5. Models ==================================================================== */
/* ---- 5. Models: layers and the sequential container ------------------------------ */

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#ifndef __cplusplus
int fileno(FILE *stream);   /* POSIX; declared here in case <stdio.h> came first under -std=c99 */
#endif
#define DL__ISATTY(f) isatty(fileno(f))
#elif defined(_WIN32)
#include <io.h>
#define DL__ISATTY(f) _isatty(_fileno(f))
#else
#define DL__ISATTY(f) 0
#endif

struct dl_model {
    dl_shape     input;
    dl_layer    *layers;
    int          n_layers, cap_layers;
    int          loss_kind;
    dl_optimizer opt;
    uint64_t     seed;
    int          epochs_done;     /* the schedule continues across dl_fit calls */
    dl_graph    *g;               /* NULL until compiled */
    int          x, y, out, logits, loss;   /* graph nodes */
    int          out_size, n_classes;
    dl_history_row *history;
    int          n_history;
    double       t_gather, t_steps;   /* dl_fit's profile: seconds gathering batches, in steps */
    long         n_steps;
    int          aug_shift, aug_flip; /* dl_fit's augmentation, applied to training batches */
    dl_rng       aug_rng;
    /* compression (section 5): per parameter tensor the base encoding (DL_ENC_F32/F16/
       INT8) and whether it is stored sparse (NULL: all f32, dense); per layer the int8
       form (NULL: a float model); the pruner during dl_prune; the int8 path's workspace */
    unsigned char *enc, *sparse;
    struct dl__qdense *q;
    struct dl__pruner *prune;
    void         *qws;
    size_t        qws_cap;
};

static void dl__compress_free(dl_model *m);
static int dl__qpredict(dl_model *m, const float *x, int n, float *out);
static int dl__qeval(dl_model *m, const dl_dataset *d, float *loss, float *acc, int *conf);
static int dl__prune_after_step(dl_model *m);

static dl_layer dl__layer(int kind)
{
    dl_layer l;
    memset(&l, 0, sizeof l);
    l.kind = kind;
    return l;
}

DLDEF dl_layer dl_dense(int units, int activation)
{
    dl_layer l = dl__layer(DL_LAYER_DENSE);
    l.units = units;
    l.activation = activation;
    return l;
}

DLDEF dl_layer dl_dropout(float rate) { dl_layer l = dl__layer(DL_LAYER_DROPOUT); l.rate = rate; return l; }
DLDEF dl_layer dl_flatten(void) { return dl__layer(DL_LAYER_FLATTEN); }
DLDEF dl_layer dl_activation(int activation) { dl_layer l = dl__layer(DL_LAYER_ACTIVATION); l.activation = activation; return l; }
DLDEF dl_layer dl_global_avg_pool2d(void) { return dl__layer(DL_LAYER_GLOBAL_AVG_POOL2D); }
DLDEF dl_layer dl_reshape(dl_shape sample_shape) { dl_layer l = dl__layer(DL_LAYER_RESHAPE); l.shape = sample_shape; return l; }

DLDEF dl_layer dl_conv2d(int filters, int kh, int kw, int activation, const dl_conv2d_opts *o)
{
    dl_layer l = dl__layer(DL_LAYER_CONV2D);
    l.units = filters;
    l.kh = kh;
    l.kw = kw;
    l.activation = activation;
    if (o) l.conv = *o;
    l.conv.relu = 0;   /* the layer's activation says it */
    return l;
}

static dl_layer dl__pool_layer(int kind, int kh, int kw, const dl_pool2d_opts *o)
{
    dl_layer l = dl__layer(kind);
    l.kh = kh;
    l.kw = kw;
    if (o) l.pool = *o;
    return l;
}

DLDEF dl_layer dl_max_pool2d(int kh, int kw, const dl_pool2d_opts *o) { return dl__pool_layer(DL_LAYER_MAX_POOL2D, kh, kw, o); }
DLDEF dl_layer dl_avg_pool2d(int kh, int kw, const dl_pool2d_opts *o) { return dl__pool_layer(DL_LAYER_AVG_POOL2D, kh, kw, o); }
DLDEF dl_layer dl_batch_norm(const dl_batch_norm_opts *o) { dl_layer l = dl__layer(DL_LAYER_BATCH_NORM); if (o) l.bn = *o; return l; }

DLDEF dl_model *dl_sequential(dl_shape input)
{
    dl_model *m;
    if (input.ndim < 1 || input.ndim > 3 || dl_shape_numel(input) == 0 || dl_shape_numel(input) > (1u << 30)) {
        dl__error("dl_sequential: the input shape needs 1 to 3 positive dims and at most 2^30 values");
        return NULL;
    }
    m = (dl_model *)DLCORE_MALLOC(sizeof *m);
    if (!m) { dl__error("dl_sequential: out of memory"); return NULL; }
    memset(m, 0, sizeof *m);
    m->input = input;
    return m;
}

DLDEF void dl_model_free(dl_model *m)
{
    if (!m) return;
    dl__compress_free(m);
    dl_graph_free(m->g);
    DLCORE_FREE(m->layers);
    DLCORE_FREE(m->history);
    DLCORE_FREE(m);
}

DLDEF void dl_model_seed(dl_model *m, uint64_t seed) { if (m) m->seed = seed; }
DLDEF dl_graph *dl_model_graph(dl_model *m) { return m ? m->g : NULL; }

/* A layer's effect on one sample's shape, and the weights (with dl_state tensors) it
   owns; DL_ERR with a message when the layer cannot take that shape. */
static int dl__layer_shape(const dl_layer *l, dl_shape *s, uint64_t *weights)
{
    uint64_t last = (uint64_t)s->d[s->ndim - 1];
    int spatial = l->kind == DL_LAYER_CONV2D || l->kind == DL_LAYER_MAX_POOL2D || l->kind == DL_LAYER_AVG_POOL2D;
    char sb[64];
    *weights = 0;
    if (l->kind == DL_LAYER_FLATTEN) {
        if (dl_shape_numel(*s) > (size_t)INT_MAX)
            return dl__error("dl_add: flatten of %zu values per sample, more than %d", dl_shape_numel(*s), INT_MAX);
        *s = dl_shape_make((int)dl_shape_numel(*s), 0, 0, 0);
    }
    if (l->kind == DL_LAYER_DENSE) {
        s->d[s->ndim - 1] = l->units;
        *weights = (last + 1) * (uint64_t)l->units;
    }
    if (spatial || l->kind == DL_LAYER_GLOBAL_AVG_POOL2D) {
        const char *what = l->kind == DL_LAYER_CONV2D ? "conv2d" : l->kind == DL_LAYER_GLOBAL_AVG_POOL2D ? "global_avg_pool2d" : "pooling";
        int c, oh, ow, pad;
        if (s->ndim == 2) *s = dl_shape_make(s->d[0], s->d[1], 1, 0);   /* (h, w) images are (h, w, 1) */
        if (s->ndim != 3) return dl__error("dl_add: %s needs (h, w, c) samples, not %s", what, dl_shape_str(*s, sb, sizeof sb));
        c = s->d[2];
        if (l->kind == DL_LAYER_GLOBAL_AVG_POOL2D) { *s = dl_shape_make(c, 0, 0, 0); return DL_OK; }
        if (l->kind == DL_LAYER_CONV2D) {
            const dl_conv2d_opts *o = &l->conv;
            int grp = o->groups ? o->groups : 1;
            if (c % grp || l->units % grp)
                return dl__error("dl_add: conv2d groups %d do not divide %d input channels and %d filters", grp, c, l->units);
            if (dl__pad_dim(s->d[0], l->kh, o->stride_h ? o->stride_h : 1, o->dil_h ? o->dil_h : 1, o->padding, o->pad_top, o->pad_bottom, &pad, &oh) != DL_OK ||
                dl__pad_dim(s->d[1], l->kw, o->stride_w ? o->stride_w : 1, o->dil_w ? o->dil_w : 1, o->padding, o->pad_left, o->pad_right, &pad, &ow) != DL_OK)
                return dl__error("dl_add: a %dx%d conv2d kernel does not fit %s samples", l->kh, l->kw, dl_shape_str(*s, sb, sizeof sb));
            *weights = (uint64_t)l->kh * (uint64_t)l->kw * (uint64_t)(c / grp) * (uint64_t)l->units + (o->no_bias ? 0u : (uint64_t)l->units);
            c = l->units;
        } else {
            const dl_pool2d_opts *o = &l->pool;
            if (dl__pad_dim(s->d[0], l->kh, o->stride_h ? o->stride_h : l->kh, 1, o->padding, o->pad_top, o->pad_bottom, &pad, &oh) != DL_OK ||
                dl__pad_dim(s->d[1], l->kw, o->stride_w ? o->stride_w : l->kw, 1, o->padding, o->pad_left, o->pad_right, &pad, &ow) != DL_OK)
                return dl__error("dl_add: a %dx%d pooling window does not fit %s samples", l->kh, l->kw, dl_shape_str(*s, sb, sizeof sb));
        }
        *s = dl_shape_make(oh, ow, c, 0);
    }
    if (l->kind == DL_LAYER_BATCH_NORM) *weights = 4 * last;
    if (l->kind == DL_LAYER_RESHAPE) {
        if (dl_shape_numel(l->shape) != dl_shape_numel(*s)) {
            char sa[64];
            return dl__error("dl_add: reshape of %s samples to %s", dl_shape_str(*s, sa, sizeof sa), dl_shape_str(l->shape, sb, sizeof sb));
        }
        *s = l->shape;
    }
    return DL_OK;
}

/* Field ranges of the conv2d, pooling, batch norm and reshape layers. The limits keep
   every weight count inside 64 bits and every index inside an int. */
static int dl__check_layer_2d(const dl_layer *l)
{
    const int big = 1 << 12;
    int spatial = l->kind == DL_LAYER_CONV2D || l->kind == DL_LAYER_MAX_POOL2D || l->kind == DL_LAYER_AVG_POOL2D, i;
    if (spatial && (l->kh < 1 || l->kw < 1 || l->kh > big || l->kw > big))
        return dl__error("dl_add: window %dx%d (1..%d each way)", l->kh, l->kw, big);
    if (l->kind == DL_LAYER_CONV2D) {
        const dl_conv2d_opts *c = &l->conv;
        if (l->units < 1 || l->units > (1 << 16)) return dl__error("dl_add: conv2d with %d filters", l->units);
        if (c->stride_h < 0 || c->stride_w < 0 || c->dil_h < 0 || c->dil_w < 0 || c->groups < 0 || c->stride_h > big ||
            c->stride_w > big || c->dil_h > big || c->dil_w > big || c->groups > (1 << 16) || (c->no_bias & ~1) || c->relu)
            return dl__error("dl_add: conv2d stride %dx%d, dilation %dx%d, groups %d or no_bias %d out of range",
                             c->stride_h, c->stride_w, c->dil_h, c->dil_w, c->groups, c->no_bias);
        if (c->padding < DL_PAD_VALID || c->padding > DL_PAD_EXPLICIT) return dl__error("dl_add: unknown padding %d", c->padding);
        if (c->pad_top < 0 || c->pad_bottom < 0 || c->pad_left < 0 || c->pad_right < 0 || c->pad_top > big ||
            c->pad_bottom > big || c->pad_left > big || c->pad_right > big)
            return dl__error("dl_add: conv2d pads %d %d %d %d out of range", c->pad_top, c->pad_bottom, c->pad_left, c->pad_right);
    }
    if (l->kind == DL_LAYER_MAX_POOL2D || l->kind == DL_LAYER_AVG_POOL2D) {
        const dl_pool2d_opts *p = &l->pool;
        if (p->stride_h < 0 || p->stride_w < 0 || p->stride_h > big || p->stride_w > big)
            return dl__error("dl_add: pooling stride %dx%d out of range", p->stride_h, p->stride_w);
        if (p->padding < DL_PAD_VALID || p->padding > DL_PAD_EXPLICIT) return dl__error("dl_add: unknown padding %d", p->padding);
        if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0 ||
            p->pad_top >= l->kh || p->pad_bottom >= l->kh || p->pad_left >= l->kw || p->pad_right >= l->kw)
            return dl__error("dl_add: pooling pads %d %d %d %d must be smaller than the pool", p->pad_top, p->pad_bottom, p->pad_left, p->pad_right);
    }
    if (l->kind == DL_LAYER_BATCH_NORM && (!(l->bn.momentum >= 0.0f && l->bn.momentum < 1.0f) || !(l->bn.eps >= 0.0f && l->bn.eps < 1e30f)))
        return dl__error("dl_add: batch norm momentum %g (in [0, 1)) or eps %g (>= 0) out of range", (double)l->bn.momentum, (double)l->bn.eps);
    if (l->kind == DL_LAYER_RESHAPE) {
        if (l->shape.ndim < 1 || l->shape.ndim > 3) return dl__error("dl_add: reshape to %d dims (1..3)", l->shape.ndim);
        for (i = 0; i < DL_MAX_DIMS; i++)
            if ((i < l->shape.ndim) != (l->shape.d[i] > 0) || l->shape.d[i] > (1 << 24)) return dl__error("dl_add: reshape to an invalid shape");
    }
    return DL_OK;
}

static int dl__check_layer(const dl_layer *l)
{
    if (l->kind < DL_LAYER_DENSE || l->kind > DL_LAYER_RESHAPE) return dl__error("dl_add: unknown layer kind %d", l->kind);
    if (dl__check_layer_2d(l) != DL_OK) return DL_ERR;
    if (l->activation < DL_LINEAR || l->activation > DL_LEAKY_RELU)
        return dl__error("dl_add: unknown activation %d", l->activation);
    if (l->kind == DL_LAYER_DENSE && (l->units < 1 || l->units > (1 << 24)))
        return dl__error("dl_add: dense layer with %d units", l->units);
    if (l->kind == DL_LAYER_DROPOUT && !(l->rate >= 0.0f && l->rate < 1.0f))
        return dl__error("dl_add: dropout rate %g is not in [0, 1)", (double)l->rate);
    if (l->activation == DL_LEAKY_RELU && !(l->alpha >= 0.0f && isfinite(l->alpha)))
        return dl__error("dl_add: leaky ReLU slope %g must be finite and >= 0", (double)l->alpha);
    return DL_OK;
}

DLDEF int dl_add(dl_model *m, dl_layer layer)
{
    if (!m) return dl__error("dl_add: NULL model");
    if (m->g) return dl__error("dl_add: the model is already compiled");
    if (dl__check_layer(&layer) != DL_OK) return DL_ERR;
    {   /* the layer must fit the shape the layers before it give */
        dl_shape s = m->input;
        uint64_t wts;
        int i;
        for (i = 0; i < m->n_layers; i++) dl__layer_shape(&m->layers[i], &s, &wts);
        if (dl__layer_shape(&layer, &s, &wts) != DL_OK) return DL_ERR;
    }
    if (m->n_layers == m->cap_layers) {
        int cap = m->cap_layers ? 2 * m->cap_layers : 8;
        dl_layer *l = (dl_layer *)DLCORE_REALLOC(m->layers, (size_t)cap * sizeof *l);
        if (!l) return dl__error("dl_add: out of memory");
        m->layers = l;
        m->cap_layers = cap;
    }
    m->layers[m->n_layers++] = layer;
    return DL_OK;
}

static int dl__activate(dl_graph *g, int h, const dl_layer *l)
{
    switch (l->activation) {
    case DL_RELU:       return dl_op_relu(g, h);
    case DL_SIGMOID:    return dl_op_sigmoid(g, h);
    case DL_TANH:       return dl_op_tanh(g, h);
    case DL_SOFTMAX:    return dl_op_softmax(g, h);
    case DL_LEAKY_RELU: return dl_op_leaky_relu(g, h, l->alpha > 0.0f ? l->alpha : 0.01f);
    default:            return h;
    }
}

/* The activation that the loss absorbs: softmax for sparse CE, sigmoid for BCE. */
static int dl__fused_activation(int loss) { return loss == DL_LOSS_SPARSE_CE ? DL_SOFTMAX : loss == DL_LOSS_BCE ? DL_SIGMOID : -1; }

/* Every field in its domain (0 still means the default where one exists), each
   named when it is not: a model file's optimizer comes through here too. */
static int dl__check_optimizer(const dl_optimizer *o, const char *who)
{
    const struct { const char *name; float v; int below_one; } f[] = {
        { "lr", o->lr, 0 }, { "momentum", o->momentum, 0 }, { "beta1", o->beta1, 1 }, { "beta2", o->beta2, 1 },
        { "eps", o->eps, 0 }, { "weight_decay", o->weight_decay, 0 }, { "l1", o->l1, 0 }, { "l2", o->l2, 0 },
        { "clip_norm", o->clip_norm, 0 }, { "gamma", o->gamma, 0 }, { "lr_min", o->lr_min, 0 }
    };
    size_t i;
    if (o->kind < DL_SGD || o->kind > DL_ADAMW) return dl__error("%s: unknown optimizer kind %d", who, o->kind);
    if (o->nesterov != 0 && o->nesterov != 1) return dl__error("%s: optimizer nesterov is %d, not 0 or 1", who, o->nesterov);
    if (o->schedule < DL_SCHED_CONSTANT || o->schedule > DL_SCHED_COSINE)
        return dl__error("%s: unknown optimizer schedule %d", who, o->schedule);
    if (o->step_size < 0 || o->t_max < 0)
        return dl__error("%s: optimizer step_size %d and t_max %d may not be negative", who, o->step_size, o->t_max);
    for (i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(f[i].v >= 0.0f) || !isfinite(f[i].v) || (f[i].below_one && !(f[i].v < 1.0f)))
            return dl__error("%s: optimizer %s is %g; it must be %s", who, f[i].name, (double)f[i].v,
                             f[i].below_one ? "in [0, 1) (0: the default)" : "finite and >= 0");
    return DL_OK;
}

DLDEF int dl_compile(dl_model *m, int loss, dl_optimizer opt)
{
    dl_graph *g;
    int h, i, dense_no = 0, conv_no = 0, bn_no = 0, last_act = -1, n_out;
    if (!m) return dl__error("dl_compile: NULL model");
    if (m->g) return dl__error("dl_compile: the model is already compiled");
    if (loss < DL_LOSS_MSE || loss > DL_LOSS_SPARSE_CE) return dl__error("dl_compile: unknown loss %d", loss);
    if (dl__check_optimizer(&opt, "dl_compile") != DL_OK) return DL_ERR;
    if (m->n_layers == 0) return dl__error("dl_compile: the model has no layers");
    g = dl_graph_new(m->seed);
    if (!g) return DL_ERR;
    h = m->x = dl_input(g, "x", m->input);
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        int is_last = i == m->n_layers - 1;
        char name[40];
        if (h < 0) break;
        /* The last layer's fused activation is applied after the logits are kept. */
        int act = is_last && l->activation == dl__fused_activation(loss) ? DL_LINEAR : l->activation;
        dl_layer eff = *l;
        eff.activation = act;
        switch (l->kind) {
        case DL_LAYER_DENSE: {
            dl_tensor t = dl_node_value(g, h);
            int in = t.shape.d[t.shape.ndim - 1], w, b;
            dense_no++;
            snprintf(name, sizeof name, "dense_%d.w", dense_no);
            w = dl_param(g, name, dl_shape_make(in, l->units, 0, 0), DL_INIT_GLOROT_UNIFORM);
            snprintf(name, sizeof name, "dense_%d.b", dense_no);
            b = dl_param(g, name, dl_shape_make(l->units, 0, 0, 0), DL_INIT_ZEROS);
            h = dl__activate(g, dl_op_dense(g, h, w, b), &eff);
            break;
        }
        case DL_LAYER_DROPOUT:    h = dl_op_dropout(g, h, l->rate); break;
        case DL_LAYER_FLATTEN:    h = dl_op_flatten(g, h); break;
        case DL_LAYER_ACTIVATION: h = dl__activate(g, h, &eff); break;
        case DL_LAYER_RESHAPE:    h = dl_op_reshape(g, h, l->shape); break;
        case DL_LAYER_CONV2D: case DL_LAYER_MAX_POOL2D: case DL_LAYER_AVG_POOL2D: case DL_LAYER_GLOBAL_AVG_POOL2D: {
            dl_tensor t = dl_node_value(g, h);
            if (t.shape.ndim == 3) h = dl_op_reshape(g, h, dl_shape_make(t.shape.d[1], t.shape.d[2], 1, 0));
            if (l->kind == DL_LAYER_MAX_POOL2D) h = dl_op_max_pool2d(g, h, l->kh, l->kw, &l->pool);
            if (l->kind == DL_LAYER_AVG_POOL2D) h = dl_op_avg_pool2d(g, h, l->kh, l->kw, &l->pool);
            if (l->kind == DL_LAYER_GLOBAL_AVG_POOL2D) h = dl_op_global_avg_pool2d(g, h);
            if (l->kind == DL_LAYER_CONV2D && h >= 0) {
                dl_conv2d_opts co = l->conv;
                int c = dl_node_value(g, h).shape.d[3], grp = co.groups ? co.groups : 1, w, b = DL_NONE;
                conv_no++;
                snprintf(name, sizeof name, "conv2d_%d.w", conv_no);
                w = dl_param(g, name, dl_shape_make(l->kh, l->kw, c / grp, l->units), DL_INIT_GLOROT_UNIFORM);
                if (!co.no_bias) {
                    snprintf(name, sizeof name, "conv2d_%d.b", conv_no);
                    b = dl_param(g, name, dl_shape_make(l->units, 0, 0, 0), DL_INIT_ZEROS);
                }
                /* ReLU runs inside the op: one pass over the output fewer, one buffer fewer */
                co.relu = act == DL_RELU;
                h = dl_op_conv2d(g, h, w, b, &co);
                if (act != DL_RELU) h = dl__activate(g, h, &eff);
            }
            break;
        }
        case DL_LAYER_BATCH_NORM: {
            dl_tensor t = dl_node_value(g, h);
            int c = t.shape.d[t.shape.ndim - 1], ga, be, mm, mv;
            bn_no++;
            snprintf(name, sizeof name, "batch_norm_%d.gamma", bn_no);
            ga = dl_param(g, name, dl_shape_make(c, 0, 0, 0), DL_INIT_ONES);
            snprintf(name, sizeof name, "batch_norm_%d.beta", bn_no);
            be = dl_param(g, name, dl_shape_make(c, 0, 0, 0), DL_INIT_ZEROS);
            snprintf(name, sizeof name, "batch_norm_%d.moving_mean", bn_no);
            mm = dl_state(g, name, dl_shape_make(c, 0, 0, 0), DL_INIT_ZEROS);
            snprintf(name, sizeof name, "batch_norm_%d.moving_var", bn_no);
            mv = dl_state(g, name, dl_shape_make(c, 0, 0, 0), DL_INIT_ONES);
            h = dl_op_batch_norm(g, h, ga, be, mm, mv, &l->bn);
            break;
        }
        }
        if (is_last) last_act = l->activation;
    }
    if (h < 0) { dl_graph_free(g); return DL_ERR; }
    m->logits = h;
    {
        dl_tensor t = dl_node_value(g, h);
        n_out = (int)(dl_shape_numel(t.shape) / (size_t)t.shape.d[0]);
    }
    m->out = h;
    if (last_act == DL_SOFTMAX && loss == DL_LOSS_SPARSE_CE) m->out = dl_op_softmax(g, h);
    if (last_act == DL_SIGMOID && loss == DL_LOSS_BCE) m->out = dl_op_sigmoid(g, h);
    if (loss == DL_LOSS_SPARSE_CE) {
        m->y = dl_input(g, "labels", dl_shape_make(1, 0, 0, 0));
        m->loss = dl_loss_sparse_ce(g, m->logits, m->y);
        m->n_classes = n_out;
    } else {
        m->y = dl_input(g, "targets", dl_shape_make(n_out, 0, 0, 0));
        m->loss = loss == DL_LOSS_BCE ? dl_loss_bce_logits(g, m->logits, m->y) : dl_loss_mse(g, m->logits, m->y);
        m->n_classes = loss == DL_LOSS_BCE ? 2 : 0;
    }
    /* Not planned here: the arena is sized at first use for the batch then used
       (dl__reserve), so a shape a model file merely claims allocates nothing. */
    if (m->out < 0 || m->y < 0 || m->loss < 0) { dl_graph_free(g); return DL_ERR; }
    m->g = g;
    m->loss_kind = loss;
    m->opt = opt;
    m->out_size = n_out;
    return DL_OK;
}

DLDEF int dl_input_size(const dl_model *m) { return m ? (int)dl_shape_numel(m->input) : 0; }
DLDEF dl_shape dl_input_shape(const dl_model *m) { return m ? m->input : dl_shape_make(0, 0, 0, 0); }
DLDEF int dl_output_size(const dl_model *m) { return m ? m->out_size : 0; }

DLDEF size_t dl_model_param_count(const dl_model *m)
{
    size_t total = 0;
    int i;
    if (!m || !m->g) return 0;
    for (i = 0; i < dl_graph_param_count(m->g); i++)
        total += dl_shape_numel(dl_node_value(m->g, dl_graph_param(m->g, i)).shape);
    return total;
}


/* One line's layer column of dl_summary: its kind and main options. */
static void dl__layer_what(const dl_layer *l, char *what, size_t size)
{
    static const char *const kinds[] = { "?", "dense", "dropout", "flatten", "activation", "conv2d", "max_pool2d",
                                         "avg_pool2d", "global_avg_pool2d", "batch_norm", "reshape" };
    static const char *const pads[] = { "valid", "same", "explicit" };
    static const char *const acts[] = { "linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu" };
    if (l->kind == DL_LAYER_DENSE) snprintf(what, size, "dense %d, %s", l->units, acts[l->activation]);
    else if (l->kind == DL_LAYER_CONV2D)
        snprintf(what, size, "conv2d %d %dx%d %s%s, %s", l->units, l->kh, l->kw, pads[l->conv.padding],
                 l->conv.groups > 1 ? " grouped" : "", acts[l->activation]);
    else if (l->kind == DL_LAYER_MAX_POOL2D || l->kind == DL_LAYER_AVG_POOL2D)
        snprintf(what, size, "%s %dx%d, %s", kinds[l->kind], l->kh, l->kw, pads[l->pool.padding]);
    else if (l->kind == DL_LAYER_DROPOUT) snprintf(what, size, "dropout %.2f", (double)l->rate);
    else if (l->kind == DL_LAYER_ACTIVATION) snprintf(what, size, "activation %s", acts[l->activation]);
    else snprintf(what, size, "%s", kinds[l->kind]);
}

DLDEF void dl_summary(const dl_model *m, FILE *out)
{
    unsigned long long total = 0, fixed = 0;
    char s[64], what[64];
    dl_shape shape;
    int i, width = 28;   /* the layer column: as wide as its longest entry */
    if (!m) return;
    for (i = 0; i < m->n_layers; i++) {
        dl__layer_what(&m->layers[i], what, sizeof what);
        if ((int)strlen(what) > width) width = (int)strlen(what);
    }
    shape = m->input;
    fprintf(out, "%-*s %-16s %10s\n", width, "layer", "output shape", "params");
    fprintf(out, "%-*s %-16s %10d\n", width, "input", dl_shape_str(shape, s, sizeof s), 0);
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        uint64_t w = 0;
        unsigned long long params;
        if (dl__layer_shape(l, &shape, &w) != DL_OK) return;
        params = (unsigned long long)w;
        total += params;
        if (l->kind == DL_LAYER_BATCH_NORM) fixed += params / 2;
        dl__layer_what(l, what, sizeof what);
        fprintf(out, "%-*s %-16s %10llu\n", width, what, dl_shape_str(shape, s, sizeof s), params);
    }
    /* as Keras counts them: batch norm's moving statistics are non-trainable parameters */
    if (fixed) fprintf(out, "trainable %llu, non-trainable %llu\n", total - fixed, fixed);
    if (m->g) fprintf(out, "total parameters %llu (%llu bytes)\n", (unsigned long long)dl_model_param_count(m) + fixed,
                      ((unsigned long long)dl_model_param_count(m) + fixed) * sizeof(float));
}

/* ---- 5. Training and evaluation --------------------------------------------------- */

/* Grows the planned batch once, before a loop, never inside it. */
static int dl__reserve(dl_model *m, int batch)
{
    if (m->g->planned && batch <= m->g->max_batch) return DL_OK;
    return dl_graph_plan(m->g, batch);
}

/* Evaluation and prediction pick their own batch: up to `want`, halved while the
   arena would pass DLCORE_MAX_ARENA; a plan already made serves as it is. */
static int dl__reserve_upto(dl_model *m, int want)
{
    int b;
    for (b = want > 1 ? want : 1; b >= 1; b /= 2) {
        if (m->g->planned && b <= m->g->max_batch) return DL_OK;
        if (dl_graph_plan(m->g, b) == DL_OK) return DL_OK;
    }
    return DL_ERR;
}

/* Once per call, before any step: a non-finite input would spread through the
   weights unseen (ReLU maps NaN to 0, so the loss stays finite), and a target
   outside the loss's domain gives a meaningless loss (a label is range-checked
   before it is ever cast to int). Byte inputs are finite by construction. */
static int dl__check_values(const dl_model *m, const dl_dataset *d, const char *who)
{
    size_t i, xs = (size_t)d->x_size, ys = (size_t)d->y_size, nx = (size_t)d->n * xs, ny = (size_t)d->n * ys;
    if (d->x && (i = dl__find_nonfinite(d->x, nx)) < nx)
        return dl__error("%s: sample %zu, feature %zu is %g; inputs must be finite", who, i / xs, i % xs, (double)d->x[i]);
    for (i = 0; i < ny; i++) {
        float v = d->y[i];
        if (m->loss_kind == DL_LOSS_SPARSE_CE) {
            if (!(v >= 0.0f && v < (float)m->out_size) || v != floorf(v))
                return dl__error("%s: label %g of sample %zu is not a class in [0, %d)", who, (double)v, i, m->out_size);
        } else if (m->loss_kind == DL_LOSS_BCE) {
            if (!(v >= 0.0f && v <= 1.0f))
                return dl__error("%s: target %zu of sample %zu is %g; binary cross-entropy needs targets in [0, 1]",
                                 who, i % ys, i / ys, (double)v);
        } else if (!isfinite(v)) {
            return dl__error("%s: target %zu of sample %zu is %g; targets must be finite", who, i % ys, i / ys, (double)v);
        }
    }
    return DL_OK;
}

static int dl__check_data(const dl_model *m, const dl_dataset *d, const char *who)
{
    int want_y;
    if (!m || !m->g) return dl__error("%s: compile the model first", who);
    want_y = m->loss_kind == DL_LOSS_SPARSE_CE ? 1 : m->out_size;
    if (!d || (!d->x && !d->x8) || !d->y || d->n < 1) return dl__error("%s: empty data set", who);
    if (d->x_size != dl_input_size(m))
        return dl__error("%s: samples have %d values, the model's input takes %d", who, d->x_size, dl_input_size(m));
    if (d->y_size != want_y)
        return dl__error("%s: targets have %d values per sample, the model needs %d", who, d->y_size, want_y);
    return dl__check_values(m, d, who);
}

/* dl_fit's augmentation of one training sample, in place in the batch: a mirror,
   then a shift (dy, dx) in [-N, N] with zero fill, as memmoves in the direction
   that never reads a row or pixel already overwritten. */
static void dl__augment(dl_model *m, float *x)
{
    int h = m->input.d[0], w = m->input.d[1], c = m->input.ndim == 3 ? m->input.d[2] : 1, y, i, k;
    int n = m->aug_shift, dy = 0, dx = 0;
    size_t row = (size_t)w * c;
    if (m->aug_flip && (dl_rng_u32(&m->aug_rng) & 1u))
        for (y = 0; y < h; y++)
            for (i = 0; i < w / 2; i++) {
                float *a = x + y * row + (size_t)i * c, *b = x + y * row + (size_t)(w - 1 - i) * c;
                for (k = 0; k < c; k++) { float t = a[k]; a[k] = b[k]; b[k] = t; }
            }
    if (n > 0) {
        dy = (int)dl_rng_below(&m->aug_rng, (uint32_t)(2 * n + 1)) - n;
        dx = (int)dl_rng_below(&m->aug_rng, (uint32_t)(2 * n + 1)) - n;
    }
    if (dy > 0) {
        for (y = h - 1; y >= 0; y--)
            if (y - dy >= 0) memcpy(x + y * row, x + (y - dy) * row, row * sizeof(float));
            else memset(x + y * row, 0, row * sizeof(float));
    } else if (dy < 0) {
        for (y = 0; y < h; y++)
            if (y - dy < h) memcpy(x + y * row, x + (y - dy) * row, row * sizeof(float));
            else memset(x + y * row, 0, row * sizeof(float));
    }
    if (dx != 0) {
        int ax = dx > 0 ? dx : -dx;
        size_t keep = ax < w ? (size_t)(w - ax) * c : 0, gap = row - keep;
        for (y = 0; y < h; y++) {
            float *r = x + y * row;
            if (dx > 0) { memmove(r + gap, r, keep * sizeof(float)); memset(r, 0, gap * sizeof(float)); }
            else { memmove(r, r + gap, keep * sizeof(float)); memset(r + keep, 0, gap * sizeof(float)); }
        }
    }
}

/* Copies rows idx[0..bs) (or first..first+bs when idx is NULL) into the graph's
   inputs, widening bytes to floats when the data set stores them. */
static void dl__load_batch(dl_model *m, const dl_dataset *d, const int *idx, int first, int bs)
{
    float *x = dl_node_value(m->g, m->x).data, *y = dl_node_value(m->g, m->y).data;
    size_t xs = (size_t)d->x_size, ys = (size_t)d->y_size, row = xs * (d->x ? sizeof(float) : 1);
    const char *base = d->x ? (const char *)d->x : (const char *)d->x8;
    int i;
    dl_graph_set_batch(m->g, bs);
    for (i = 0; i < bs; i++) {
        size_t r = (size_t)(idx ? idx[first + i] : first + i);
#if defined(__GNUC__) || defined(__clang__)
        /* Shuffled rows come from all over a data set far larger than the caches:
           asking for the row after next while copying this one hides the misses.
           Its label too: the labels had left the caches by the next step as well,
           and waiting for them cost 4-6 us of ~22 per batch of 128 (Zen 5). */
        if (i + 2 < bs) {
            size_t nr = (size_t)(idx ? idx[first + i + 2] : first + i + 2), off;
            const char *next = base + nr * row;
            for (off = 0; off < row; off += 64) __builtin_prefetch(next + off);
            __builtin_prefetch(d->y + nr * ys);
        }
#endif
        if (d->x) memcpy(x + i * xs, d->x + r * xs, xs * sizeof(float));
        else dl__u8_to_f32(d->x8 + r * xs, x + i * xs, xs);
        if (m->g->training && (m->aug_shift > 0 || m->aug_flip)) dl__augment(m, x + i * xs);
        memcpy(y + i * ys, d->y + r * ys, ys * sizeof(float));
    }
}

static int dl__argmax(const float *v, int n)
{
    int j, best = 0;
    for (j = 1; j < n; j++) if (v[j] > v[best]) best = j;
    return best;
}

/* Predicted and true classes of row i of the current batch (-1 for regression);
   z and y: the batch's logits and targets. */
static int dl__classes(const dl_model *m, const float *z, const float *y, int i, int *truth, int col)
{
    z += (size_t)i * m->out_size;
    if (m->loss_kind == DL_LOSS_SPARSE_CE) { *truth = (int)y[i]; return dl__argmax(z, m->out_size); }
    if (m->loss_kind == DL_LOSS_BCE) { *truth = y[(size_t)i * m->out_size + col] > 0.5f; return z[col] > 0.0f; }
    *truth = -1;
    return -1;
}

/* Correct predictions in the current batch; BCE counts every output. */
static int dl__count_correct(const dl_model *m, int bs, int *conf)
{
    int i, c, correct = 0, cols = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    const float *z = dl_node_value(m->g, m->logits).data, *y = dl_node_value(m->g, m->y).data;
    if (m->loss_kind == DL_LOSS_MSE) return 0;
    for (i = 0; i < bs; i++)
        for (c = 0; c < cols; c++) {
            int truth, pred = dl__classes(m, z, y, i, &truth, c);
            correct += pred == truth;
            if (conf && truth >= 0 && truth < m->n_classes && m->n_classes <= DL_MAX_CLASSES)
                conf[truth * m->n_classes + pred]++;
        }
    return correct;
}

/* With a comm: rank r's contiguous share [lo, hi) of n rows. */
static void dl__comm_share(const dl_comm *c, int n, int *lo, int *hi)
{
    *lo = c ? (int)((long long)n * c->rank / c->size) : 0;
    *hi = c ? (int)((long long)n * (c->rank + 1) / c->size) : n;
}

/* Sums the loss, the hit count and the confusion matrix (nconf entries) over ranks. */
static int dl__comm_sum_eval(const dl_comm *c, double *sum, long *correct, int *conf, int nconf)
{
    double *buf = (double *)DLCORE_MALLOC((size_t)(2 + nconf) * sizeof(double));
    int i, rc;
    if (!buf) return dl__error("dl_evaluate: out of memory");
    buf[0] = *sum; buf[1] = (double)*correct;
    for (i = 0; i < nconf; i++) buf[2 + i] = conf[i];
    rc = c->allreduce(c->user, buf, (size_t)(2 + nconf), DL_COMM_F64);
    *sum = buf[0]; *correct = (long)buf[1];
    for (i = 0; i < nconf; i++) conf[i] = (int)buf[2 + i];
    DLCORE_FREE(buf);
    return rc == DL_OK ? DL_OK : dl__error("evaluation: the comm's allreduce failed on rank %d of %d", c->rank, c->size);
}

/* Mean loss and accuracy over a data set, in evaluation mode; with the graph's
   comm each rank takes its share and the sums are reduced. */
static int dl__eval(dl_model *m, const dl_dataset *d, float *loss, float *acc, int *conf)
{
    double sum = 0.0;
    long correct = 0;
    int first, bs = m->g->max_batch, lo, hi;
    int per = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    dl_graph_set_training(m->g, 0);
    dl__comm_share(m->g->comm, d->n, &lo, &hi);
    for (first = lo; first < hi; first += bs) {
        int n = hi - first < bs ? hi - first : bs;
        dl__load_batch(m, d, NULL, first, n);
        if (dl__forward(m->g, m->loss, 1) != DL_OK) return DL_ERR;
        sum += (double)dl_node_value(m->g, m->loss).data[0] * n;
        correct += dl__count_correct(m, n, conf);
    }
    if (m->g->comm && dl__comm_sum_eval(m->g->comm, &sum, &correct, conf,
                                        conf && m->n_classes <= DL_MAX_CLASSES ? m->n_classes * m->n_classes : 0) != DL_OK)
        return DL_ERR;
    *loss = (float)(sum / d->n);
    *acc = m->loss_kind == DL_LOSS_MSE ? NAN : (float)((double)correct / ((double)d->n * per));
    return DL_OK;
}

static void dl__progress_bar(FILE *out, int epoch, int epochs, int step, int steps, double loss, double acc)
{
    int filled = steps ? 30 * step / steps : 30, i;
    fprintf(out, "\repoch %d/%d [", epoch, epochs);
    for (i = 0; i < 30; i++) fputc(i < filled ? '=' : (i == filled ? '>' : '.'), out);
    fprintf(out, "] %d/%d loss %.4f", step, steps, loss);
    if (acc == acc) fprintf(out, " accuracy %.4f", acc);
    fflush(out);
}


DLDEF int dl_history(const dl_model *m, const dl_history_row **rows)
{
    if (rows) *rows = m ? m->history : NULL;
    return m ? m->n_history : 0;
}

static void dl__csv_row(FILE *f, int epoch, const dl_history_row *r)
{
    fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f,%.3f\n", epoch, (double)r->loss, (double)r->accuracy,
            (double)r->val_loss, (double)r->val_accuracy, (double)r->seconds);
    fflush(f);
}

/* One epoch over train (rows in `perm`). Returns DL_ERR on a non-finite loss. */
static int dl__train_epoch(dl_model *m, const dl_dataset *train, int *perm, int n, int bs, int epoch,
                           int epochs, int bar, FILE *out, dl_history_row *row)
{
    double sum = 0.0;
    long correct = 0, seen = 0;
    int first, step = 0, steps = (n + bs - 1) / bs, shown = -1, rc;
    int per = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    const dl_comm *c = m->g->comm;
    dl_graph_set_training(m->g, 1);
    for (first = 0; first < n; first += bs, step++) {
        int cur = n - first < bs ? n - first : bs, lo, hi, hits;
        float l;
        double t0 = m->g->profile ? dl__now() : 0.0;
        /* with a comm this rank trains on rows [lo, hi) of the batch; an empty share
           still runs one placeholder row weighing 0, to join the reductions */
        dl__comm_share(c, cur, &lo, &hi);
        dl__load_batch(m, train, perm, first + (hi > lo ? lo : 0), hi > lo ? hi - lo : 1);
        if (c) { dl_graph_set_rows(m->g, hi > lo ? lo : 0, cur); m->g->rows_empty = hi == lo; }
        if (m->g->profile) m->t_gather += dl__now() - t0;
        if (dl__forward(m->g, m->loss, 1) != DL_OK) return DL_ERR;
        l = dl_node_value(m->g, m->loss).data[0];
        hits = dl__count_correct(m, hi - lo, NULL);
        if (c) {
            /* the batch's loss and hits over all ranks travel with the step's small
               gradients (one call, not two); the step checks the loss before it
               updates, so every rank stops at the same step with the same weights */
            m->g->figures[0] = hi > lo ? l * (float)(hi - lo) : 0.0f;
            m->g->figures[1] = (float)hits;
            m->g->n_figures = 2;
            rc = dl_graph_step(m->g, m->loss, &m->opt, m->epochs_done);
            m->g->n_figures = 0;
            l = m->g->figures[0] / (float)cur;
            hits = (int)m->g->figures[1];
            if (rc != DL_OK && !m->g->figures_bad) return DL_ERR;
        }
        if (!isfinite(l))
            return dl__error("dl_fit: loss became %g at epoch %d, step %d of %d; lower the learning rate or check the data",
                             (double)l, epoch + 1, step + 1, steps);
        sum += (double)l * cur;
        seen += cur;
        correct += hits;
        if (!c && dl_graph_step(m->g, m->loss, &m->opt, m->epochs_done) != DL_OK) return DL_ERR;
        if (m->prune && dl__prune_after_step(m) != DL_OK) return DL_ERR;
        if (m->g->profile) { m->t_steps += dl__now() - t0; m->n_steps++; }
        if (bar && 100 * (step + 1) / steps != shown) {
            shown = 100 * (step + 1) / steps;
            dl__progress_bar(out, epoch + 1, epochs, step + 1, steps, sum / seen,
                             m->loss_kind == DL_LOSS_MSE ? NAN : (double)correct / ((double)seen * per));
        }
    }
    row->loss = (float)(sum / seen);
    row->accuracy = m->loss_kind == DL_LOSS_MSE ? NAN : (float)((double)correct / ((double)seen * per));
    return DL_OK;
}

/* dl_fit's profile. Timing each node costs two clock reads (~50 ns), so only a
   profiled run pays it. The validation pass after each epoch is not counted. */
static void dl__profile_reset(dl_model *m)
{
    int i;
    for (i = 0; i < m->g->n; i++) m->g->nodes[i].t_fwd = m->g->nodes[i].t_bwd = 0.0;
    m->g->t_update = m->g->t_comm = 0.0;
    m->t_gather = m->t_steps = 0.0;
    m->n_steps = 0;
    m->g->profile = 1;
}

static void dl__profile_print(const dl_model *m, FILE *out)
{
    const dl_graph *g = m->g;
    double per = m->n_steps ? 1e6 / (double)m->n_steps : 0.0, rest = m->t_steps - m->t_gather - g->t_update - g->t_comm;
    int i;
    fprintf(out, "profile: %ld training steps, %.1f us each (microseconds per step below)\n",
            m->n_steps, m->t_steps * per);
    fprintf(out, "  %-28s %9s %9s\n", "part", "forward", "backward");
    fprintf(out, "  %-28s %9.1f\n", "batch gather", m->t_gather * per);
    for (i = 0; i < g->n; i++) {
        const dl__node *n = &g->nodes[i];
        if (n->t_fwd <= 0.0 && n->t_bwd <= 0.0) continue;
        fprintf(out, "  %-28s %9.1f %9.1f\n", n->name, n->t_fwd * per, n->t_bwd * per);
        rest -= n->t_fwd + n->t_bwd;
    }
    fprintf(out, "  %-28s %9s %9.1f\n", "updates after the pass", "", g->t_update * per);
    if (g->t_comm > 0.0) fprintf(out, "  %-28s %9s %9.1f\n", "gradient sums, allgathers", "", g->t_comm * per);
    fprintf(out, "  %-28s %9.1f\n", "the rest", rest * per);
    fprintf(out, "  (a weight whose Adam step runs inside its gradient GEMM is timed in its node's backward)\n");
}

/* Once an epoch: a weight that went non-finite while the loss stayed finite
   (a dead ReLU unit hides it) stops training, named. */
static int dl__check_weights(const dl_model *m, int epoch)
{
    int i;
    for (i = 0; i < m->g->n_params; i++) {
        const dl__node *p = &m->g->nodes[m->g->params[i]];
        size_t len = dl__numel(p), bad = dl__find_nonfinite(p->val, len);
        if (bad < len)
            return dl__error("dl_fit: parameter '%s' holds %g at element %zu after epoch %d; lower the learning rate or check the data",
                             p->name, (double)p->val[bad], bad, epoch + 1);
    }
    return DL_OK;
}

/* dl_fit's start with a comm: all ranks must train the same set with the same
   batch; rank 0's seed, epoch count, weights and optimizer state are adopted.
   local_rc: whether this rank's own preparations worked. */
static int dl__comm_fit_begin(dl_model *m, const dl_comm *c, int n, int bs, int epochs, int local_rc)
{
    uint64_t hdr[5], mine[5];
    double bad[2];
    mine[0] = m->seed; mine[1] = (uint64_t)m->epochs_done;
    mine[2] = (uint64_t)n; mine[3] = (uint64_t)bs; mine[4] = (uint64_t)epochs;
    memcpy(hdr, mine, sizeof hdr);
    if (c->bcast(c->user, hdr, sizeof hdr) != DL_OK)
        return dl__error("dl_fit: the comm's bcast failed on rank %d of %d", c->rank, c->size);
    bad[0] = local_rc != DL_OK;
    bad[1] = hdr[2] != mine[2] || hdr[3] != mine[3] || hdr[4] != mine[4];
    if (c->allreduce(c->user, bad, 2, DL_COMM_F64) != DL_OK)
        return dl__error("dl_fit: the comm's allreduce failed on rank %d of %d", c->rank, c->size);
    if (local_rc != DL_OK) return DL_ERR;   /* keeps its own message */
    if (bad[1] > 0.0) {
        if (hdr[2] != mine[2] || hdr[3] != mine[3] || hdr[4] != mine[4])
            return dl__error("dl_fit: rank %d has %d samples, batch %d, %d epochs; rank 0 has %d, %d, %d: every rank must pass the same",
                             c->rank, n, bs, epochs, (int)hdr[2], (int)hdr[3], (int)hdr[4]);
        return dl__error("dl_fit: another rank's samples, batch or epochs differ from rank 0's");
    }
    if (bad[0] > 0.0) return dl__error("dl_fit: another rank could not start training (see its message)");
    m->seed = hdr[0];
    m->epochs_done = (int)hdr[1];
    return dl__comm_bcast_graph(m->g, c, "dl_fit");
}

DLDEF int dl_fit(dl_model *m, const dl_dataset *data, const dl_fit_opts *opts)
{
    dl_fit_opts o;
    dl_dataset train, val;
    const dl_dataset *valp = NULL;
    FILE *out, *csv = NULL;
    int *perm, epochs, bs, e, i, bar, rc = DL_OK;
    dl_history_row *hist;
    dl_rng rng;
    const dl_comm *saved_comm;
    if (opts) o = *opts; else memset(&o, 0, sizeof o);
    if (o.epochs < 0 || o.batch < 0)
        return dl__error("dl_fit: epochs %d and batch %d may not be negative (0 means the default)", o.epochs, o.batch);
    if (dl__check_data(m, data, "dl_fit") != DL_OK) return DL_ERR;
    if (m->q) return dl__error("dl_fit: the model is int8; train the float model and quantize it afterwards");
    epochs = o.epochs > 0 ? o.epochs : 1;
    bs = o.batch > 0 ? o.batch : 32;
    if (epochs > INT_MAX - m->epochs_done)
        return dl__error("dl_fit: %d more epochs after %d would overflow the epoch count", epochs, m->epochs_done);
    out = o.out ? o.out : stdout;
    if (!(o.validation_split >= 0.0f && o.validation_split < 1.0f))
        return dl__error("dl_fit: validation_split %g is not in [0, 1)", (double)o.validation_split);
    train = *data;
    train.owned = 0;
    if (o.validation) {
        if (dl__check_data(m, o.validation, "dl_fit (validation set)") != DL_OK) return DL_ERR;
        valp = o.validation;
    } else if (o.validation_split > 0.0f) {
        int n_val = (int)((double)data->n * o.validation_split);
        if (n_val < 1 || n_val >= data->n) return dl__error("dl_fit: validation_split %g leaves no data on one side", (double)o.validation_split);
        dl_dataset_split(data, data->n - n_val, n_val, &val);
        dl_dataset_split(data, 0, data->n - n_val, &train);
        valp = &val;
    }
    if (dl__comm_check(o.comm, "dl_fit") != DL_OK) return DL_ERR;
    if (o.comm && o.comm->rank != 0) { o.progress = DL_PROGRESS_NONE; o.csv_log = NULL; }
    bar = o.progress == DL_PROGRESS_BAR || (o.progress == DL_PROGRESS_AUTO && DL__ISATTY(out));
    if (o.augment_shift < 0 || (o.augment_flip & ~1) || ((o.augment_shift || o.augment_flip) && m->input.ndim < 2))
        return dl__error("dl_fit: augmentation needs (h, w) or (h, w, c) samples, a shift >= 0 and flip 0 or 1");
    /* Augmentation draws from one stream in sample order, so ranks would not draw
       what one process draws; refused until it is keyed by a row's global place. */
    if (o.comm && o.comm->size > 1 && (o.augment_shift || o.augment_flip))
        return dl__error("dl_fit: augmentation is not supported with a comm of %d ranks", o.comm->size);
    /* with a comm, `batch` is the global batch; a rank holds its share */
    if (dl__reserve(m, o.comm ? (bs + o.comm->size - 1) / o.comm->size : bs) != DL_OK) rc = DL_ERR;
    /* The previous history stays until this fit can start: a failure here leaves
       the model as it was. */
    perm = (int *)DLCORE_MALLOC((size_t)train.n * sizeof(int));
    hist = (dl_history_row *)DLCORE_MALLOC((size_t)epochs * sizeof(dl_history_row));
    if (rc == DL_OK && (!perm || !hist)) rc = dl__error("dl_fit: out of memory");
    for (i = 0; perm && i < train.n; i++) perm[i] = i;
    if (rc == DL_OK && o.csv_log) {
        csv = fopen(o.csv_log, "w");
        if (!csv) rc = dl__error("dl_fit: cannot write the CSV log '%s'", o.csv_log);
        else fprintf(csv, "epoch,loss,accuracy,val_loss,val_accuracy,seconds\n");
    }
    /* state left in shards by dl_graph_step under the graph's own comm is made whole
       before it is handed on (collective over that comm) */
    if (m->g->state_shard && dl__comm_gather_state(m->g, m->g->comm, "dl_fit") != DL_OK) rc = DL_ERR;
    if (rc == DL_OK && o.comm && dl__comm_bucket_reserve(m->g, o.comm, "dl_fit") != DL_OK) rc = DL_ERR;
    /* every rank joins the start-up exchange, so a rank that failed above fails all */
    if (o.comm) rc = dl__comm_fit_begin(m, o.comm, train.n, bs, epochs, rc);
    if (rc != DL_OK) {
        if (csv) fclose(csv);
        DLCORE_FREE(perm);
        DLCORE_FREE(hist);
        return DL_ERR;
    }
    DLCORE_FREE(m->history);
    m->history = hist;
    saved_comm = m->g->comm;
    m->g->comm = o.comm;
    /* Shuffling draws from its own stream so dropout masks do not depend on it. */
    dl_rng_seed(&rng, m->seed ^ 0x5deece66dULL ^ (uint64_t)m->epochs_done);
    dl_rng_seed(&m->aug_rng, m->seed ^ 0x3c6ef372fe94f82bULL ^ (uint64_t)m->epochs_done);
    m->aug_shift = o.augment_shift;
    m->aug_flip = o.augment_flip;
    m->n_history = 0;
    if (o.profile) dl__profile_reset(m);
    for (e = 0; e < epochs && rc == DL_OK; e++) {
        dl_history_row row;
        double t0 = dl__now();
        row.val_loss = row.val_accuracy = NAN;
        if (!o.no_shuffle) dl_rng_shuffle(&rng, perm, train.n);
        rc = dl__train_epoch(m, &train, perm, train.n, bs, e, epochs, bar, out, &row);
        if (rc == DL_OK && valp) { /* not part of the profile */
            int prof = m->g->profile;
            m->g->profile = 0;
            rc = dl__eval(m, valp, &row.val_loss, &row.val_accuracy, NULL);
            m->g->profile = prof;
        }
        if (rc == DL_OK) rc = dl__check_weights(m, e);
        if (rc != DL_OK) break;
        row.seconds = (float)(dl__now() - t0);
        m->epochs_done++;
        if (o.progress != DL_PROGRESS_NONE) {
            fprintf(out, "%sepoch %d/%d - %.2fs - loss %.4f", bar ? "\r\033[K" : "", e + 1, epochs, (double)row.seconds, (double)row.loss);
            if (row.accuracy == row.accuracy) fprintf(out, " - accuracy %.4f", (double)row.accuracy);
            if (valp) fprintf(out, " - val_loss %.4f", (double)row.val_loss);
            if (valp && row.val_accuracy == row.val_accuracy) fprintf(out, " - val_accuracy %.4f", (double)row.val_accuracy);
            fputc('\n', out);
            fflush(out);
        }
        if (csv) dl__csv_row(csv, e + 1, &row);
        m->history[m->n_history++] = row;
    }
    if (csv) fclose(csv);
    DLCORE_FREE(perm);
    m->aug_shift = m->aug_flip = 0;
    /* the optimizer state whole on every rank again, for whatever trains next (not
       after a collective failed: the others may be gone) */
    if (o.comm && !m->g->comm_failed && dl__comm_gather_state(m->g, o.comm, "dl_fit") != DL_OK) rc = DL_ERR;
    m->g->comm = saved_comm;
    if (o.profile) {
        m->g->profile = 0;
        if (rc == DL_OK && (!o.comm || o.comm->rank == 0)) dl__profile_print(m, out);
    }
    return rc;
}

static void dl__fill_scores(dl_metrics *mt)
{
    int c, k, nc = mt->n_classes;
    for (c = 0; c < nc; c++) {
        long tp = mt->confusion[c][c], pred = 0, truth = 0;
        for (k = 0; k < nc; k++) { pred += mt->confusion[k][c]; truth += mt->confusion[c][k]; }
        mt->precision[c] = pred ? (float)tp / (float)pred : 0.0f;
        mt->recall[c] = truth ? (float)tp / (float)truth : 0.0f;
        mt->f1[c] = mt->precision[c] + mt->recall[c] > 0.0f
                  ? 2.0f * mt->precision[c] * mt->recall[c] / (mt->precision[c] + mt->recall[c]) : 0.0f;
    }
}

DLDEF int dl_evaluate(dl_model *m, const dl_dataset *data, dl_metrics *mt)
{
    return dl_evaluate_comm(m, data, mt, NULL);
}

DLDEF int dl_evaluate_comm(dl_model *m, const dl_dataset *data, dl_metrics *mt, const dl_comm *comm)
{
    int conf[DL_MAX_CLASSES * DL_MAX_CLASSES], i, j, rc;
    const dl_comm *saved;
    if (!mt) return dl__error("dl_evaluate: NULL metrics");
    memset(mt, 0, sizeof *mt);
    if (dl__check_data(m, data, "dl_evaluate") != DL_OK) return DL_ERR;
    if (dl__comm_check(comm, "dl_evaluate") != DL_OK) return DL_ERR;
    memset(conf, 0, sizeof conf);
    if (m->q) {
        if (comm && comm->size > 1) return dl__error("dl_evaluate: an int8 model evaluates in one process (comm of %d ranks)", comm->size);
        if (dl__qeval(m, data, &mt->loss, &mt->accuracy, conf) != DL_OK) return DL_ERR;
    } else {
        if (dl__reserve_upto(m, data->n < 256 ? data->n : 256) != DL_OK) return DL_ERR;
        saved = m->g->comm;
        m->g->comm = comm;
        rc = dl__eval(m, data, &mt->loss, &mt->accuracy, conf);
        m->g->comm = saved;
        if (rc != DL_OK) return DL_ERR;
    }
    mt->n = data->n;
    mt->n_classes = m->n_classes <= DL_MAX_CLASSES ? m->n_classes : 0;
    for (i = 0; i < mt->n_classes; i++)
        for (j = 0; j < mt->n_classes; j++) mt->confusion[i][j] = conf[i * mt->n_classes + j];
    dl__fill_scores(mt);
    return DL_OK;
}

DLDEF void dl_metrics_print(const dl_metrics *mt, FILE *out)
{
    int i, j;
    fprintf(out, "samples %d  loss %.4f", mt->n, (double)mt->loss);
    if (mt->accuracy == mt->accuracy) fprintf(out, "  accuracy %.4f", (double)mt->accuracy);
    fputc('\n', out);
    if (!mt->n_classes) return;
    fprintf(out, "confusion (rows: true class, columns: predicted)\n      ");
    for (j = 0; j < mt->n_classes; j++) fprintf(out, "%6d", j);
    fputc('\n', out);
    for (i = 0; i < mt->n_classes; i++) {
        fprintf(out, "%6d", i);
        for (j = 0; j < mt->n_classes; j++) fprintf(out, "%6d", mt->confusion[i][j]);
        fputc('\n', out);
    }
    fprintf(out, "class  precision  recall  f1\n");
    for (i = 0; i < mt->n_classes; i++)
        fprintf(out, "%5d  %9.4f  %6.4f  %6.4f\n", i, (double)mt->precision[i], (double)mt->recall[i], (double)mt->f1[i]);
}

/* dl_predict's input check: samples first.. of x (rows of xs floats) must be finite. */
static int dl__predict_check(const float *x, size_t n, size_t xs, size_t first)
{
    size_t bad = dl__find_nonfinite(x, n * xs);
    if (bad == n * xs) return DL_OK;
    return dl__error("dl_predict: sample %zu, feature %zu is %g; inputs must be finite", first + bad / xs, bad % xs,
                     (double)x[bad]);
}

DLDEF int dl_predict(dl_model *m, const float *x, int n, float *out)
{
    int first, bs;
    size_t xs, os;
    if (!m || !m->g) return dl__error("dl_predict: compile or load the model first");
    if (!x || !out || n < 0) return dl__error("dl_predict: NULL data or negative count");
    if (n == 0) return DL_OK;
    xs = (size_t)dl_input_size(m);
    if (m->q) return dl__qpredict(m, x, n, out);   /* checks x as it quantizes it */
    if (dl__predict_check(x, (size_t)n, xs, 0) != DL_OK) return DL_ERR;
    if (dl__reserve_upto(m, n < 256 ? n : 256) != DL_OK) return DL_ERR;
    bs = m->g->max_batch;
    os = (size_t)m->out_size;
    dl_graph_set_training(m->g, 0);
    for (first = 0; first < n; first += bs) {
        int cur = n - first < bs ? n - first : bs;
        dl_graph_set_batch(m->g, cur);
        memcpy(dl_node_value(m->g, m->x).data, x + (size_t)first * xs, (size_t)cur * xs * sizeof(float));
        if (dl_forward(m->g, m->out) != DL_OK) return DL_ERR;
        memcpy(out + (size_t)first * os, dl_node_value(m->g, m->out).data, (size_t)cur * os * sizeof(float));
    }
    return DL_OK;
}

/* ---- 5. Compression: int8 quantization, magnitude pruning, fp16 storage ------------- */

/* The int8 form of one dense layer. */
typedef struct dl__qdense {
    int in, out;
    int8_t *wt;          /* [in][out], as the float tensor (what files and exporters read) */
    int8_t *packed;      /* dl_pack_s8 of the [out][in] transpose */
    float *scale;        /* per output: w ~ scale * wt */
    int32_t *colsum;     /* per output: sum of its int8 weights (the zero-point term) */
    int has_range;       /* static activation range (calibrated) */
    float range[2];
} dl__qdense;

typedef struct dl__pruner {
    dl_prune_opts o;
    long step, end_step;
    unsigned char **mask;   /* per parameter tensor (NULL: not pruned) */
} dl__pruner;

DLDEF int dl_model_is_int8(const dl_model *m) { return m && m->q; }
DLDEF int dl_model_layer_count(const dl_model *m) { return m ? m->n_layers : 0; }
DLDEF dl_layer dl_model_layer(const dl_model *m, int i)
{
    if (!m || i < 0 || i >= m->n_layers) return dl__layer(0);
    return m->layers[i];
}
DLDEF int dl_model_loss(const dl_model *m) { return m ? m->loss_kind : 0; }
DLDEF dl_shape dl_model_input_shape(const dl_model *m) { dl_shape s; memset(&s, 0, sizeof s); return m ? m->input : s; }
DLDEF int dl_model_tensor_count(const dl_model *m) { return m && m->g ? dl_graph_param_count(m->g) : 0; }

static void dl__qdense_free(dl__qdense *q)
{
    DLCORE_FREE(q->wt); DLCORE_FREE(q->packed); DLCORE_FREE(q->scale); DLCORE_FREE(q->colsum);
    memset(q, 0, sizeof *q);
}

static void dl__compress_free(dl_model *m)
{
    int i;
    if (m->q) for (i = 0; i < m->n_layers; i++) dl__qdense_free(&m->q[i]);
    DLCORE_FREE(m->q); m->q = NULL;
    DLCORE_FREE(m->enc); m->enc = NULL;
    DLCORE_FREE(m->sparse); m->sparse = NULL;
    DLCORE_FREE(m->qws); m->qws = NULL; m->qws_cap = 0;
}

/* The parameter index (graph order) of "dense_<d>.<w|b>" or "conv2d_<d>.<w|b>" for
   layer `layer`, or -1. */
static int dl__layer_param(const dl_model *m, int layer, char which)
{
    char name[40];
    int i, d = 0, kind;
    if (layer < 0 || layer >= m->n_layers || !m->g) return -1;
    kind = m->layers[layer].kind;
    if (kind != DL_LAYER_DENSE && kind != DL_LAYER_CONV2D) return -1;
    for (i = 0; i <= layer; i++) d += m->layers[i].kind == kind;
    snprintf(name, sizeof name, "%s_%d.%c", kind == DL_LAYER_DENSE ? "dense" : "conv2d", d, which);
    for (i = 0; i < dl_graph_param_count(m->g); i++)
        if (strcmp(dl_node_name(m->g, dl_graph_param(m->g, i)), name) == 0) return i;
    return -1;
}

/* The layer whose kernel parameter i is, or -1 (biases and other tensors). */
static int dl__param_layer(const dl_model *m, int i)
{
    int l;
    for (l = 0; l < m->n_layers; l++) if (dl__layer_param(m, l, 'w') == i) return l;
    return -1;
}

static dl_tensor dl__param_value(const dl_model *m, int i) { return dl_node_value(m->g, dl_graph_param(m->g, i)); }

/* Per-tensor encoding flags, allocated on first use (all f32, dense). */
static int dl__enc_alloc(dl_model *m)
{
    int n = dl_graph_param_count(m->g), i;
    if (m->enc) return DL_OK;
    m->enc = (unsigned char *)DLCORE_MALLOC((size_t)n + 1);
    m->sparse = (unsigned char *)DLCORE_MALLOC((size_t)n + 1);
    if (!m->enc || !m->sparse) {
        DLCORE_FREE(m->enc); DLCORE_FREE(m->sparse); m->enc = m->sparse = NULL;
        return dl__error("out of memory");
    }
    for (i = 0; i < n; i++) { m->enc[i] = DL_ENC_F32; m->sparse[i] = 0; }
    return DL_OK;
}

/* Builds packed weights and column sums from q->wt and q->scale; the float tensor w
   (if not NULL) becomes the dequantized weights. */
static int dl__qdense_finish(dl__qdense *q, float *w)
{
    int8_t *tr = (int8_t *)DLCORE_MALLOC((size_t)q->in * q->out + 1);
    int i, j;
    q->packed = (int8_t *)DLCORE_MALLOC(dl_s8_packed_size(q->out, q->in) + 1);
    q->colsum = (int32_t *)DLCORE_MALLOC((size_t)q->out * sizeof(int32_t));
    if (!tr || !q->packed || !q->colsum) { DLCORE_FREE(tr); return dl__error("out of memory"); }
    for (j = 0; j < q->out; j++) q->colsum[j] = 0;
    for (i = 0; i < q->in; i++)
        for (j = 0; j < q->out; j++) {
            int8_t v = q->wt[(size_t)i * q->out + j];
            tr[(size_t)j * q->in + i] = v;
            q->colsum[j] += v;
            if (w) w[(size_t)i * q->out + j] = (float)v * q->scale[j];
        }
    dl_pack_s8(q->out, q->in, tr, q->in, q->packed);
    DLCORE_FREE(tr);
    return DL_OK;
}

static int dl__qdense_alloc(dl__qdense *q, int in, int out)
{
    memset(q, 0, sizeof *q);
    q->in = in; q->out = out;
    q->wt = (int8_t *)DLCORE_MALLOC((size_t)in * out + 1);
    q->scale = (float *)DLCORE_MALLOC((size_t)out * sizeof(float));
    if (!q->wt || !q->scale) return dl__error("out of memory");
    return DL_OK;
}

/* Symmetric per output channel: scale = max |w| / 127, codes in -127..127. */
static int dl__qdense_from(dl__qdense *q, float *w, int in, int out)
{
    int i, j;
    if (dl__qdense_alloc(q, in, out) != DL_OK) return DL_ERR;
    for (j = 0; j < out; j++) {
        float mx = 0.0f;
        for (i = 0; i < in; i++) { float a = fabsf(w[(size_t)i * out + j]); if (a > mx) mx = a; }
        q->scale[j] = mx > 0.0f ? mx / 127.0f : 1.0f;
    }
    for (i = 0; i < in; i++)
        for (j = 0; j < out; j++) {
            long v = lrintf(w[(size_t)i * out + j] / q->scale[j]);
            q->wt[(size_t)i * out + j] = (int8_t)(v < -127 ? -127 : v > 127 ? 127 : v);
        }
    return dl__qdense_finish(q, w);
}

/* e^x for x <= 0 (larger x is taken as 0; a NaN stays a NaN), the same bits on every
   ISA, so that an int8 model's probabilities are too: every step is one correctly
   rounded operation, an explicit fused multiply-add where there is one (dl__fmaf in
   the scalar code), and each ISA runs the same steps. x = n ln2 + r as in dl__exp_avx512, e^r by its Taylor series
   to r^7; then 2^n in two exact halves (n >= -150 after the clamp at -104): p 2^h is
   a normal float, and the one rounding is the last multiply, as ldexpf's.
   libm's expf per logit, in the scalar loop around it, took 8% of the int8 MLP's batch
   of 256 (perf); this, 3.5%. */
static const float dl__ex_c[8] = { 1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f };
#define DL__EX_LOG2E 1.44269504088896341f
#define DL__EX_LN2HI 0.693145751953125f
#define DL__EX_LN2LO 1.428606820309417e-6f

static float dl__pow2i(int e)   /* 2^e for -126 <= e <= 127 */
{
    uint32_t u = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* a b + c rounded once, as a fused multiply-add, without libm (MinGW's fmaf is not
   fused): a b is exact in a double; their sum with c is rounded to odd (TwoSum finds
   what the double rounding dropped, and an inexact sum keeps its last bit set), and
   53 >= 24 + 2 bits make the narrowing to float round as the fused operation does. */
static float dl__fmaf(float a, float b, float c)
{
    double p = (double)a * b, s = p + c, t = s - p, err = (p - (s - t)) + (c - t);
    uint64_t u;
    memcpy(&u, &s, sizeof u);
    if (err != 0.0 && !(u & 1)) {   /* toward the dropped part: one step up or down in magnitude */
        u = (err > 0.0) == (s > 0.0) ? u + 1 : u - 1;
        memcpy(&s, &u, sizeof s);
    }
    return (float)s;
}

static float dl__exp_exact(float x)
{
    float n, r, p;
    int i, h;
    if (x != x) return x;
    x = x > 0.0f ? 0.0f : x < -104.0f ? -104.0f : x;
    n = x * DL__EX_LOG2E;
    n = (float)(((double)n + 6755399441055744.0) - 6755399441055744.0);   /* to nearest even: 1.5 2^52 */
    r = dl__fmaf(-n, DL__EX_LN2LO, dl__fmaf(-n, DL__EX_LN2HI, x));
    p = dl__fmaf(dl__ex_c[0], r, dl__ex_c[1]);
    for (i = 2; i < 8; i++) p = dl__fmaf(p, r, dl__ex_c[i]);
    i = (int)n;
    h = i >= 0 ? i / 2 : -((1 - i) / 2);   /* floor(i / 2), as the vectors' arithmetic shift */
    return p * dl__pow2i(h) * dl__pow2i(i - h);
}

#ifdef DL__X86
/* The same steps 8 at a time: min(0, x) and max(-104, x) return x when x is a NaN, as
   the scalar comparisons do. */
DL__TARGET("avx2,fma") static size_t dl__exps_avx2(float *v, size_t len)
{
    const __m256 lo = _mm256_set1_ps(-104.0f), zero = _mm256_setzero_ps();
    size_t j = 0;
    int i;
    for (; j + 8 <= len; j += 8) {
        __m256 x = _mm256_max_ps(lo, _mm256_min_ps(zero, _mm256_loadu_ps(v + j))), n, r, p;
        __m256i e, h;
        n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(DL__EX_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(DL__EX_LN2LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(DL__EX_LN2HI), x));
        p = _mm256_fmadd_ps(_mm256_set1_ps(dl__ex_c[0]), r, _mm256_set1_ps(dl__ex_c[1]));
        for (i = 2; i < 8; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(dl__ex_c[i]));
        e = _mm256_cvtps_epi32(n);
        h = _mm256_srai_epi32(e, 1);
        e = _mm256_sub_epi32(e, h);
        p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23)));
        p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23)));
        _mm256_storeu_ps(v + j, p);
    }
    return j;
}

/* AVX-512 is the fp32 softmax's dl__exp_avx512 after min(0, x): its scalef rounds once,
   as the two multiplies do. */
DL__GXX_UNINIT_OFF
DL__TARGET("avx512f") static void dl__exps_avx512(float *v, size_t len)
{
    size_t j;
    for (j = 0; j < len; j += 16) {
        __mmask16 m = (__mmask16)(len - j >= 16 ? 0xffffu : (1u << (len - j)) - 1u);
        _mm512_mask_storeu_ps(v + j, m, dl__exp_avx512(_mm512_min_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(m, v + j))));
    }
}
DL__GXX_UNINIT_ON
#endif

#ifdef DL__NEON
/* NEON's min and max return a NaN when either operand is one, which ends as a NaN too. */
static size_t dl__exps_neon(float *v, size_t len)
{
    const float32x4_t lo = vdupq_n_f32(-104.0f), zero = vdupq_n_f32(0.0f);
    size_t j = 0;
    int i;
    for (; j + 4 <= len; j += 4) {
        float32x4_t x = vmaxq_f32(lo, vminq_f32(zero, vld1q_f32(v + j))), n, r, p;
        int32x4_t e, h;
        n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(DL__EX_LOG2E)));
        r = vfmaq_f32(vfmaq_f32(x, vnegq_f32(n), vdupq_n_f32(DL__EX_LN2HI)), vnegq_f32(n), vdupq_n_f32(DL__EX_LN2LO));
        p = vfmaq_f32(vdupq_n_f32(dl__ex_c[1]), vdupq_n_f32(dl__ex_c[0]), r);
        for (i = 2; i < 8; i++) p = vfmaq_f32(vdupq_n_f32(dl__ex_c[i]), p, r);
        e = vcvtq_s32_f32(n);
        h = vshrq_n_s32(e, 1);
        e = vsubq_s32(e, h);
        p = vmulq_f32(p, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(h, vdupq_n_s32(127)), 23)));
        p = vmulq_f32(p, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(e, vdupq_n_s32(127)), 23)));
        vst1q_f32(v + j, p);
    }
    return j;
}
#endif

static void dl__exps_exact(float *v, size_t len)
{
    size_t j = 0;
#ifdef DL__X86
    if (dl__isa_cur == DL__ISA_AVX512) { dl__exps_avx512(v, len); return; }
    if (dl__isa_cur == DL__ISA_AVX2) j = dl__exps_avx2(v, len);
#endif
#ifdef DL__NEON
    if (dl__isa_cur == DL__ISA_NEON) j = dl__exps_neon(v, len);
#endif
    for (; j < len; j++) v[j] = dl__exp_exact(v[j]);
}

/* Activations in float, row-major [rows][cols]. */
static void dl__act_rows(float *x, int rows, int cols, int act, float alpha)
{
    size_t i, n = (size_t)rows * cols;
    int r, j;
    switch (act) {
    case DL_RELU: for (i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case DL_LEAKY_RELU: { float a = alpha > 0.0f ? alpha : 0.01f; for (i = 0; i < n; i++) if (x[i] < 0.0f) x[i] *= a; break; }
    case DL_SIGMOID: for (i = 0; i < n; i++) x[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case DL_TANH: for (i = 0; i < n; i++) x[i] = tanhf(x[i]); break;
    case DL_SOFTMAX:   /* dl__exps_exact and sums in column order: the same bits on every ISA */
        for (r = 0; r < rows; r++) {
            float *v = x + (size_t)r * cols, mx = v[0];
            for (j = 1; j < cols; j++) if (v[j] > mx) mx = v[j];
            for (j = 0; j < cols; j++) v[j] -= mx;
        }
        dl__exps_exact(x, n);
        for (r = 0; r < rows; r++) {
            float *v = x + (size_t)r * cols, s = 0.0f, inv;
            for (j = 0; j < cols; j++) s += v[j];
            inv = 1.0f / s;
            for (j = 0; j < cols; j++) v[j] *= inv;
        }
        break;
    default: break;
    }
}

typedef struct {
    const dl__qdense *q;
    const float *sx, *bias;   /* per row activation scale; bias (may be NULL) */
    const int *zx;            /* per row zero point */
    float *y;                 /* [rows][out] */
    int relu;
} dl__qepi_ctx;

/* y = sx sw (acc - zx colsum) + bias (then ReLU), for one tile. The AVX2 loop does the
   same operations in the same order (no FMA contraction), so every ISA gives the same
   outputs; max(0, v) keeps a NaN as the scalar comparison does. */
static void dl__qepi_scalar(const dl__qepi_ctx *c, const int32_t *ti, float *y, float sx, int32_t z, int j0, int j, int nc)
{
    const float *sw = c->q->scale + j0, *b = c->bias ? c->bias + j0 : NULL;
    const int32_t *cs = c->q->colsum + j0;
    for (; j < nc; j++) {
        float v = (float)(ti[j] - z * cs[j]) * (sx * sw[j]) + (b ? b[j] : 0.0f);
        y[j] = c->relu && v < 0.0f ? 0.0f : v;
    }
}

#ifdef DL__X86
DL__TARGET("avx2") static int dl__qepi_avx2(const dl__qepi_ctx *c, const int32_t *ti, float *y, float sx, int32_t z, int j0, int nc)
{
    const float *sw = c->q->scale + j0, *b = c->bias ? c->bias + j0 : NULL;
    const int32_t *cs = c->q->colsum + j0;
    __m256 vsx = _mm256_set1_ps(sx), zero = _mm256_setzero_ps();
    __m256i vz = _mm256_set1_epi32(z);
    int j = 0;
    for (; j + 8 <= nc; j += 8) {
        __m256i d = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(ti + j)),
                                     _mm256_mullo_epi32(vz, _mm256_loadu_si256((const __m256i *)(cs + j))));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(vsx, _mm256_loadu_ps(sw + j)));
        v = _mm256_add_ps(v, b ? _mm256_loadu_ps(b + j) : zero);
        if (c->relu) v = _mm256_max_ps(zero, v);
        _mm256_storeu_ps(y + j, v);
    }
    return j;
}

/* A whole tile in 16 lanes under a mask, each column block's scales, sums and bias
   loaded once for all the tile's rows (avx512f enables no FMA, so nothing is
   contracted). Row by row, through the AVX2 loop and its scalar tail (the MLP's
   second layer has 10 outputs), the epilogue took 7% of an int8 batch of 256. */
DL__GXX_UNINIT_OFF
DL__TARGET("avx512f") static void dl__qepi_avx512(const dl__qepi_ctx *c, const int32_t *t, int ldt, int i0, int mr, int j0, int nc)
{
    const __m512 zero = _mm512_setzero_ps();
    int i, j;
    for (j = 0; j < nc; j += 16) {
        __mmask16 m = (__mmask16)(nc - j >= 16 ? 0xffffu : (1u << (nc - j)) - 1u);
        __m512 sw = _mm512_maskz_loadu_ps(m, c->q->scale + j0 + j);
        __m512 b = c->bias ? _mm512_maskz_loadu_ps(m, c->bias + j0 + j) : zero;
        __m512i cs = _mm512_maskz_loadu_epi32(m, c->q->colsum + j0 + j);
        for (i = 0; i < mr; i++) {
            __m512i d = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, t + (size_t)i * ldt + j),
                                         _mm512_mullo_epi32(_mm512_set1_epi32(c->zx[i0 + i]), cs));
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(_mm512_set1_ps(c->sx[i0 + i]), sw));
            v = _mm512_add_ps(v, b);
            if (c->relu) v = _mm512_max_ps(zero, v);
            _mm512_mask_storeu_ps(c->y + (size_t)(i0 + i) * c->q->out + j0 + j, m, v);
        }
    }
}
DL__GXX_UNINIT_ON
#endif

static void dl__qepi(void *ctx, const int32_t *t, int ldt, int i0, int mr, int j0, int nc)
{
    const dl__qepi_ctx *c = (const dl__qepi_ctx *)ctx;
    int i;
#ifdef DL__X86
    if (dl__isa_cur == DL__ISA_AVX512) { dl__qepi_avx512(c, t, ldt, i0, mr, j0, nc); return; }
#endif
    for (i = 0; i < mr; i++) {
        float *y = c->y + (size_t)(i0 + i) * c->q->out + j0, sx = c->sx[i0 + i];
        const int32_t *ti = t + (size_t)i * ldt;
        int32_t z = c->zx[i0 + i];
        int j = 0;
#ifdef DL__X86
        if (dl__isa_cur != DL__ISA_SCALAR) j = dl__qepi_avx2(c, ti, y, sx, z, j0, nc);
#endif
        dl__qepi_scalar(c, ti, y, sx, z, j0, j, nc);
    }
}

/* A layer the int8 path quantizes: dense, and conv2d without groups (a grouped or
   depthwise conv has too few multiplies per weight for int8 to pay, and stays float). */
static int dl__int8_layer(const dl_layer *l)
{
    return l->kind == DL_LAYER_DENSE || (l->kind == DL_LAYER_CONV2D && l->conv.groups <= 1);
}

/* What the int8 forward of `rows` samples needs: the widest sample between layers, in
   floats; codes: a dense layer quantizes rows x width values (batch norm keeps its
   per-channel factors there); qrows: the per-row scales and zero points. A conv layer
   works in the threads' own workspaces. */
typedef struct { size_t width, codes, qrows; } dl__qsizes;

static int dl__qsizes_of(const dl_model *m, int rows, dl__qsizes *z)
{
    dl_shape shape = m->input;
    int i;
    z->width = dl_shape_numel(shape);
    z->codes = 0;
    z->qrows = (size_t)rows;
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        dl_shape in = shape;
        uint64_t wc;
        if (dl__layer_shape(l, &shape, &wc) != DL_OK) return DL_ERR;
        if (dl_shape_numel(shape) > z->width) z->width = dl_shape_numel(shape);
        if (l->kind == DL_LAYER_DENSE && (size_t)rows * (dl_shape_numel(in) / (size_t)in.d[in.ndim - 1]) > z->qrows)
            z->qrows = (size_t)rows * (dl_shape_numel(in) / (size_t)in.d[in.ndim - 1]);   /* a row per last-axis vector */
        if (l->kind == DL_LAYER_BATCH_NORM && (size_t)2 * sizeof(float) * shape.d[shape.ndim - 1] > z->codes)
            z->codes = (size_t)2 * sizeof(float) * shape.d[shape.ndim - 1];   /* its a and b per channel */
    }
    z->width = (z->width + 15) & ~(size_t)15;
    if ((size_t)rows * z->width > z->codes) z->codes = (size_t)rows * z->width;
    return DL_OK;
}

/* Largest batch the int8 path runs at once: 256 rows (the MLP's workspace stays ~1-2
   MB), fewer where a sample's widest activation would make a float buffer pass 16 MB. */
#define DL__Q_ROWS 256
static int dl__q_rows(const dl_model *m)
{
    dl__qsizes z;
    size_t r;
    if (dl__qsizes_of(m, 1, &z) != DL_OK) return 1;
    r = ((size_t)4 << 20) / z.width;
    return r < 1 ? 1 : r > DL__Q_ROWS ? DL__Q_ROWS : (int)r;
}

/* Workspace for the int8 forward: two float buffers of the widest sample, the codes,
   and per-row scales and zero points. Grows, never shrinks. */
static int dl__qws_reserve(dl_model *m, int rows, float **f0, float **f1, uint8_t **codes, float **sx, int **zx)
{
    dl__qsizes z;
    size_t need;
    char *p;
    if (dl__qsizes_of(m, rows, &z) != DL_OK) return DL_ERR;
    need = (size_t)rows * z.width * 2 * sizeof(float) + z.qrows * (sizeof(float) + sizeof(int)) + z.codes + 128;
    if (need > m->qws_cap) {
        void *np = DLCORE_REALLOC(m->qws, need);
        if (!np) return dl__error("dl_predict: out of memory");
        m->qws = np;
        m->qws_cap = need;
    }
    p = (char *)m->qws;
    *f0 = (float *)p; p += (size_t)rows * z.width * sizeof(float);
    *f1 = (float *)p; p += (size_t)rows * z.width * sizeof(float);
    *sx = (float *)p; p += z.qrows * sizeof(float);
    *zx = (int *)p; p += z.qrows * sizeof(int);
    *codes = (uint8_t *)(p + ((64 - ((uintptr_t)p & 63)) & 63));
    return DL_OK;
}

/* An activation over samples of shape s: softmax acts on the last axis. */
static void dl__qact(float *x, int rows, dl_shape s, int act, float alpha)
{
    int last = s.d[s.ndim - 1], per = (int)(dl_shape_numel(s) / (size_t)last);
    if (act == DL_SOFTMAX) dl__act_rows(x, rows * per, last, act, alpha);
    else dl__act_rows(x, rows, per * last, act, alpha);
}

/* Stride, dilation and leading pads of a conv or pooling layer on an h x w input. */
static void dl__layer_geometry(const dl_layer *l, int h, int w, int *sh, int *sw, int *dh, int *dw, int *pt, int *pl)
{
    int pool = l->kind != DL_LAYER_CONV2D, end;
    int mode = pool ? l->pool.padding : l->conv.padding;
    *sh = pool ? (l->pool.stride_h > 0 ? l->pool.stride_h : l->kh) : (l->conv.stride_h > 0 ? l->conv.stride_h : 1);
    *sw = pool ? (l->pool.stride_w > 0 ? l->pool.stride_w : l->kw) : (l->conv.stride_w > 0 ? l->conv.stride_w : 1);
    *dh = pool || l->conv.dil_h <= 0 ? 1 : l->conv.dil_h;
    *dw = pool || l->conv.dil_w <= 0 ? 1 : l->conv.dil_w;
    (void)dl__pad_dim(h, l->kh, *sh, *dh, mode, pool ? l->pool.pad_top : l->conv.pad_top,
                      pool ? l->pool.pad_bottom : l->conv.pad_bottom, pt, &end);
    (void)dl__pad_dim(w, l->kw, *sw, *dw, mode, pool ? l->pool.pad_left : l->conv.pad_left,
                      pool ? l->pool.pad_right : l->conv.pad_right, pl, &end);
}

/* memset / memcpy, inline for the few bytes a first layer's patch row holds */
static void dl__fill8(uint8_t *d, int v, size_t n) { if (n > 32) memset(d, v, n); else while (n--) *d++ = (uint8_t)v; }
static void dl__copy8(uint8_t *d, const uint8_t *s, size_t n) { if (n > 32) memcpy(d, s, n); else while (n--) *d++ = *s++; }

/* One conv2d layer of the int8 forward, image by image (a task each on the pool): the
   image is quantized (its own range, or the calibrated one), its patches gathered as
   rows of codes, the padding as the zero point (which stands for 0.0 exactly), then the
   int8 GEMM and the fused epilogue write the output pixels [oh ow][oc]. Each task works
   in its own thread's workspace. A grouped conv runs in float. */
typedef struct {
    const dl_layer *l;
    const dl__qdense *q;
    const float *x, *bias;
    float *y;
    int h, w, c, oh, ow, sh, sw, dh, dw, pt, pl, relu;
    size_t in_size, out_size;
} dl__qconv_job;

/* Workspace floats of one image: per-pixel scales and zero points, the image's codes,
   the patch rows. */
static size_t dl__qconv_ws(const dl__qconv_job *j)
{
    size_t pix = (size_t)j->oh * j->ow;
    return 2 * pix + ((j->in_size + 63) / 64 * 64 + pix * (size_t)j->q->in) / 4 + 32;
}

static void dl__qconv_task(void *ctx, int b)
{
    const dl__qconv_job *j = (const dl__qconv_job *)ctx;
    const dl_layer *l = j->l;
    const dl__qdense *q = j->q;
    int h = j->h, w = j->w, c = j->c, oh = j->oh, ow = j->ow, sh = j->sh, sw = j->sw, dh = j->dh, dw = j->dw;
    int pt = j->pt, pl = j->pl, r, oy, ox, ky, kx, z;
    size_t pix = (size_t)oh * ow;
    float *ws = dl__ws_get(dl__qconv_ws(j)), *sx, s;
    int *zx;
    uint8_t *img, *cols;
    dl__qepi_ctx e;
    DLCORE_ASSERT(ws != NULL);
    if (!ws) return;
    sx = ws;
    zx = (int *)(void *)(ws + pix);
    img = (uint8_t *)(void *)(ws + 2 * pix);
    img += (64 - ((uintptr_t)img & 63)) & 63;
    cols = img + (j->in_size + 63) / 64 * 64;
    dl__quant_row(j->x + (size_t)b * j->in_size, img, (int)j->in_size, q->has_range ? q->range : NULL, &s, &z);
    for (oy = 0; oy < oh; oy++)
        for (ox = 0; ox < ow; ox++) {
            uint8_t *row = cols + ((size_t)oy * ow + ox) * q->in;
            int ix0 = ox * sw - pl, k0 = 0, k1 = l->kw;
            /* the taps kx in [k0, k1) fall inside the image columns */
            while (k0 < k1 && ix0 + k0 * dw < 0) k0++;
            while (k1 > k0 && ix0 + (k1 - 1) * dw >= w) k1--;
            for (ky = 0; ky < l->kh; ky++) {
                int iy = oy * sh - pt + ky * dh;
                uint8_t *dst = row + (size_t)ky * l->kw * c;
                const uint8_t *src;
                if (iy < 0 || iy >= h || k0 == k1) { dl__fill8(dst, z, (size_t)l->kw * c); continue; }
                src = img + ((size_t)iy * w + (size_t)(ix0 + k0 * dw)) * c;   /* tap k0 */
                if (k0) dl__fill8(dst, z, (size_t)k0 * c);
                if (dw == 1) dl__copy8(dst + (size_t)k0 * c, src, (size_t)(k1 - k0) * c);
                else for (kx = k0; kx < k1; kx++) dl__copy8(dst + (size_t)kx * c, src + (size_t)(kx - k0) * dw * c, (size_t)c);
                if (k1 < l->kw) dl__fill8(dst + (size_t)k1 * c, z, (size_t)(l->kw - k1) * c);
            }
        }
    for (r = 0; r < (int)pix; r++) { sx[r] = s; zx[r] = z; }
    e.q = q; e.sx = sx; e.zx = zx; e.y = j->y + (size_t)b * j->out_size; e.relu = j->relu; e.bias = j->bias;
    dl__i8_gemm(dl__i8_variant(), (int)pix, q->out, q->in, cols, q->in, q->packed, NULL, 0, dl__qepi, &e);
}

static void dl__qconv(dl_model *m, int li, const float *x, float *y, int rows, dl_shape in, dl_shape out, int act,
                      float *calib)
{
    const dl_layer *l = &m->layers[li];
    dl__qconv_job j;
    int b, bi = dl__layer_param(m, li, 'b');
    memset(&j, 0, sizeof j);
    j.l = l; j.q = &m->q[li]; j.x = x; j.y = y; j.relu = act == DL_RELU;
    j.bias = bi >= 0 ? dl__param_value(m, bi).data : NULL;
    j.h = in.d[0]; j.w = in.d[1]; j.c = in.ndim == 3 ? in.d[2] : 1; j.oh = out.d[0]; j.ow = out.d[1];
    j.in_size = (size_t)j.h * j.w * j.c;
    j.out_size = dl_shape_numel(out);
    dl__layer_geometry(l, j.h, j.w, &j.sh, &j.sw, &j.dh, &j.dw, &j.pt, &j.pl);
    if (!j.q->in) {
        dl_conv2d_params p;
        memset(&p, 0, sizeof p);
        p.n = rows; p.h = j.h; p.w = j.w; p.c = j.c; p.oc = out.d[2]; p.kh = l->kh; p.kw = l->kw;
        p.stride_h = j.sh; p.stride_w = j.sw; p.dil_h = j.dh; p.dil_w = j.dw; p.pad_top = j.pt; p.pad_left = j.pl;
        p.oh = j.oh; p.ow = j.ow; p.groups = l->conv.groups;
        dl_conv2d_fwd(&p, x, dl__param_value(m, dl__layer_param(m, li, 'w')).data, j.bias, y);
        dl__qact(y, rows, out, act, l->alpha);
        return;
    }
    if (calib)
        for (b = 0; b < rows; b++) dl__minmax_scalar(x + (size_t)b * j.in_size, 0, j.in_size, &calib[2 * li], &calib[2 * li + 1]);
    dl__parallel_for(rows, dl__qconv_task, &j, dl__qconv_ws(&j));
    if (act != DL_RELU) dl__qact(y, rows, out, act, l->alpha);
}

/* Max and average pooling over the window's pixels inside the image (average: their
   mean, padding not counted, as the graph's op and Keras do). */
static void dl__qpool(const dl_layer *l, const float *x, float *y, int rows, dl_shape in, dl_shape out)
{
    int h = in.d[0], w = in.d[1], c = in.ndim == 3 ? in.d[2] : 1, oh = out.d[0], ow = out.d[1];
    int sh, sw, dh, dw, pt, pl, b, oy, ox, yy, xx, k;
    dl__layer_geometry(l, h, w, &sh, &sw, &dh, &dw, &pt, &pl);
    for (b = 0; b < rows; b++)
        for (oy = 0; oy < oh; oy++)
            for (ox = 0; ox < ow; ox++) {
                const float *xb = x + (size_t)b * h * w * c;
                float *o = y + (((size_t)b * oh + oy) * ow + ox) * c;
                int y0 = oy * sh - pt, x0 = ox * sw - pl, y1 = y0 + l->kh, x1 = x0 + l->kw;
                if (y0 < 0) y0 = 0;
                if (x0 < 0) x0 = 0;
                if (y1 > h) y1 = h;
                if (x1 > w) x1 = w;
                memcpy(o, xb + ((size_t)y0 * w + x0) * c, (size_t)c * sizeof(float));
                for (yy = y0; yy < y1; yy++)
                    for (xx = yy == y0 ? x0 + 1 : x0; xx < x1; xx++) {
                        const float *v = xb + ((size_t)yy * w + xx) * c;
                        if (l->kind == DL_LAYER_MAX_POOL2D) dl__ch_max(o, v, c);
                        else dl__ch_add(o, v, c);
                    }
                if (l->kind == DL_LAYER_AVG_POOL2D) {
                    float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                    for (k = 0; k < c; k++) o[k] *= inv;
                }
            }
}

/* Batch norm at inference, in place: x (x - mean) gamma / sqrt(var + eps) + beta per
   channel (the last axis), with the moving statistics. */
static int dl__qbatch_norm(dl_model *m, int li, float *x, int rows, dl_shape s, float *ab)
{
    static const char *const part[4] = { "gamma", "beta", "moving_mean", "moving_var" };
    const float *v[4];
    float eps = m->layers[li].bn.eps > 0.0f ? m->layers[li].bn.eps : 1e-3f;
    int c = s.d[s.ndim - 1], nb = 0, i, k, j;
    size_t r, n = (size_t)rows * (dl_shape_numel(s) / (size_t)c);
    for (i = 0; i <= li; i++) nb += m->layers[i].kind == DL_LAYER_BATCH_NORM;
    for (j = 0; j < 4; j++) {
        char name[48];
        int id = -1;
        snprintf(name, sizeof name, "batch_norm_%d.%s", nb, part[j]);
        for (i = 0; i < dl_graph_param_count(m->g) && id < 0; i++)
            if (!strcmp(dl_node_name(m->g, dl_graph_param(m->g, i)), name)) id = dl_graph_param(m->g, i);
        for (i = 0; i < dl_graph_state_count(m->g) && id < 0; i++)
            if (!strcmp(dl_node_name(m->g, dl_graph_state(m->g, i)), name)) id = dl_graph_state(m->g, i);
        if (id < 0) return dl__error("dl_predict: the model has no tensor '%s'", name);
        v[j] = dl_node_value(m->g, id).data;
    }
    for (k = 0; k < c; k++) {   /* y = x a + b */
        ab[k] = v[0][k] / sqrtf(v[3][k] + eps);
        ab[c + k] = v[1][k] - v[2][k] * ab[k];
    }
    for (r = 0; r < n; r++) dl__ch_affine(x + r * c, x + r * c, ab, ab + c, c, 0);
    return DL_OK;
}

/* The int8 forward of rows x[0..rows): leaves the logits (the final activation that the
   loss absorbs left out, as the graph does) in *out_buf, which points into the
   workspace. calib (or NULL): per layer [lo, hi] widened by each int8 layer's input.
   first >= 0: x is dl_predict's samples first.. and not yet checked for inf and NaN.
   A first layer that quantizes each row by its own range reads every value anyway and
   checks them on the way; otherwise they are scanned here. */
static int dl__qforward(dl_model *m, const float *x, int rows, float **out_buf, float *calib, long first)
{
    float *f0 = NULL, *f1 = NULL, *sx = NULL, *cur;
    int *zx = NULL, i, r, fused = dl__fused_activation(m->loss_kind), width = dl_input_size(m);
    dl_shape shape = m->input;
    uint8_t *codes = NULL;
    if (dl__qws_reserve(m, rows, &f0, &f1, &codes, &sx, &zx) != DL_OK) return DL_ERR;
    /* A layer that writes a new buffer reads the input in place; one that works in place
       (an activation, batch norm) needs a copy first. Flatten, reshape and dropout pass
       the values as they are. */
    for (i = 0; i < m->n_layers; i++) {
        int k = m->layers[i].kind;
        if (k != DL_LAYER_FLATTEN && k != DL_LAYER_RESHAPE && k != DL_LAYER_DROPOUT) break;
    }
    if (first >= 0 && !(i < m->n_layers && m->layers[i].kind == DL_LAYER_DENSE && m->q[i].in && !m->q[i].has_range)) {
        if (dl__predict_check(x, (size_t)rows, (size_t)width, (size_t)first) != DL_OK) return DL_ERR;
        first = -1;
    }
    if (i < m->n_layers && m->layers[i].kind != DL_LAYER_ACTIVATION && m->layers[i].kind != DL_LAYER_BATCH_NORM) {
        cur = (float *)(uintptr_t)x;   /* only read: the first write goes to f0 or f1 */
    } else {
        memcpy(f0, x, (size_t)rows * width * sizeof(float));
        cur = f0;
    }
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        int act = i == m->n_layers - 1 && l->activation == fused ? DL_LINEAR : l->activation;
        float *next = cur == f0 ? f1 : f0;
        dl_shape in = shape;
        uint64_t wc;
        if (dl__layer_shape(l, &shape, &wc) != DL_OK) return DL_ERR;
        if (l->kind == DL_LAYER_DENSE) {
            /* it acts on the last axis: each sample is width / k rows of k */
            const dl__qdense *q = &m->q[i];
            dl__qepi_ctx c;
            int bi = dl__layer_param(m, i, 'b'), k = in.d[in.ndim - 1], n = rows * (width / k);
            if (!q->in) {   /* a float layer in an int8 file */
                int wi = dl__layer_param(m, i, 'w'), j;
                dl_tensor w = dl__param_value(m, wi);
                int out = w.shape.d[1];
                const float *bias = bi >= 0 ? dl__param_value(m, bi).data : NULL;
                dl_sgemm(0, 0, n, out, k, 1.0f, cur, k, w.data, out, 0.0f, next, out);
                if (bias) for (r = 0; r < n; r++) for (j = 0; j < out; j++) next[(size_t)r * out + j] += bias[j];
                cur = next;
                dl__act_rows(cur, n, out, act, l->alpha);
            } else {
                if (calib) {
                    float *cr = calib + 2 * i;
                    for (r = 0; r < rows; r++) dl__minmax_scalar(cur + (size_t)r * width, 0, width, &cr[0], &cr[1]);
                }
                for (r = 0; r < n; r++)
                    if (dl__quant_row(cur + (size_t)r * k, codes + (size_t)r * k, k, q->has_range ? q->range : NULL, &sx[r],
                                      &zx[r]) && first >= 0)   /* names the first bad value: rows before were sound */
                        return dl__predict_check(x, (size_t)rows, (size_t)dl_input_size(m), (size_t)first);
                first = -1;
                c.q = q; c.sx = sx; c.zx = zx; c.y = next; c.relu = act == DL_RELU;
                c.bias = bi >= 0 ? dl__param_value(m, bi).data : NULL;
                dl__i8_gemm(dl__i8_variant(), n, q->out, q->in, codes, k, q->packed, NULL, 0, dl__qepi, &c);
                cur = next;
                if (act != DL_RELU) dl__act_rows(cur, n, q->out, act, l->alpha);
            }
        } else if (l->kind == DL_LAYER_CONV2D) {
            dl__qconv(m, i, cur, next, rows, in, shape, act, calib);
            cur = next;
        } else if (l->kind == DL_LAYER_MAX_POOL2D || l->kind == DL_LAYER_AVG_POOL2D) {
            dl__qpool(l, cur, next, rows, in, shape);
            cur = next;
        } else if (l->kind == DL_LAYER_GLOBAL_AVG_POOL2D) {
            int c = shape.d[0], k;
            size_t pix = dl_shape_numel(in) / (size_t)c, p;
            for (r = 0; r < rows; r++) {
                float *o = next + (size_t)r * c;
                for (k = 0; k < c; k++) o[k] = 0.0f;
                for (p = 0; p < pix; p++) dl__ch_add(o, cur + ((size_t)r * pix + p) * c, c);
                for (k = 0; k < c; k++) o[k] /= (float)pix;
            }
            cur = next;
        } else if (l->kind == DL_LAYER_BATCH_NORM) {
            if (dl__qbatch_norm(m, i, cur, rows, shape, (float *)(void *)codes) != DL_OK) return DL_ERR;
        } else if (l->kind == DL_LAYER_ACTIVATION) {
            dl__qact(cur, rows, shape, act, l->alpha);
        }
        width = (int)dl_shape_numel(shape);
    }
    *out_buf = cur;
    return DL_OK;
}

static int dl__qpredict(dl_model *m, const float *x, int n, float *out)
{
    int first, os = m->out_size, fused = dl__fused_activation(m->loss_kind), last = m->layers[m->n_layers - 1].activation;
    int chunk = dl__q_rows(m);
    for (first = 0; first < n; first += chunk) {
        int cur = n - first < chunk ? n - first : chunk;
        float *y;
        if (dl__qforward(m, x + (size_t)first * dl_input_size(m), cur, &y, NULL, first) != DL_OK) return DL_ERR;
        if (last == fused) dl__act_rows(y, cur, os, last, 0.0f);
        memcpy(out + (size_t)first * os, y, (size_t)cur * os * sizeof(float));
    }
    return DL_OK;
}

/* dl__eval for an int8 model: the same loss and accuracy, from its logits. */
static int dl__qeval(dl_model *m, const dl_dataset *d, float *loss, float *acc, int *conf)
{
    double sum = 0.0;
    long correct = 0;
    int first, os = m->out_size, per = m->loss_kind == DL_LOSS_BCE ? os : 1, chunk = dl__q_rows(m);
    float *xb = (float *)DLCORE_MALLOC((size_t)chunk * d->x_size * sizeof(float));
    if (!xb) return dl__error("dl_evaluate: out of memory");
    for (first = 0; first < d->n; first += chunk) {
        int cur = d->n - first < chunk ? d->n - first : chunk, i, j;
        float *z;
        const float *y = d->y + (size_t)first * d->y_size;
        if (d->x) memcpy(xb, d->x + (size_t)first * d->x_size, (size_t)cur * d->x_size * sizeof(float));
        else dl__u8_to_f32(d->x8 + (size_t)first * d->x_size, xb, (size_t)cur * d->x_size);
        if (dl__qforward(m, xb, cur, &z, NULL, -1) != DL_OK) { DLCORE_FREE(xb); return DL_ERR; }
        for (i = 0; i < cur; i++) {
            const float *zi = z + (size_t)i * os;
            if (m->loss_kind == DL_LOSS_SPARSE_CE) {
                double mx = zi[0], s = 0.0;
                int t = (int)y[i], p = dl__argmax(zi, os);
                for (j = 1; j < os; j++) if (zi[j] > mx) mx = zi[j];
                for (j = 0; j < os; j++) s += exp((double)zi[j] - mx);
                sum += mx + log(s) - (t >= 0 && t < os ? zi[t] : 0.0f);
                correct += p == t;
                if (conf && t >= 0 && t < m->n_classes && m->n_classes <= DL_MAX_CLASSES) conf[t * m->n_classes + p]++;
            } else {
                for (j = 0; j < os; j++) {
                    double zz = zi[j], yy = y[(size_t)i * os + j];
                    if (m->loss_kind == DL_LOSS_BCE) {
                        int t = yy > 0.5, p = zz > 0.0;
                        sum += (zz > 0 ? zz : 0) - zz * yy + log1p(exp(-fabs(zz)));
                        correct += t == p;
                        if (conf && m->n_classes == 2) conf[t * 2 + p]++;
                    } else {
                        sum += (zz - yy) * (zz - yy);
                    }
                }
            }
        }
    }
    DLCORE_FREE(xb);
    *loss = (float)(m->loss_kind == DL_LOSS_SPARSE_CE ? sum / d->n : sum / ((double)d->n * os));
    *acc = m->loss_kind == DL_LOSS_MSE ? NAN : (float)((double)correct / ((double)d->n * per));
    return DL_OK;
}

DLDEF int dl_quantize_int8(dl_model *m, const dl_quant_opts *opts)
{
    int i;
    if (!m || !m->g) return dl__error("dl_quantize_int8: compile or load the model first");
    if (m->q) return dl__error("dl_quantize_int8: the model is already int8");
    if (opts && opts->calib && dl__check_data(m, opts->calib, "dl_quantize_int8 (calibration data)") != DL_OK) return DL_ERR;
    if (dl__enc_alloc(m) != DL_OK) return dl__error("dl_quantize_int8: out of memory");
    m->q = (dl__qdense *)DLCORE_MALLOC((size_t)m->n_layers * sizeof(dl__qdense));
    if (!m->q) return dl__error("dl_quantize_int8: out of memory");
    memset(m->q, 0, (size_t)m->n_layers * sizeof(dl__qdense));
    for (i = 0; i < m->n_layers; i++) {
        int wi = dl__layer_param(m, i, 'w'), out;
        dl_tensor t;
        if (wi < 0 || !dl__int8_layer(&m->layers[i])) continue;   /* a grouped conv stays float */
        t = dl__param_value(m, wi);
        out = t.shape.d[t.shape.ndim - 1];   /* dense [in, out]; conv [kh, kw, c, oc] as [kh kw c, oc] */
        if (dl__qdense_from(&m->q[i], t.data, (int)(dl_shape_numel(t.shape) / (size_t)out), out) != DL_OK) {
            dl__compress_free(m);
            return dl__error("dl_quantize_int8: out of memory");
        }
        m->enc[wi] = DL_ENC_INT8;
    }
    if (opts && opts->calib) {
        /* One range per layer input over the calibration batches, taken layer by layer
           on the int8 model itself (dynamic ranges meanwhile), as a deployed model sees
           its inputs. */
        const dl_dataset *d = opts->calib;
        int batches = opts->calib_batches > 0 ? opts->calib_batches : 8, first, chunk = dl__q_rows(m);
        int total = (long)batches * DL__Q_ROWS < d->n ? batches * DL__Q_ROWS : d->n;
        float *calib = (float *)DLCORE_MALLOC((size_t)m->n_layers * 2 * sizeof(float));
        float *xb = (float *)DLCORE_MALLOC((size_t)chunk * d->x_size * sizeof(float));
        int rc = calib && xb ? DL_OK : dl__error("dl_quantize_int8: out of memory");
        for (i = 0; calib && i < 2 * m->n_layers; i++) calib[i] = 0.0f;
        for (first = 0; rc == DL_OK && first < total; first += chunk) {
            int cur = total - first < chunk ? total - first : chunk;
            float *z;
            if (d->x) memcpy(xb, d->x + (size_t)first * d->x_size, (size_t)cur * d->x_size * sizeof(float));
            else dl__u8_to_f32(d->x8 + (size_t)first * d->x_size, xb, (size_t)cur * d->x_size);
            rc = dl__qforward(m, xb, cur, &z, calib, -1);
        }
        for (i = 0; rc == DL_OK && i < m->n_layers; i++)
            if (m->q[i].in) { m->q[i].has_range = 1; m->q[i].range[0] = calib[2 * i]; m->q[i].range[1] = calib[2 * i + 1]; }
        DLCORE_FREE(calib);
        DLCORE_FREE(xb);
        if (rc != DL_OK) { dl__compress_free(m); return DL_ERR; }
    }
    return DL_OK;
}

DLDEF int dl_model_dequantize(dl_model *m)
{
    int i;
    if (!m || !m->q) return dl__error("dl_model_dequantize: the model is not int8");
    for (i = 0; i < m->n_layers; i++) dl__qdense_free(&m->q[i]);
    DLCORE_FREE(m->q);
    m->q = NULL;
    for (i = 0; m->enc && i < dl_graph_param_count(m->g); i++) if (m->enc[i] == DL_ENC_INT8) m->enc[i] = DL_ENC_F32;
    return DL_OK;
}

DLDEF int dl_model_int8_weights(const dl_model *m, int layer, const int8_t **w, const float **scales, const float **range)
{
    if (!m || !m->q || layer < 0 || layer >= m->n_layers || !m->q[layer].in)
        return dl__error("dl_model_int8_weights: layer %d has no int8 weights", layer);
    if (w) *w = m->q[layer].wt;
    if (scales) *scales = m->q[layer].scale;
    if (range) *range = m->q[layer].has_range ? m->q[layer].range : NULL;
    return DL_OK;
}

DLDEF int dl_model_to_fp16(dl_model *m)
{
    int i;
    size_t k;
    if (!m || !m->g) return dl__error("dl_model_to_fp16: compile or load the model first");
    if (dl__enc_alloc(m) != DL_OK) return dl__error("dl_model_to_fp16: out of memory");
    for (i = 0; i < dl_graph_param_count(m->g); i++) {
        dl_tensor t = dl__param_value(m, i);
        if (m->enc[i] == DL_ENC_INT8) continue;
        for (k = 0; k < dl_shape_numel(t.shape); k++) t.data[k] = dl_f16_to_f32(dl_f32_to_f16(t.data[k]));
        m->enc[i] = DL_ENC_F16;
    }
    return DL_OK;
}

/* ---- pruning ---- */

static int dl__cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Mask of tensor t at sparsity s: the round(s n) smallest |w| go (ties by position). */
static int dl__prune_mask(const dl_tensor *t, float s, unsigned char *mask)
{
    size_t n = dl_shape_numel(t->shape), k = (size_t)((double)s * (double)n + 0.5), i, cut = 0;
    float *a, thr;
    if (k == 0) { memset(mask, 1, n); return DL_OK; }
    if (k > n) k = n;
    a = (float *)DLCORE_MALLOC(n * sizeof(float));
    if (!a) return dl__error("dl_prune: out of memory");
    for (i = 0; i < n; i++) a[i] = fabsf(t->data[i]);
    qsort(a, n, sizeof(float), dl__cmp_float);
    thr = a[k - 1];
    DLCORE_FREE(a);
    for (i = 0; i < n; i++) { mask[i] = !(fabsf(t->data[i]) < thr); cut += !mask[i]; }
    for (i = 0; i < n && cut < k; i++)
        if (mask[i] && fabsf(t->data[i]) == thr) { mask[i] = 0; cut++; }
    return DL_OK;
}

static float dl__prune_sparsity(const dl__pruner *p)
{
    double t = p->end_step > 0 ? (double)p->step / (double)p->end_step : 1.0;
    if (t > 1.0) t = 1.0;
    return (float)(p->o.sparsity + (p->o.initial_sparsity - p->o.sparsity) * pow(1.0 - t, (double)p->o.power));
}

/* After each optimizer step: new masks every `frequency` steps (and at the last), and
   the masks applied, so a pruned weight stays zero whatever its gradient says. */
static int dl__prune_apply(dl_model *m, int update)
{
    dl__pruner *p = m->prune;
    int i;
    for (i = 0; i < dl_graph_param_count(m->g); i++) {
        dl_tensor t;
        size_t k, n;
        if (!p->mask[i]) continue;
        t = dl__param_value(m, i);
        n = dl_shape_numel(t.shape);
        if (update && dl__prune_mask(&t, dl__prune_sparsity(p), p->mask[i]) != DL_OK) return DL_ERR;
        for (k = 0; k < n; k++) if (!p->mask[i][k]) t.data[k] = 0.0f;
    }
    return DL_OK;
}

static int dl__prune_after_step(dl_model *m)
{
    dl__pruner *p = m->prune;
    p->step++;
    return dl__prune_apply(m, p->step % p->o.frequency == 0 || p->step == p->end_step);
}

DLDEF int dl_prune(dl_model *m, const dl_prune_opts *opts, const dl_dataset *train, const dl_fit_opts *fit)
{
    dl__pruner p;
    int i, n, rc = DL_OK;
    if (!m || !m->g) return dl__error("dl_prune: compile or load the model first");
    if (!opts) return dl__error("dl_prune: NULL options");
    if (m->q) return dl__error("dl_prune: the model is int8; prune the float model, then quantize");
    if (!(opts->sparsity >= 0.0f && opts->sparsity < 1.0f))
        return dl__error("dl_prune: sparsity %g is not in [0, 1)", (double)opts->sparsity);
    if (!(opts->initial_sparsity >= 0.0f && opts->initial_sparsity <= opts->sparsity))
        return dl__error("dl_prune: initial sparsity %g is not in [0, %g]", (double)opts->initial_sparsity, (double)opts->sparsity);
    if (train && dl__check_data(m, train, "dl_prune") != DL_OK) return DL_ERR;
    if (dl__enc_alloc(m) != DL_OK) return dl__error("dl_prune: out of memory");
    memset(&p, 0, sizeof p);
    p.o = *opts;
    if (!(p.o.power > 0.0f)) p.o.power = 3.0f;
    if (p.o.frequency <= 0) p.o.frequency = 100;
    n = dl_graph_param_count(m->g);
    p.mask = (unsigned char **)DLCORE_MALLOC((size_t)n * sizeof *p.mask);
    if (!p.mask) return dl__error("dl_prune: out of memory");
    for (i = 0; i < n; i++) {
        int l = dl__param_layer(m, i);
        p.mask[i] = NULL;
        if (l < 0 || m->layers[l].kind != DL_LAYER_DENSE) continue;   /* dense kernels only */
        p.mask[i] = (unsigned char *)DLCORE_MALLOC(dl_shape_numel(dl__param_value(m, i).shape));
        if (!p.mask[i]) { rc = dl__error("dl_prune: out of memory"); break; }
        memset(p.mask[i], 1, dl_shape_numel(dl__param_value(m, i).shape));
    }
    m->prune = &p;
    if (rc == DL_OK && train) {
        dl_fit_opts f;
        int bs, ntrain;
        if (fit) f = *fit; else memset(&f, 0, sizeof f);
        bs = f.batch > 0 ? f.batch : 32;
        ntrain = train->n - (f.validation || f.validation_split <= 0.0f ? 0 : (int)((double)train->n * f.validation_split));
        p.end_step = (long)(f.epochs > 0 ? f.epochs : 1) * ((ntrain + bs - 1) / bs);
        rc = dl__prune_apply(m, 1);   /* step 0: the initial sparsity */
        if (rc == DL_OK) rc = dl_fit(m, train, &f);
    }
    if (rc == DL_OK) { p.step = p.end_step; rc = dl__prune_apply(m, 1); }   /* exactly the target */
    m->prune = NULL;
    for (i = 0; i < n; i++) {
        if (p.mask[i] && rc == DL_OK) m->sparse[i] = 1;
        DLCORE_FREE(p.mask[i]);
    }
    DLCORE_FREE(p.mask);
    return rc;
}

/* ---- 5. Model files ----------------------------------------------------------------- */

typedef struct dl__wbuf { unsigned char *p; size_t len, cap; int failed; } dl__wbuf;

static void dl__put(dl__wbuf *b, const void *data, size_t n)
{
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        unsigned char *p;
        while (cap < b->len + n) cap *= 2;
        p = (unsigned char *)DLCORE_REALLOC(b->p, cap);
        if (!p) { b->failed = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* Little-endian on every host: bytes are written one by one. */
static void dl__put_u32(dl__wbuf *b, uint32_t v)
{
    unsigned char c[4];
    c[0] = (unsigned char)v; c[1] = (unsigned char)(v >> 8); c[2] = (unsigned char)(v >> 16); c[3] = (unsigned char)(v >> 24);
    dl__put(b, c, 4);
}

static void dl__put_f32(dl__wbuf *b, float f) { uint32_t u; memcpy(&u, &f, 4); dl__put_u32(b, u); }

static void dl__put_u64(dl__wbuf *b, uint64_t v) { dl__put_u32(b, (uint32_t)v); dl__put_u32(b, (uint32_t)(v >> 32)); }

static void dl__put_optimizer(dl__wbuf *b, const dl_optimizer *o)
{
    dl__put_u32(b, (uint32_t)o->kind); dl__put_u32(b, (uint32_t)o->nesterov); dl__put_u32(b, (uint32_t)o->schedule);
    dl__put_u32(b, (uint32_t)o->step_size); dl__put_u32(b, (uint32_t)o->t_max);
    dl__put_f32(b, o->lr); dl__put_f32(b, o->momentum); dl__put_f32(b, o->beta1); dl__put_f32(b, o->beta2);
    dl__put_f32(b, o->eps); dl__put_f32(b, o->weight_decay); dl__put_f32(b, o->l1); dl__put_f32(b, o->l2);
    dl__put_f32(b, o->clip_norm); dl__put_f32(b, o->gamma); dl__put_f32(b, o->lr_min);
}

static int dl__write_file_atomic(const char *path, const unsigned char *data, size_t len)
{
    char tmp[4096];
    FILE *f;
    int ok;
    if (strlen(path) + 5 > sizeof tmp) return dl__error("dl_save: path too long: %s", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) return dl__error("dl_save: cannot create '%s'", tmp);
    ok = fwrite(data, 1, len, f) == len;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok) { remove(tmp); return dl__error("dl_save: writing '%s' failed (disk full?)", tmp); }
#ifdef _WIN32
    /* Windows' rename() fails when the target exists; MoveFileEx replaces it in one step. */
    ok = MoveFileExA(tmp, path, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH) != 0;
#else
    ok = rename(tmp, path) == 0;
#endif
    if (!ok) { remove(tmp); return dl__error("dl_save: cannot rename '%s' to '%s'", tmp, path); }
    return DL_OK;
}

/* Tensor i of a model file: the parameters, then the dl_state tensors. */
static int dl__file_tensor(const dl_model *m, int i)
{
    int np = dl_graph_param_count(m->g);
    return i < np ? dl_graph_param(m->g, i) : dl_graph_state(m->g, i - np);
}

static int dl__file_tensor_count(const dl_model *m) { return dl_graph_param_count(m->g) + dl_graph_state_count(m->g); }

/* Version 2's fields of a layer after v1's five, in file order. */
#define DL__LAYER_V2_INTS 29
static void dl__layer_v2_ints(dl_layer *l, int **f)
{
    int i = 0, k;
    f[i++] = &l->kh; f[i++] = &l->kw;
    f[i++] = &l->conv.stride_h; f[i++] = &l->conv.stride_w; f[i++] = &l->conv.dil_h; f[i++] = &l->conv.dil_w;
    f[i++] = &l->conv.groups; f[i++] = &l->conv.padding; f[i++] = &l->conv.pad_top; f[i++] = &l->conv.pad_bottom;
    f[i++] = &l->conv.pad_left; f[i++] = &l->conv.pad_right; f[i++] = &l->conv.no_bias;
    f[i++] = &l->pool.stride_h; f[i++] = &l->pool.stride_w; f[i++] = &l->pool.padding; f[i++] = &l->pool.pad_top;
    f[i++] = &l->pool.pad_bottom; f[i++] = &l->pool.pad_left; f[i++] = &l->pool.pad_right;
    f[i++] = NULL; f[i++] = NULL;   /* bn momentum and eps: floats */
    f[i++] = &l->shape.ndim;
    for (k = 0; k < DL_MAX_DIMS; k++) f[i++] = &l->shape.d[k];
    f[i++] = NULL; f[i++] = NULL;   /* room: written as 0, read and ignored */
}

static const char *const dl__enc_names[] = { "?", "f32", "f16", "int8", "sparse-f32", "sparse-f16", "sparse-int8" };
DLDEF const char *dl_encoding_name(int e) { return e >= DL_ENC_F32 && e <= DL_ENC_SPARSE_INT8 ? dl__enc_names[e] : "?"; }

static int dl__tensor_encoding(const dl_model *m, int i)
{
    int base;
    if (i >= dl_graph_param_count(m->g)) return DL_ENC_F32;   /* dl_state tensors */
    base = m->enc ? (int)m->enc[i] : (int)DL_ENC_F32;
    return m->sparse && m->sparse[i] ? base + 3 : base;
}

/* A tensor's data in its encoding (see the format above). The int8 codes and scales
   come from the layer's int8 form, so a saved int8 model reloads bit for bit. */
static void dl__put_payload(dl__wbuf *b, const dl_model *m, int i)
{
    dl_tensor t = dl_node_value(m->g, dl__file_tensor(m, i));
    size_t n = dl_shape_numel(t.shape), k;
    int enc = dl__tensor_encoding(m, i), sparse = enc > DL_ENC_INT8, base = sparse ? enc - 3 : enc, j;
    const dl__qdense *q = base == DL_ENC_INT8 ? &m->q[dl__param_layer(m, i)] : NULL;
    if (sparse) {
        uint32_t nnz = 0;
        unsigned char byte = 0;
        for (k = 0; k < n; k++) nnz += t.data[k] != 0.0f;
        dl__put_u32(b, nnz);
        for (k = 0; k < n; k++) {
            if (t.data[k] != 0.0f) byte |= (unsigned char)(1u << (k % 8));
            if (k % 8 == 7 || k == n - 1) { dl__put(b, &byte, 1); byte = 0; }
        }
    }
    if (q) {
        dl__put_u32(b, (uint32_t)q->has_range);
        dl__put_f32(b, q->has_range ? q->range[0] : 0.0f);
        dl__put_f32(b, q->has_range ? q->range[1] : 0.0f);
        for (j = 0; j < q->out; j++) dl__put_f32(b, q->scale[j]);
    }
    for (k = 0; k < n; k++) {
        if (sparse && t.data[k] == 0.0f) continue;
        if (base == DL_ENC_F32) dl__put_f32(b, t.data[k]);
        else if (base == DL_ENC_F16) {
            uint16_t h = dl_f32_to_f16(t.data[k]);
            unsigned char c[2];
            c[0] = (unsigned char)h; c[1] = (unsigned char)(h >> 8);
            dl__put(b, c, 2);
        } else {
            dl__put(b, &q->wt[k], 1);
        }
    }
}

DLDEF int dl_model_tensor_info(const dl_model *m, int i, dl_tensor_info *info)
{
    dl__wbuf b;
    dl_tensor t;
    size_t k, n;
    if (!info || i < 0 || i >= dl_model_tensor_count(m))
        return dl__error("dl_model_tensor_info: no tensor %d (the model has %d)", i, dl_model_tensor_count(m));
    memset(&b, 0, sizeof b);
    dl__put_payload(&b, m, i);
    DLCORE_FREE(b.p);
    if (b.failed) return dl__error("dl_model_tensor_info: out of memory");
    t = dl__param_value(m, i);
    n = dl_shape_numel(t.shape);
    info->name = dl_node_name(m->g, dl_graph_param(m->g, i));
    info->shape = t.shape;
    info->encoding = dl__tensor_encoding(m, i);
    info->bytes = b.len;
    for (info->nonzeros = 0, k = 0; k < n; k++) info->nonzeros += t.data[k] != 0.0f;
    return DL_OK;
}

DLDEF int dl_save(const dl_model *m, const char *path)
{
    dl__wbuf b;
    int i, j, rc;
    if (!m || !m->g) return dl__error("dl_save: compile the model first");
    if (!path) return dl__error("dl_save: NULL path");
    memset(&b, 0, sizeof b);
    dl__put(&b, "DLCM", 4);
    dl__put_u32(&b, DL_MODEL_FORMAT_VERSION);
    dl__put_u64(&b, 0);   /* file size, patched below */
    dl__put_u32(&b, (uint32_t)m->input.ndim);
    for (i = 0; i < DL_MAX_DIMS; i++) dl__put_u32(&b, (uint32_t)m->input.d[i]);
    dl__put_u32(&b, (uint32_t)m->loss_kind);
    dl__put_optimizer(&b, &m->opt);
    dl__put_u32(&b, (uint32_t)m->epochs_done);
    dl__put_u32(&b, (uint32_t)m->n_layers);
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        dl__put_u32(&b, (uint32_t)l->kind); dl__put_u32(&b, (uint32_t)l->units); dl__put_u32(&b, (uint32_t)l->activation);
        dl__put_f32(&b, l->rate); dl__put_f32(&b, l->alpha);
        {
            dl_layer c = *l;
            int *f[DL__LAYER_V2_INTS], k;
            dl__layer_v2_ints(&c, f);
            for (k = 0; k < DL__LAYER_V2_INTS; k++) {
                if (k == 20) dl__put_f32(&b, c.bn.momentum);
                else if (k == 21) dl__put_f32(&b, c.bn.eps);
                else dl__put_u32(&b, f[k] ? (uint32_t)*f[k] : 0u);
            }
        }
    }
    dl__put_u32(&b, (uint32_t)dl__file_tensor_count(m));
    for (i = 0; i < dl__file_tensor_count(m); i++) {
        int id = dl__file_tensor(m, i);
        const char *name = dl_node_name(m->g, id);
        dl_tensor t = dl_node_value(m->g, id);
        dl__put_u32(&b, (uint32_t)strlen(name));
        dl__put(&b, name, strlen(name));
        dl__put_u32(&b, (uint32_t)dl__tensor_encoding(m, i));
        dl__put_u32(&b, (uint32_t)t.shape.ndim);
        for (j = 0; j < t.shape.ndim; j++) dl__put_u32(&b, (uint32_t)t.shape.d[j]);
        dl__put_payload(&b, m, i);
    }
    if (!b.failed) {
        uint64_t size = (uint64_t)b.len + 4;
        for (i = 0; i < 8; i++) b.p[8 + i] = (unsigned char)(size >> (8 * i));
        dl__put_u32(&b, dl_crc32(0, b.p, b.len));
    }
    rc = b.failed ? dl__error("dl_save: out of memory") : dl__write_file_atomic(path, b.p, b.len);
    DLCORE_FREE(b.p);
    return rc;
}

/* A bounds-checked reader: every get names the field it wanted when the file
   ends too soon, so truncation reports what and where. */
typedef struct dl__rbuf { const unsigned char *p; size_t len, pos; const char *path; int failed; } dl__rbuf;

static int dl__need(dl__rbuf *r, size_t n, const char *what)
{
    if (r->failed) return 0;
    if (n > r->len - r->pos) {
        r->failed = 1;
        dl__error("%s: %s needs %zu bytes at offset %zu but only %zu remain", r->path, what, n, r->pos, r->len - r->pos);
        return 0;
    }
    return 1;
}

static uint32_t dl__get_u32(dl__rbuf *r, const char *what)
{
    const unsigned char *c;
    if (!dl__need(r, 4, what)) return 0;
    c = r->p + r->pos;
    r->pos += 4;
    return (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
}

static float dl__get_f32(dl__rbuf *r, const char *what) { uint32_t u = dl__get_u32(r, what); float f; memcpy(&f, &u, 4); return f; }

static void dl__get_optimizer(dl__rbuf *r, dl_optimizer *o)
{
    memset(o, 0, sizeof *o);
    o->kind = (int)dl__get_u32(r, "optimizer"); o->nesterov = (int)dl__get_u32(r, "optimizer");
    o->schedule = (int)dl__get_u32(r, "optimizer"); o->step_size = (int)dl__get_u32(r, "optimizer");
    o->t_max = (int)dl__get_u32(r, "optimizer");
    o->lr = dl__get_f32(r, "optimizer"); o->momentum = dl__get_f32(r, "optimizer");
    o->beta1 = dl__get_f32(r, "optimizer"); o->beta2 = dl__get_f32(r, "optimizer");
    o->eps = dl__get_f32(r, "optimizer"); o->weight_decay = dl__get_f32(r, "optimizer");
    o->l1 = dl__get_f32(r, "optimizer"); o->l2 = dl__get_f32(r, "optimizer");
    o->clip_norm = dl__get_f32(r, "optimizer"); o->gamma = dl__get_f32(r, "optimizer");
    o->lr_min = dl__get_f32(r, "optimizer");
}

/* Puts "path: " before the message a nested call left. */
static int dl__error_in(const char *path, const char *what)
{
    char inner[sizeof dl__errbuf];
    memcpy(inner, dl__errbuf, sizeof inner);
    return dl__error("%s: %s%s", path, what, inner);
}

/* Header checks that need no parsing: size, magic, version, length, checksum. */
static int dl__check_envelope(const unsigned char *p, size_t len, const char *path)
{
    uint32_t version, stored, actual;
    uint64_t size = 0;
    int i;
    if (len < 24) return dl__error("%s: %zu bytes is too short for a dlcore model file", path, len);
    if (memcmp(p, "DLCM", 4) != 0) return dl__error("%s: not a dlcore model file (no DLCM magic at offset 0)", path);
    version = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    if (version < 1 || version > DL_MODEL_FORMAT_VERSION)
        return dl__error("%s: format version %u is not supported (this build reads versions 1 to %d)", path, version, DL_MODEL_FORMAT_VERSION);
    for (i = 0; i < 8; i++) size |= (uint64_t)p[8 + i] << (8 * i);
    if (size != len)
        return dl__error("%s: the header says %llu bytes but the file has %zu: %s", path, (unsigned long long)size, len,
                         size > len ? "truncated" : "trailing bytes");
    stored = (uint32_t)p[len - 4] | (uint32_t)p[len - 3] << 8 | (uint32_t)p[len - 2] << 16 | (uint32_t)p[len - 1] << 24;
#ifdef DLCORE_FUZZ_NO_CRC
    actual = stored;   /* the fuzzer's mutations must reach the parser */
#else
    actual = dl_crc32(0, p, len - 4);
#endif
    if (stored != actual)
        return dl__error("%s: checksum mismatch (stored %08x, computed %08x): the file is corrupted", path, stored, actual);
    return DL_OK;
}

/* The encoded tensors (dtype 2..6): every count is checked against the bytes left
   before it is used, every error names the tensor and the offset. */
static int dl__read_encoded(dl__rbuf *r, dl_model *m, int i, const char *name, int dtype, dl_tensor t)
{
    size_t n = dl_shape_numel(t.shape), k, start = r->pos, nnz = n, vsize;
    int sparse = dtype > DL_ENC_INT8, base = sparse ? dtype - 3 : dtype, layer = -1, rc = DL_OK;
    const unsigned char *mask = NULL;
    dl__qdense *q = NULL;
    char what[96];
    snprintf(what, sizeof what, "tensor '%s' data", name);
    if (base == DL_ENC_INT8) {
        layer = dl__param_layer(m, i);
        if (layer < 0 || !dl__int8_layer(&m->layers[layer]))
            return dl__error("%s: tensor '%s' is int8 (dtype %d, offset %zu) but only dense and ungrouped conv2d kernels "
                             "can be", r->path, name, dtype, start - 12 - 4 * (size_t)t.shape.ndim);
    }
    if (dl__enc_alloc(m) != DL_OK) return dl__error("%s: out of memory", r->path);
    if (sparse) {
        size_t bytes = (n + 7) / 8, cnt = 0;
        nnz = dl__get_u32(r, what);
        if (!r->failed && nnz > n)
            return dl__error("%s: tensor '%s' claims %zu non-zeros of %zu at offset %zu", r->path, name, nnz, n, start);
        if (!dl__need(r, bytes, what)) return DL_ERR;
        mask = r->p + r->pos;
        for (k = 0; k < n; k++) cnt += mask[k / 8] >> (k % 8) & 1u;
        if (cnt != nnz || (n % 8 && mask[bytes - 1] >> (n % 8)))
            return dl__error("%s: tensor '%s' has a bitmask at offset %zu with %zu bits set (and stray bits past the end: %s); "
                             "its count says %zu", r->path, name, r->pos, cnt,
                             n % 8 && mask[bytes - 1] >> (n % 8) ? "yes" : "no", nnz);
        r->pos += bytes;
    }
    if (base == DL_ENC_INT8) {
        uint32_t flags;
        int j, out = t.shape.d[t.shape.ndim - 1];
        if (!m->q) {
            m->q = (dl__qdense *)DLCORE_MALLOC((size_t)m->n_layers * sizeof(dl__qdense));
            if (!m->q) return dl__error("%s: out of memory", r->path);
            memset(m->q, 0, (size_t)m->n_layers * sizeof(dl__qdense));
        }
        q = &m->q[layer];
        dl__qdense_free(q);
        if (dl__qdense_alloc(q, (int)(n / (size_t)out), out) != DL_OK) return dl__error("%s: out of memory", r->path);
        flags = dl__get_u32(r, what);
        q->range[0] = dl__get_f32(r, what);
        q->range[1] = dl__get_f32(r, what);
        if (r->failed) return DL_ERR;
        q->has_range = flags == 1;
        if (flags > 1 || (flags && !(q->range[0] <= 0.0f && q->range[1] >= 0.0f && isfinite(q->range[0]) && isfinite(q->range[1]))))
            return dl__error("%s: tensor '%s' has int8 flags %u with activation range [%g, %g] at offset %zu", r->path, name,
                             flags, (double)q->range[0], (double)q->range[1], r->pos - 12);
        if (!dl__need(r, (size_t)out * 4, what)) return DL_ERR;
        for (j = 0; j < out; j++) {
            q->scale[j] = dl__get_f32(r, what);
            if (!(q->scale[j] > 0.0f) || !isfinite(q->scale[j]))
                return dl__error("%s: tensor '%s' has scale %g for output %d at offset %zu (positive and finite needed)",
                                 r->path, name, (double)q->scale[j], j, r->pos - 4);
        }
    }
    vsize = base == DL_ENC_F32 ? 4 : base == DL_ENC_F16 ? 2 : 1;
    if (!dl__need(r, nnz * vsize, what)) return DL_ERR;
    if (base == DL_ENC_F16) {   /* widened in one pass (F16C / fcvt), then scattered */
        uint16_t *h = (uint16_t *)DLCORE_MALLOC(nnz * 2 + 2);
        float *f = (float *)DLCORE_MALLOC(nnz * 4 + 4);
        size_t v = 0;
        if (!h || !f) { DLCORE_FREE(h); DLCORE_FREE(f); return dl__error("%s: out of memory", r->path); }
        for (k = 0; k < nnz; k++) h[k] = (uint16_t)(r->p[r->pos + 2 * k] | r->p[r->pos + 2 * k + 1] << 8);
        r->pos += nnz * 2;
        dl__f16_widen(h, f, nnz, -1);
        for (k = 0; k < n; k++) t.data[k] = mask && !(mask[k / 8] >> (k % 8) & 1u) ? 0.0f : f[v++];
        DLCORE_FREE(h);
        DLCORE_FREE(f);
    }
    for (k = 0; k < n && base != DL_ENC_F16; k++) {
        const unsigned char *c = r->p + r->pos;
        if (mask && !(mask[k / 8] >> (k % 8) & 1u)) {
            t.data[k] = 0.0f;
            if (q) q->wt[k] = 0;
            continue;
        }
        if (base == DL_ENC_F32) t.data[k] = dl__get_f32(r, what);
        else { q->wt[k] = (int8_t)c[0]; r->pos += 1; }
    }
    if (q) rc = dl__qdense_finish(q, t.data) == DL_OK ? DL_OK : dl__error("%s: out of memory", r->path);
    m->enc[i] = (unsigned char)base;
    m->sparse[i] = (unsigned char)sparse;
    return rc;
}

static int dl__read_tensor(dl__rbuf *r, dl_model *m, int i)
{
    char name[48];
    int id = dl__file_tensor(m, i), j;
    dl_tensor t = dl_node_value(m->g, id);
    uint32_t nlen, dtype, ndim, dims[DL_MAX_DIMS];
    uint64_t numel = 1;
    size_t k;
    nlen = dl__get_u32(r, "tensor name length");
    if (!r->failed && (nlen < 1 || nlen >= sizeof name))
        return dl__error("%s: tensor %d has a name of %u bytes (1..47 allowed) at offset %zu", r->path, i, nlen, r->pos - 4);
    if (!dl__need(r, nlen, "tensor name")) return DL_ERR;
    memcpy(name, r->p + r->pos, nlen);
    name[nlen] = '\0';
    r->pos += nlen;
    dtype = dl__get_u32(r, "tensor dtype");
    ndim = dl__get_u32(r, "tensor rank");
    if (r->failed) return DL_ERR;
    if (dtype < DL_ENC_F32 || dtype > DL_ENC_SPARSE_INT8)
        return dl__error("%s: tensor '%s' has dtype %u at offset %zu (known: 1 f32, 2 f16, 3 int8, 4-6 sparse f32/f16/int8)",
                         r->path, name, dtype, r->pos - 8);
    if (ndim < 1 || ndim > DL_MAX_DIMS) return dl__error("%s: tensor '%s' has %u dims (1..4 allowed)", r->path, name, ndim);
    for (j = 0; j < (int)ndim; j++) {
        dims[j] = dl__get_u32(r, "tensor dims");
        numel *= dims[j];
        if (numel > ((uint64_t)1 << 40)) numel = (uint64_t)1 << 40;   /* saturate: reported below */
    }
    if (r->failed) return DL_ERR;
    if (dtype == DL_ENC_F32 && numel * 4 > r->len - r->pos)
        return dl__error("%s: tensor '%s' claims %llu elements (%llu bytes) but the file has %zu bytes left", r->path, name,
                         (unsigned long long)numel, (unsigned long long)numel * 4, r->len - r->pos);
    if (strcmp(name, dl_node_name(m->g, id)) != 0 || ndim != (uint32_t)t.shape.ndim || numel != dl_shape_numel(t.shape))
        return dl__error("%s: tensor %d is '%s' with %llu values; the architecture expects '%s' with %zu", r->path, i, name,
                         (unsigned long long)numel, dl_node_name(m->g, id), dl_shape_numel(t.shape));
    for (j = 0; j < (int)ndim; j++)
        if (dims[j] != (uint32_t)t.shape.d[j]) return dl__error("%s: tensor '%s' has dim %d = %u, expected %d", r->path, name, j, dims[j], t.shape.d[j]);
    if (dtype == DL_ENC_F32) {
        for (k = 0; k < (size_t)numel; k++) t.data[k] = dl__get_f32(r, "tensor data");
        if (r->failed) return DL_ERR;
    } else {
        if (i >= dl_graph_param_count(m->g))
            return dl__error("%s: tensor '%s' is a moving statistic, stored as dtype %u; it must be f32", r->path, name, dtype);
        if (dl__read_encoded(r, m, i, name, (int)dtype, t) != DL_OK) return DL_ERR;
    }
    if ((k = dl__find_nonfinite(t.data, (size_t)numel)) < (size_t)numel)
        return dl__error("%s: tensor '%s' holds %g at element %zu; weights must be finite", r->path, name, (double)t.data[k], k);
    return DL_OK;
}

/* The weights the layers imply must fit in what is left of the file: checked
   before dl_compile allocates them, so a forged layer width costs nothing. The
   densest encoding (a sparse tensor with no non-zeros) takes a bit per weight. */
static int dl__weights_fit(const dl_model *m, const dl__rbuf *r)
{
    dl_shape shape = m->input;
    uint64_t total = 0, w;
    int i;
    for (i = 0; i < m->n_layers; i++) {
        if (m->layers[i].kind == DL_LAYER_FLATTEN && dl_shape_numel(shape) > (size_t)INT_MAX)
            return dl__error("%s: layer %d flattens %zu values per sample, more than %d", r->path, i + 1, dl_shape_numel(shape), INT_MAX);
        if (dl__layer_shape(&m->layers[i], &shape, &w) != DL_OK) return dl__error_in(r->path, "");
        total += w;
        if (total > ((uint64_t)1 << 40)) total = (uint64_t)1 << 40;   /* saturate: reported below */
    }
    if ((total + 7) / 8 > r->len - r->pos)
        return dl__error("%s: the layers need %llu weights (at least %llu bytes) but the file has %zu bytes left", r->path,
                         (unsigned long long)total, (unsigned long long)(total + 7) / 8, r->len - r->pos);
    return DL_OK;
}

/* Far beyond any real training, far below where epoch arithmetic could overflow. */
#define DL__MAX_EPOCHS (1 << 30)

static dl_model *dl__parse_model(dl__rbuf *r)
{
    dl_model *m = NULL;
    dl_optimizer opt;
    dl_shape in;
    uint32_t loss, epochs, n_layers, n_tensors, i;
    uint32_t version = (uint32_t)r->p[4] | (uint32_t)r->p[5] << 8 | (uint32_t)r->p[6] << 16 | (uint32_t)r->p[7] << 24;
    size_t rec = version >= 2 ? 20 + 4 * DL__LAYER_V2_INTS : 20;   /* bytes per layer */
    r->pos = 16;
    memset(&in, 0, sizeof in);
    in.ndim = (int)dl__get_u32(r, "input rank");
    for (i = 0; i < DL_MAX_DIMS; i++) in.d[i] = (int)dl__get_u32(r, "input dims");
    loss = dl__get_u32(r, "loss");
    dl__get_optimizer(r, &opt);
    epochs = dl__get_u32(r, "epoch count");
    n_layers = dl__get_u32(r, "layer count");
    if (r->failed) return NULL;
    for (i = 0; i < DL_MAX_DIMS; i++)
        if (in.d[i] < 0 || in.d[i] > (1 << 24) || ((int)i < in.ndim) != (in.d[i] > 0)) { dl__error("%s: the input shape is invalid", r->path); return NULL; }
    if (n_layers < 1 || n_layers > 4096 || (size_t)n_layers * rec > r->len - r->pos) {
        dl__error("%s: %u layers cannot fit in the file", r->path, n_layers);
        return NULL;
    }
    if (loss < DL_LOSS_MSE || loss > DL_LOSS_SPARSE_CE) { dl__error("%s: unknown loss %u", r->path, loss); return NULL; }
    if (epochs > DL__MAX_EPOCHS) { dl__error("%s: epoch count %u is over %d", r->path, epochs, DL__MAX_EPOCHS); return NULL; }
    if (opt.step_size < 0 || opt.t_max < 0) {   /* u32 fields of 2^31 and above */
        dl__error("%s: optimizer step_size %u or t_max %u is over %d", r->path, (unsigned)opt.step_size, (unsigned)opt.t_max, INT_MAX);
        return NULL;
    }
    if (dl__check_optimizer(&opt, r->path) != DL_OK) return NULL;
    m = dl_sequential(in);
    if (!m) { dl__error_in(r->path, ""); return NULL; }
    m->epochs_done = (int)epochs;
    for (i = 0; i < n_layers; i++) {
        dl_layer l;
        memset(&l, 0, sizeof l);
        l.kind = (int)dl__get_u32(r, "layer"); l.units = (int)dl__get_u32(r, "layer"); l.activation = (int)dl__get_u32(r, "layer");
        l.rate = dl__get_f32(r, "layer"); l.alpha = dl__get_f32(r, "layer");
        if (version >= 2) {
            int *f[DL__LAYER_V2_INTS], k;
            dl__layer_v2_ints(&l, f);
            for (k = 0; k < DL__LAYER_V2_INTS; k++) {
                if (k == 20) l.bn.momentum = dl__get_f32(r, "layer");
                else if (k == 21) l.bn.eps = dl__get_f32(r, "layer");
                else if (f[k]) *f[k] = (int)dl__get_u32(r, "layer");
                else dl__get_u32(r, "layer");
            }
        }
        if (r->failed) goto fail;
        if (dl_add(m, l) != DL_OK) {
            char what[32];
            snprintf(what, sizeof what, "layer %u: ", (unsigned)i + 1);
            dl__error_in(r->path, what);
            goto fail;
        }
    }
    if (dl__weights_fit(m, r) != DL_OK) goto fail;
    if (dl_compile(m, (int)loss, opt) != DL_OK) { dl__error_in(r->path, ""); goto fail; }
    n_tensors = dl__get_u32(r, "tensor count");
    if (r->failed) goto fail;
    if (n_tensors != (uint32_t)dl__file_tensor_count(m)) {
        dl__error("%s: the file holds %u tensors, the architecture has %d", r->path, n_tensors, dl__file_tensor_count(m));
        goto fail;
    }
    for (i = 0; i < n_tensors; i++)
        if (dl__read_tensor(r, m, (int)i) != DL_OK) goto fail;
    if (r->pos + 4 != r->len) { dl__error("%s: %zu unexpected bytes after the last tensor", r->path, r->len - 4 - r->pos); goto fail; }
    return m;
fail:
    dl_model_free(m);
    return NULL;
}

/* A model file's image in memory; `path` only names it in messages (the fuzz
   targets call this directly). */
static dl_model *dl__load_mem(const unsigned char *data, size_t len, const char *path)
{
    dl__rbuf r;
    if (dl__check_envelope(data, len, path) != DL_OK) return NULL;
    memset(&r, 0, sizeof r);
    r.p = data;
    r.len = len;
    r.path = path;
    return dl__parse_model(&r);
}

DLDEF dl_model *dl_load(const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    dl_model *m;
    if (!path) { dl__error("dl_load: NULL path"); return NULL; }
    if (dl_read_file(path, &data, &len) != DL_OK) return NULL;
    m = dl__load_mem(data, len, path);
    DLCORE_FREE(data);
    return m;
}

#ifdef __cplusplus
}
#endif
#endif /* DLCORE_IMPLEMENTATION_DONE */
#endif /* DLCORE_IMPLEMENTATION */
