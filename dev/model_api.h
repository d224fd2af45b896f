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
enum dl_layer_kind { DL_LAYER_DENSE = 1, DL_LAYER_DROPOUT, DL_LAYER_FLATTEN, DL_LAYER_ACTIVATION };

/* A layer description; the constructors below fill it. */
typedef struct dl_layer {
    int   kind;        /* DL_LAYER_* */
    int   units;       /* dense: output width */
    int   activation;  /* DL_LINEAR, DL_RELU, ... */
    float rate;        /* dropout: fraction dropped in training */
    float alpha;       /* leaky relu: slope for x < 0 (0 = 0.01) */
} dl_layer;

DLDEF dl_layer dl_dense(int units, int activation);   /* Glorot-uniform kernel, zero bias */
DLDEF dl_layer dl_dropout(float rate);
DLDEF dl_layer dl_flatten(void);
DLDEF dl_layer dl_activation(int activation);

typedef struct dl_model dl_model;

DLDEF dl_model *dl_sequential(dl_shape input);        /* one sample's shape */
DLDEF void      dl_model_free(dl_model *m);
DLDEF int       dl_add(dl_model *m, dl_layer layer);
/* Seed for weight initialisation, shuffling and dropout (default 0). Call it
   before dl_compile: same seed and thread count => bit-identical training. */
DLDEF void      dl_model_seed(dl_model *m, uint64_t seed);
/* Builds the graph and initialises the weights. */
DLDEF int       dl_compile(dl_model *m, int loss, dl_optimizer opt);
/* Prints the layers, output shapes and parameter counts. */
DLDEF void      dl_summary(const dl_model *m, FILE *out);
DLDEF size_t    dl_model_param_count(const dl_model *m);

enum { DL_PROGRESS_AUTO = 0, DL_PROGRESS_LINES, DL_PROGRESS_BAR, DL_PROGRESS_NONE };

typedef struct dl_fit_opts {
    int   epochs;            /* 0 = 1 */
    int   batch;             /* 0 = 32 */
    float validation_split;  /* the last fraction of the data is held out, as in Keras */
    const dl_dataset *validation;  /* or an explicit validation set */
    int   no_shuffle;        /* 1: keep the data order (shuffled every epoch otherwise) */
    int   progress;          /* DL_PROGRESS_*: AUTO = a bar on a terminal, lines otherwise */
    FILE *out;               /* where progress goes (NULL = stdout) */
    const char *csv_log;     /* epoch,loss,accuracy,val_loss,val_accuracy,seconds */
} dl_fit_opts;

/* Per-epoch figures of the last dl_fit (NaN where not applicable). */
typedef struct dl_history_row { float loss, accuracy, val_loss, val_accuracy, seconds; } dl_history_row;

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
DLDEF void dl_metrics_print(const dl_metrics *mt, FILE *out);
/* Outputs for n samples (x: n * input size floats) into out (n * output size):
   probabilities after a final softmax/sigmoid, raw values otherwise. */
DLDEF int dl_predict(dl_model *m, const float *x, int n, float *out);
DLDEF int dl_output_size(const dl_model *m);
DLDEF int dl_input_size(const dl_model *m);

/* Model files: architecture, loss, optimizer settings and weights (not the
   optimizer's moment estimates), little-endian, versioned, CRC-32 protected.
   dl_save writes "<path>.tmp" and renames it, so the target is never partial.
   dl_load validates every field against the file before allocating.

   Format version 1 (all integers u32 unless noted, floats IEEE f32):
     "DLCM" | version | u64 file size | input ndim | 4 x dims |
     loss | optimizer: kind nesterov schedule step_size t_max, then f32 lr momentum
     beta1 beta2 eps weight_decay l1 l2 clip_norm gamma lr_min | epochs trained |
     layer count | per layer: kind units activation f32 rate f32 alpha |
     tensor count | per tensor: name length (1..47) | name bytes | dtype (1 = f32) |
     ndim (1..4) | dims | data | u32 CRC-32 of every byte before it */
#define DL_MODEL_FORMAT_VERSION 1
DLDEF int       dl_save(const dl_model *m, const char *path);
DLDEF dl_model *dl_load(const char *path);

/* The graph underneath, for users who want to go beyond sequential models. */
DLDEF dl_graph *dl_model_graph(dl_model *m);
