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
#include <time.h>

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
};

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
    dl_graph_free(m->g);
    DLCORE_FREE(m->layers);
    DLCORE_FREE(m->history);
    DLCORE_FREE(m);
}

DLDEF void dl_model_seed(dl_model *m, uint64_t seed) { if (m) m->seed = seed; }
DLDEF dl_graph *dl_model_graph(dl_model *m) { return m ? m->g : NULL; }

static int dl__check_layer(const dl_layer *l)
{
    if (l->kind < DL_LAYER_DENSE || l->kind > DL_LAYER_ACTIVATION) return dl__error("dl_add: unknown layer kind %d", l->kind);
    if (l->activation < DL_LINEAR || l->activation > DL_LEAKY_RELU)
        return dl__error("dl_add: unknown activation %d", l->activation);
    if (l->kind == DL_LAYER_DENSE && (l->units < 1 || l->units > (1 << 24)))
        return dl__error("dl_add: dense layer with %d units", l->units);
    if (l->kind == DL_LAYER_DROPOUT && !(l->rate >= 0.0f && l->rate < 1.0f))
        return dl__error("dl_add: dropout rate %g is not in [0, 1)", (double)l->rate);
    return DL_OK;
}

DLDEF int dl_add(dl_model *m, dl_layer layer)
{
    if (!m) return dl__error("dl_add: NULL model");
    if (m->g) return dl__error("dl_add: the model is already compiled");
    if (dl__check_layer(&layer) != DL_OK) return DL_ERR;
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

DLDEF int dl_compile(dl_model *m, int loss, dl_optimizer opt)
{
    dl_graph *g;
    int h, i, dense_no = 0, last_act = -1, n_out;
    if (!m) return dl__error("dl_compile: NULL model");
    if (m->g) return dl__error("dl_compile: the model is already compiled");
    if (loss < DL_LOSS_MSE || loss > DL_LOSS_SPARSE_CE) return dl__error("dl_compile: unknown loss %d", loss);
    if (opt.kind < DL_SGD || opt.kind > DL_ADAMW) return dl__error("dl_compile: unknown optimizer kind %d", opt.kind);
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
    if (m->out < 0 || m->y < 0 || m->loss < 0 || dl_graph_plan(g, 32) != DL_OK) { dl_graph_free(g); return DL_ERR; }
    m->g = g;
    m->loss_kind = loss;
    m->opt = opt;
    m->out_size = n_out;
    return DL_OK;
}

DLDEF int dl_input_size(const dl_model *m) { return m ? (int)dl_shape_numel(m->input) : 0; }
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

/* A layer's effect on one sample's shape; returns the weights it owns. */
static uint64_t dl__layer_shape(const dl_layer *l, dl_shape *s)
{
    uint64_t last = (uint64_t)s->d[s->ndim - 1];
    if (l->kind == DL_LAYER_FLATTEN) *s = dl_shape_make((int)dl_shape_numel(*s), 0, 0, 0);
    if (l->kind != DL_LAYER_DENSE) return 0;
    s->d[s->ndim - 1] = l->units;
    return (last + 1) * (uint64_t)l->units;
}

DLDEF void dl_summary(const dl_model *m, FILE *out)
{
    static const char *const kinds[] = { "?", "dense", "dropout", "flatten", "activation" };
    static const char *const acts[] = { "linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu" };
    char s[64], what[64];
    dl_shape shape;
    int i;
    if (!m) return;
    shape = m->input;
    fprintf(out, "%-28s %-16s %10s\n", "layer", "output shape", "params");
    fprintf(out, "%-28s %-16s %10d\n", "input", dl_shape_str(shape, s, sizeof s), 0);
    for (i = 0; i < m->n_layers; i++) {
        const dl_layer *l = &m->layers[i];
        unsigned long long params = (unsigned long long)dl__layer_shape(l, &shape);
        if (l->kind == DL_LAYER_DENSE) snprintf(what, sizeof what, "dense %d, %s", l->units, acts[l->activation]);
        else if (l->kind == DL_LAYER_DROPOUT) snprintf(what, sizeof what, "dropout %.2f", (double)l->rate);
        else if (l->kind == DL_LAYER_ACTIVATION) snprintf(what, sizeof what, "activation %s", acts[l->activation]);
        else snprintf(what, sizeof what, "%s", kinds[l->kind]);
        fprintf(out, "%-28s %-16s %10llu\n", what, dl_shape_str(shape, s, sizeof s), params);
    }
    if (m->g) fprintf(out, "total parameters %zu (%zu bytes)\n", dl_model_param_count(m), dl_model_param_count(m) * sizeof(float));
}

/* ---- 5. Training and evaluation --------------------------------------------------- */

/* Grows the planned batch once, before a loop, never inside it. */
static int dl__reserve(dl_model *m, int batch)
{
    if (batch <= m->g->max_batch) return DL_OK;
    return dl_graph_plan(m->g, batch);
}

static int dl__check_data(const dl_model *m, const dl_dataset *d, const char *who)
{
    int want_y;
    if (!m || !m->g) return dl__error("%s: compile the model first", who);
    want_y = m->loss_kind == DL_LOSS_SPARSE_CE ? 1 : m->out_size;
    if (!d || !d->x || !d->y || d->n < 1) return dl__error("%s: empty data set", who);
    if (d->x_size != dl_input_size(m))
        return dl__error("%s: samples have %d values, the model's input takes %d", who, d->x_size, dl_input_size(m));
    if (d->y_size != want_y)
        return dl__error("%s: targets have %d values per sample, the model needs %d", who, d->y_size, want_y);
    return DL_OK;
}

/* Copies rows idx[0..bs) (or first..first+bs when idx is NULL) into the graph's inputs. */
static void dl__load_batch(dl_model *m, const dl_dataset *d, const int *idx, int first, int bs)
{
    float *x = dl_node_value(m->g, m->x).data, *y = dl_node_value(m->g, m->y).data;
    size_t xs = (size_t)d->x_size, ys = (size_t)d->y_size;
    int i;
    dl_graph_set_batch(m->g, bs);
    for (i = 0; i < bs; i++) {
        size_t r = (size_t)(idx ? idx[first + i] : first + i);
#if defined(__GNUC__) || defined(__clang__)
        /* Shuffled rows come from all over a data set far larger than the caches:
           asking for the row after next while copying this one hides the misses. */
        if (i + 2 < bs) {
            const char *next = (const char *)(d->x + (size_t)(idx ? idx[first + i + 2] : first + i + 2) * xs);
            size_t off;
            for (off = 0; off < xs * sizeof(float); off += 64) __builtin_prefetch(next + off);
        }
#endif
        memcpy(x + i * xs, d->x + r * xs, xs * sizeof(float));
        memcpy(y + i * ys, d->y + r * ys, ys * sizeof(float));
    }
}

static int dl__argmax(const float *v, int n)
{
    int j, best = 0;
    for (j = 1; j < n; j++) if (v[j] > v[best]) best = j;
    return best;
}

/* Predicted and true classes of row i of the current batch (-1 for regression). */
static int dl__classes(const dl_model *m, int i, int *truth, int col)
{
    const float *z = dl_node_value(m->g, m->logits).data + (size_t)i * m->out_size;
    const float *y = dl_node_value(m->g, m->y).data;
    if (m->loss_kind == DL_LOSS_SPARSE_CE) { *truth = (int)y[i]; return dl__argmax(z, m->out_size); }
    if (m->loss_kind == DL_LOSS_BCE) { *truth = y[(size_t)i * m->out_size + col] > 0.5f; return z[col] > 0.0f; }
    *truth = -1;
    return -1;
}

/* Correct predictions in the current batch; BCE counts every output. */
static int dl__count_correct(const dl_model *m, int bs, int *conf)
{
    int i, c, correct = 0, cols = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    if (m->loss_kind == DL_LOSS_MSE) return 0;
    for (i = 0; i < bs; i++)
        for (c = 0; c < cols; c++) {
            int truth, pred = dl__classes(m, i, &truth, c);
            correct += pred == truth;
            if (conf && truth >= 0 && truth < m->n_classes && m->n_classes <= DL_MAX_CLASSES)
                conf[truth * m->n_classes + pred]++;
        }
    return correct;
}

/* Mean loss and accuracy over a data set, in evaluation mode. */
static int dl__eval(dl_model *m, const dl_dataset *d, float *loss, float *acc, int *conf)
{
    double sum = 0.0;
    long correct = 0;
    int first, bs = m->g->max_batch;
    int per = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    dl_graph_set_training(m->g, 0);
    for (first = 0; first < d->n; first += bs) {
        int n = d->n - first < bs ? d->n - first : bs;
        dl__load_batch(m, d, NULL, first, n);
        if (dl_forward(m->g, m->loss) != DL_OK) return DL_ERR;
        sum += (double)dl_node_value(m->g, m->loss).data[0] * n;
        correct += dl__count_correct(m, n, conf);
    }
    *loss = (float)(sum / d->n);
    *acc = m->loss_kind == DL_LOSS_MSE ? NAN : (float)((double)correct / ((double)d->n * per));
    return DL_OK;
}

static double dl__now(void)
{
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
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
    int first, step = 0, steps = (n + bs - 1) / bs, shown = -1;
    int per = m->loss_kind == DL_LOSS_BCE ? m->out_size : 1;
    dl_graph_set_training(m->g, 1);
    for (first = 0; first < n; first += bs, step++) {
        int cur = n - first < bs ? n - first : bs;
        float l;
        dl__load_batch(m, train, perm, first, cur);
        if (dl_forward(m->g, m->loss) != DL_OK) return DL_ERR;
        l = dl_node_value(m->g, m->loss).data[0];
        if (!isfinite(l))
            return dl__error("dl_fit: loss became %g at epoch %d, step %d of %d; lower the learning rate or check the data",
                             (double)l, epoch + 1, step + 1, steps);
        sum += (double)l * cur;
        seen += cur;
        correct += dl__count_correct(m, cur, NULL);
        if (dl_backward(m->g, m->loss) != DL_OK || dl_graph_update(m->g, &m->opt, m->epochs_done) != DL_OK) return DL_ERR;
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

DLDEF int dl_fit(dl_model *m, const dl_dataset *data, const dl_fit_opts *opts)
{
    dl_fit_opts o;
    dl_dataset train, val;
    const dl_dataset *valp = NULL;
    FILE *out, *csv = NULL;
    int *perm, epochs, bs, e, i, bar, rc = DL_OK;
    dl_rng rng;
    if (opts) o = *opts; else memset(&o, 0, sizeof o);
    if (dl__check_data(m, data, "dl_fit") != DL_OK) return DL_ERR;
    epochs = o.epochs > 0 ? o.epochs : 1;
    bs = o.batch > 0 ? o.batch : 32;
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
    bar = o.progress == DL_PROGRESS_BAR || (o.progress == DL_PROGRESS_AUTO && DL__ISATTY(out));
    if (dl__reserve(m, bs) != DL_OK) return DL_ERR;
    perm = (int *)DLCORE_MALLOC((size_t)train.n * sizeof(int));
    DLCORE_FREE(m->history);
    m->history = (dl_history_row *)DLCORE_MALLOC((size_t)epochs * sizeof(dl_history_row));
    if (!perm || !m->history) { DLCORE_FREE(perm); return dl__error("dl_fit: out of memory"); }
    for (i = 0; i < train.n; i++) perm[i] = i;
    if (o.csv_log) {
        csv = fopen(o.csv_log, "w");
        if (!csv) { DLCORE_FREE(perm); return dl__error("dl_fit: cannot write the CSV log '%s'", o.csv_log); }
        fprintf(csv, "epoch,loss,accuracy,val_loss,val_accuracy,seconds\n");
    }
    /* Shuffling draws from its own stream so dropout masks do not depend on it. */
    dl_rng_seed(&rng, m->seed ^ 0x5deece66dULL ^ (uint64_t)m->epochs_done);
    m->n_history = 0;
    for (e = 0; e < epochs && rc == DL_OK; e++) {
        dl_history_row row;
        double t0 = dl__now();
        row.val_loss = row.val_accuracy = NAN;
        if (!o.no_shuffle) dl_rng_shuffle(&rng, perm, train.n);
        rc = dl__train_epoch(m, &train, perm, train.n, bs, e, epochs, bar, out, &row);
        if (rc == DL_OK && valp) rc = dl__eval(m, valp, &row.val_loss, &row.val_accuracy, NULL);
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
    int conf[DL_MAX_CLASSES * DL_MAX_CLASSES], i, j;
    if (!mt) return dl__error("dl_evaluate: NULL metrics");
    memset(mt, 0, sizeof *mt);
    if (dl__check_data(m, data, "dl_evaluate") != DL_OK) return DL_ERR;
    memset(conf, 0, sizeof conf);
    if (dl__reserve(m, 256) != DL_OK) return DL_ERR;
    if (dl__eval(m, data, &mt->loss, &mt->accuracy, conf) != DL_OK) return DL_ERR;
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

DLDEF int dl_predict(dl_model *m, const float *x, int n, float *out)
{
    int first, bs;
    size_t xs, os;
    if (!m || !m->g) return dl__error("dl_predict: compile or load the model first");
    if (!x || !out || n < 0) return dl__error("dl_predict: NULL data or negative count");
    bs = m->g->max_batch;
    xs = (size_t)dl_input_size(m);
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
    if (rename(tmp, path) != 0) { remove(tmp); return dl__error("dl_save: cannot rename '%s' to '%s'", tmp, path); }
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
    }
    dl__put_u32(&b, (uint32_t)dl_graph_param_count(m->g));
    for (i = 0; i < dl_graph_param_count(m->g); i++) {
        int id = dl_graph_param(m->g, i);
        const char *name = dl_node_name(m->g, id);
        dl_tensor t = dl_node_value(m->g, id);
        size_t k, numel = dl_shape_numel(t.shape);
        dl__put_u32(&b, (uint32_t)strlen(name));
        dl__put(&b, name, strlen(name));
        dl__put_u32(&b, 1);
        dl__put_u32(&b, (uint32_t)t.shape.ndim);
        for (j = 0; j < t.shape.ndim; j++) dl__put_u32(&b, (uint32_t)t.shape.d[j]);
        for (k = 0; k < numel; k++) dl__put_f32(&b, t.data[k]);
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
    if (version != DL_MODEL_FORMAT_VERSION)
        return dl__error("%s: format version %u is not supported (this build reads version %d)", path, version, DL_MODEL_FORMAT_VERSION);
    for (i = 0; i < 8; i++) size |= (uint64_t)p[8 + i] << (8 * i);
    if (size != len)
        return dl__error("%s: the header says %llu bytes but the file has %zu: %s", path, (unsigned long long)size, len,
                         size > len ? "truncated" : "trailing bytes");
    stored = (uint32_t)p[len - 4] | (uint32_t)p[len - 3] << 8 | (uint32_t)p[len - 2] << 16 | (uint32_t)p[len - 1] << 24;
    actual = dl_crc32(0, p, len - 4);
    if (stored != actual)
        return dl__error("%s: checksum mismatch (stored %08x, computed %08x): the file is corrupted", path, stored, actual);
    return DL_OK;
}

static int dl__read_tensor(dl__rbuf *r, dl_model *m, int i)
{
    char name[48];
    int id = dl_graph_param(m->g, i), j;
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
    if (dtype != 1) return dl__error("%s: tensor '%s' has dtype %u; this build reads only 1 (float32)", r->path, name, dtype);
    if (ndim < 1 || ndim > DL_MAX_DIMS) return dl__error("%s: tensor '%s' has %u dims (1..4 allowed)", r->path, name, ndim);
    for (j = 0; j < (int)ndim; j++) {
        dims[j] = dl__get_u32(r, "tensor dims");
        numel *= dims[j];
        if (numel > ((uint64_t)1 << 40)) numel = (uint64_t)1 << 40;   /* saturate: reported below */
    }
    if (r->failed) return DL_ERR;
    if (numel * 4 > r->len - r->pos)
        return dl__error("%s: tensor '%s' claims %llu elements (%llu bytes) but the file has %zu bytes left", r->path, name,
                         (unsigned long long)numel, (unsigned long long)numel * 4, r->len - r->pos);
    if (strcmp(name, dl_node_name(m->g, id)) != 0 || ndim != (uint32_t)t.shape.ndim || numel != dl_shape_numel(t.shape))
        return dl__error("%s: tensor %d is '%s' with %llu values; the architecture expects '%s' with %zu", r->path, i, name,
                         (unsigned long long)numel, dl_node_name(m->g, id), dl_shape_numel(t.shape));
    for (j = 0; j < (int)ndim; j++)
        if (dims[j] != (uint32_t)t.shape.d[j]) return dl__error("%s: tensor '%s' has dim %d = %u, expected %d", r->path, name, j, dims[j], t.shape.d[j]);
    for (k = 0; k < (size_t)numel; k++) t.data[k] = dl__get_f32(r, "tensor data");
    return r->failed ? DL_ERR : DL_OK;
}

/* The weights the layers imply must fit in what is left of the file: checked
   before dl_compile allocates them, so a forged layer width costs nothing. */
static int dl__weights_fit(const dl_model *m, const dl__rbuf *r)
{
    dl_shape shape = m->input;
    uint64_t total = 0;
    int i;
    for (i = 0; i < m->n_layers; i++) total += dl__layer_shape(&m->layers[i], &shape);
    if (total * 4 > r->len - r->pos)
        return dl__error("%s: the layers need %llu weights (%llu bytes) but the file has %zu bytes left", r->path,
                         (unsigned long long)total, (unsigned long long)total * 4, r->len - r->pos);
    return DL_OK;
}

static dl_model *dl__parse_model(dl__rbuf *r)
{
    dl_model *m = NULL;
    dl_optimizer opt;
    dl_shape in;
    uint32_t loss, epochs, n_layers, n_tensors, i;
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
    if (n_layers < 1 || n_layers > 4096 || (size_t)n_layers * 20 > r->len - r->pos) {
        dl__error("%s: %u layers cannot fit in the file", r->path, n_layers);
        return NULL;
    }
    m = dl_sequential(in);
    if (!m) { dl__error_in(r->path, ""); return NULL; }
    m->epochs_done = (int)epochs;
    for (i = 0; i < n_layers; i++) {
        dl_layer l;
        memset(&l, 0, sizeof l);
        l.kind = (int)dl__get_u32(r, "layer"); l.units = (int)dl__get_u32(r, "layer"); l.activation = (int)dl__get_u32(r, "layer");
        l.rate = dl__get_f32(r, "layer"); l.alpha = dl__get_f32(r, "layer");
        if (r->failed) goto fail;
        if (dl_add(m, l) != DL_OK) { dl__error_in(r->path, "layer: "); goto fail; }
    }
    if (dl__weights_fit(m, r) != DL_OK) goto fail;
    if (dl_compile(m, (int)loss, opt) != DL_OK) { dl__error_in(r->path, ""); goto fail; }
    n_tensors = dl__get_u32(r, "tensor count");
    if (r->failed) goto fail;
    if (n_tensors != (uint32_t)dl_graph_param_count(m->g)) {
        dl__error("%s: the file holds %u tensors, the architecture has %d", r->path, n_tensors, dl_graph_param_count(m->g));
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

DLDEF dl_model *dl_load(const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    dl__rbuf r;
    dl_model *m;
    if (!path) { dl__error("dl_load: NULL path"); return NULL; }
    if (dl_read_file(path, &data, &len) != DL_OK) return NULL;
    if (dl__check_envelope(data, len, path) != DL_OK) { DLCORE_FREE(data); return NULL; }
    memset(&r, 0, sizeof r);
    r.p = data;
    r.len = len;
    r.path = path;
    m = dl__parse_model(&r);
    DLCORE_FREE(data);
    return m;
}
