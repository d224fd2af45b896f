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
   Fans: 2-D [in, out]; 4-D [out, in, kh, kw]; 1-D params (biases) are never
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
/* Losses: scalars, averaged over the batch (and over elements for MSE/BCE). */
DLDEF int dl_loss_mse(dl_graph *g, int pred, int target);
DLDEF int dl_loss_bce_logits(dl_graph *g, int logits, int target);   /* stable for any logit */
DLDEF int dl_loss_sparse_ce(dl_graph *g, int logits, int labels);    /* labels: class ids as floats */

#define DL_NONE (-1000000)   /* "no node", e.g. a dense op without bias */

/* Places all buffers for batches up to max_batch (may be called again to grow). */
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
