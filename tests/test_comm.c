/* Data-parallel training through dl_comm, without MPI: a fake comm joins 2 or 3
   threads of this process as ranks (each with its own model), and their training
   must give the weights and figures one process gets with the same global batch
   and seed. Also: a failing callback fails dl_fit on every rank, ranks that
   disagree on the data are refused, and sharded evaluation equals dl_evaluate. */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#include "dltest.h"
#include <stdlib.h>

#ifdef _WIN32
#include <windows.h>
typedef CRITICAL_SECTION t_mutex;
typedef CONDITION_VARIABLE t_cond;
static void t_init(t_mutex *m, t_cond *c) { InitializeCriticalSection(m); InitializeConditionVariable(c); }
static void t_lock(t_mutex *m) { EnterCriticalSection(m); }
static void t_unlock(t_mutex *m) { LeaveCriticalSection(m); }
static void t_wait(t_cond *c, t_mutex *m) { SleepConditionVariableCS(c, m, INFINITE); }
static void t_wake(t_cond *c) { WakeAllConditionVariable(c); }
#else
#include <pthread.h>
typedef pthread_mutex_t t_mutex;
typedef pthread_cond_t t_cond;
static void t_init(t_mutex *m, t_cond *c) { pthread_mutex_init(m, NULL); pthread_cond_init(c, NULL); }
static void t_lock(t_mutex *m) { pthread_mutex_lock(m); }
static void t_unlock(t_mutex *m) { pthread_mutex_unlock(m); }
static void t_wait(t_cond *c, t_mutex *m) { pthread_cond_wait(c, m); }
static void t_wake(t_cond *c) { pthread_cond_broadcast(c); }
#endif

#define MAXR 3

/* ---- the fake comm: collectives over shared memory between threads ---- */
typedef struct hub {
    t_mutex mu;
    t_cond cv;
    int size, arrived;
    unsigned gen;
    void *buf[MAXR];
    long fail_at;              /* the collective (counted from 1) that fails on every rank; 0: none */
} hub;

typedef struct pending { void *buf, *copy; size_t count; int dtype, used; } pending;

typedef struct rank_ctx {
    hub *h;
    dl_comm comm;
    long calls;                /* collectives entered */
    pending req[64];           /* non-blocking reductions started, not yet waited for */
    int touched_early;         /* dlcore wrote a buffer between start and wait */
    long shard_calls;          /* reduce_scatter calls: the sharded update ran */
    int updated_all;           /* an update wrote outside its shard (NaN from the poisoned sum) */
} rank_ctx;

static void barrier(hub *h)
{
    unsigned gen;
    t_lock(&h->mu);
    gen = h->gen;
    if (++h->arrived == h->size) { h->arrived = 0; h->gen++; t_wake(&h->cv); }
    else while (gen == h->gen) t_wait(&h->cv, &h->mu);
    t_unlock(&h->mu);
}

static size_t esize(int dtype) { return dtype == DL_COMM_F64 ? sizeof(double) : sizeof(float); }

/* Sums in rank order, so every rank computes the same bits. */
static int fake_allreduce(void *user, void *buf, size_t count, int dtype)
{
    rank_ctx *r = (rank_ctx *)user;
    hub *h = r->h;
    void *sum;
    size_t i;
    int k;
    if (h->fail_at && ++r->calls == h->fail_at) return DL_ERR;
    sum = malloc(count * esize(dtype) + 1);
    h->buf[r->comm.rank] = buf;
    barrier(h);
    for (i = 0; i < count; i++) {
        if (dtype == DL_COMM_F64) {
            double s = 0.0;
            for (k = 0; k < h->size; k++) s += ((double *)h->buf[k])[i];
            ((double *)sum)[i] = s;
        } else {
            float s = 0.0f;
            for (k = 0; k < h->size; k++) s += ((float *)h->buf[k])[i];
            ((float *)sum)[i] = s;
        }
    }
    barrier(h);
    memcpy(buf, sum, count * esize(dtype));
    free(sum);
    return DL_OK;
}

static int fake_bcast(void *user, void *buf, size_t bytes)
{
    rank_ctx *r = (rank_ctx *)user;
    hub *h = r->h;
    if (h->fail_at && ++r->calls == h->fail_at) return DL_ERR;
    h->buf[r->comm.rank] = buf;
    barrier(h);
    if (r->comm.rank != 0) memcpy(buf, h->buf[0], bytes);
    barrier(h);
    return DL_OK;
}

/* The sharded update's halves. reduce_scatter sums as fake_allreduce does and then
   leaves NaN outside this rank's shard, so an update that read past its shard, or a
   weight that missed the allgather, shows at once. */
static int fake_reduce_scatter(void *user, float *buf, size_t count)
{
    rank_ctx *r = (rank_ctx *)user;
    size_t lo, hi, i;
    int rc = fake_allreduce(user, buf, count, DL_COMM_F32);
    if (rc != DL_OK) return rc;
    r->shard_calls++;
    dl_comm_shard(count, r->comm.rank, r->comm.size, &lo, &hi);
    for (i = 0; i < count; i++) if (i < lo || i >= hi) buf[i] = NAN;
    return DL_OK;
}

/* Also notes an update that ran past this rank's shard: the sum is NaN there. */
static int fake_allgather(void *user, float *buf, size_t count)
{
    rank_ctx *r = (rank_ctx *)user;
    hub *h = r->h;
    size_t lo, hi, i;
    int k;
    if (h->fail_at && ++r->calls == h->fail_at) return DL_ERR;
    dl_comm_shard(count, r->comm.rank, h->size, &lo, &hi);
    for (i = 0; i < count; i++) if ((i < lo || i >= hi) && buf[i] != buf[i]) r->updated_all = 1;
    h->buf[r->comm.rank] = buf;
    barrier(h);
    for (k = 0; k < h->size; k++) {
        dl_comm_shard(count, k, h->size, &lo, &hi);
        if (k != r->comm.rank && hi > lo) memcpy(buf + lo, (float *)h->buf[k] + lo, (hi - lo) * sizeof(float));
    }
    barrier(h);
    return DL_OK;
}

/* Non-blocking: remembers the buffer's contents and reduces at wait, after
   checking that dlcore left the buffer alone in between. Every rank waits in the
   same order, so the reductions pair up. */
static int fake_iallreduce(void *user, void *buf, size_t count, int dtype, void **req)
{
    rank_ctx *r = (rank_ctx *)user;
    pending *p = NULL;
    int i;
    for (i = 0; i < 64 && !p; i++) if (!r->req[i].used) p = &r->req[i];
    if (!p) return DL_ERR;
    p->used = 1;
    p->buf = buf; p->count = count; p->dtype = dtype;
    p->copy = malloc(count * esize(dtype) + 1);
    memcpy(p->copy, buf, count * esize(dtype));
    *req = p;
    return DL_OK;
}

static int fake_wait(void *user, void *req)
{
    rank_ctx *r = (rank_ctx *)user;
    pending *p = (pending *)req;
    int rc;
    if (!p->used) return DL_ERR;
    if (memcmp(p->copy, p->buf, p->count * esize(p->dtype)) != 0) r->touched_early = 1;
    free(p->copy);
    p->used = 0;
    rc = fake_allreduce(user, p->buf, p->count, p->dtype);
    return rc;
}

/* ---- the training job each rank (and the single process) runs ---- */
typedef struct job {
    int n, batch, epochs, nonblocking, sgd;
    int shard;                 /* ranks: the sharded update, for every parameter */
    int no_clip;               /* sgd without clip_norm (which turns sharding off) */
    int refit;                 /* then one more epoch in one process (comm NULL) */
    int mse;                   /* one linear output and the squared error, not 4 classes */
    int huge_at;               /* with mse: 1 + the sample whose target is 1e20 (0: none) */
    float val_split;
    uint64_t seed;
    /* results */
    int rc;
    char err[600];
    float *w;                  /* all parameters, concatenated */
    size_t nw;
    dl_history_row hist[8];
    int n_hist;
    dl_metrics mt;
} job;

/* Four Gaussian blobs in 10 dimensions (an odd row length for the dropout masks). */
static void blobs(dl_dataset *d, int n)
{
    dl_rng r;
    int i, j, shape[1] = { 10 };
    dl_dataset_alloc(d, n, 1, shape, 1);
    dl_rng_seed(&r, 1234);
    for (i = 0; i < n; i++) {
        int c = (int)dl_rng_below(&r, 4);
        for (j = 0; j < 10; j++) d->x[i * 10 + j] = (j % 4 == c ? 1.2f : 0.0f) + 0.8f * dl_rng_normal(&r);
        d->y[i] = (float)c;
    }
    d->n_classes = 4;
}

static void run_job(job *jb, const dl_comm *comm)
{
    dl_dataset d;
    dl_model *m;
    dl_fit_opts o;
    dl_optimizer opt = jb->sgd ? dl_sgd(0.05f, 0.9f) : dl_adam(3e-3f);
    dl_graph *g;
    const dl_history_row *h;
    int i;
    size_t off = 0;
    if (jb->sgd) { opt.clip_norm = jb->no_clip ? 0.0f : 0.5f; opt.l2 = 1e-3f; }
    blobs(&d, jb->n);
    if (jb->huge_at > 0) d.y[jb->huge_at - 1] = 1e20f;   /* its squared error overflows to inf */
    m = dl_sequential(DL_SHAPE(10));
    dl_model_seed(m, jb->seed);
    dl_add(m, dl_dense(13, DL_RELU));     /* 13 units: rows of 13 for the dropout after it */
    dl_add(m, dl_dropout(0.3f));
    dl_add(m, dl_dense(16, DL_TANH));
    dl_add(m, dl_dropout(0.2f));
    dl_add(m, jb->mse ? dl_dense(1, DL_LINEAR) : dl_dense(4, DL_SOFTMAX));
    dl_compile(m, jb->mse ? DL_LOSS_MSE : DL_LOSS_SPARSE_CE, opt);
    memset(&o, 0, sizeof o);
    o.epochs = jb->epochs;
    o.batch = jb->batch;
    o.validation_split = jb->val_split;
    o.progress = DL_PROGRESS_NONE;
    o.comm = comm;
    jb->rc = dl_fit(m, &d, &o);
    if (jb->rc == DL_OK && jb->refit) {   /* every rank alone on the whole set, from the state dl_fit left */
        o.comm = NULL;
        o.epochs = 1;
        jb->rc = dl_fit(m, &d, &o);
    }
    snprintf(jb->err, sizeof jb->err, "%s", jb->rc == DL_OK ? "" : dl_last_error());
    if (jb->rc == DL_OK) jb->rc = dl_evaluate_comm(m, &d, &jb->mt, comm);
    jb->n_hist = dl_history(m, &h);
    if (jb->n_hist > 8) jb->n_hist = 8;
    if (jb->n_hist > 0) memcpy(jb->hist, h, (size_t)jb->n_hist * sizeof *h);
    g = dl_model_graph(m);
    jb->nw = 0;
    for (i = 0; i < dl_graph_param_count(g); i++) jb->nw += dl_shape_numel(dl_node_value(g, dl_graph_param(g, i)).shape);
    jb->w = (float *)malloc(jb->nw * sizeof(float));
    for (i = 0; i < dl_graph_param_count(g); i++) {
        dl_tensor t = dl_node_value(g, dl_graph_param(g, i));
        memcpy(jb->w + off, t.data, dl_shape_numel(t.shape) * sizeof(float));
        off += dl_shape_numel(t.shape);
    }
    dl_model_free(m);
    dl_dataset_free(&d);
}

/* ---- ranks as threads ---- */
typedef struct t_start { void (*fn)(void *); void *arg; } t_start;

/* A rank thread ends by freeing its GEMM packing workspace (dl_thread_release:
   dl_shutdown would also stop the pool the other ranks share). */
#ifdef _WIN32
static DWORD WINAPI t_entry(LPVOID p) { t_start *s = (t_start *)p; s->fn(s->arg); dl_thread_release(); return 0; }
#else
static void *t_entry(void *p) { t_start *s = (t_start *)p; s->fn(s->arg); dl_thread_release(); return NULL; }
#endif

/* fn(args + r * stride) for r < n, each on a thread of its own; returns when all end. */
static void run_threads(int n, void (*fn)(void *), void *args, size_t stride)
{
    t_start s[MAXR];
    int r;
#ifdef _WIN32
    HANDLE th[MAXR];
#else
    pthread_t th[MAXR];
#endif
    for (r = 0; r < n; r++) {
        s[r].fn = fn;
        s[r].arg = (char *)args + (size_t)r * stride;
#ifdef _WIN32
        th[r] = CreateThread(NULL, 0, t_entry, &s[r], 0, NULL);
#else
        pthread_create(&th[r], NULL, t_entry, &s[r]);
#endif
    }
    for (r = 0; r < n; r++) {
#ifdef _WIN32
        WaitForSingleObject(th[r], INFINITE);
        CloseHandle(th[r]);
#else
        pthread_join(th[r], NULL);
#endif
    }
}

/* A hub for `size` ranks, the collective fail_at failing (0: none). */
static void hub_init(hub *h, int size, long fail_at)
{
    memset(h, 0, sizeof *h);
    t_init(&h->mu, &h->cv);
    h->size = size;
    h->fail_at = fail_at;
}

/* Rank r of size on hub h, blocking collectives only. */
static void rank_init(rank_ctx *rc, hub *h, int r, int size)
{
    rc->h = h;
    rc->comm.rank = r;
    rc->comm.size = size;
    rc->comm.user = rc;
    rc->comm.allreduce = fake_allreduce;
    rc->comm.bcast = fake_bcast;
}

typedef struct thread_arg { job jb; rank_ctx rc; } thread_arg;
static void rank_main(void *p) { thread_arg *a = (thread_arg *)p; run_job(&a->jb, &a->rc.comm); }

/* Runs `size` ranks of jb (rank r's seed: jb.seed + r, to show rank 0's wins);
   rank1_n > 0 gives rank 1 a data set of that size instead. */
static void run_ranks(const job *jb, int size, long fail_at, int rank1_n, thread_arg *out)
{
    static hub h;
    int r;
    hub_init(&h, size, fail_at);
    for (r = 0; r < size; r++) {
        thread_arg *a = &out[r];
        memset(a, 0, sizeof *a);
        a->jb = *jb;
        a->jb.seed = jb->seed + (uint64_t)r;
        if (r == 1 && rank1_n > 0) a->jb.n = rank1_n;
        rank_init(&a->rc, &h, r, size);
        if (jb->nonblocking) { a->rc.comm.iallreduce = fake_iallreduce; a->rc.comm.wait = fake_wait; }
        if (jb->shard) {
            a->rc.comm.reduce_scatter = fake_reduce_scatter;
            a->rc.comm.allgather = fake_allgather;
            a->rc.comm.shard_min = 1;
        }
    }
    run_threads(size, rank_main, out, sizeof *out);
}

/* Largest |a - b| over the largest |a|, per run. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0.0, s = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)a[i]) > s) s = fabs((double)a[i]);
    }
    return s > 0.0 ? d / s : d;
}

/* `size` ranks against one process: the same weights (1e-5 relative), figures
   within float rounding, and every rank bit-identical to rank 0. Returns how many
   reduce_scatter calls rank 0 made. */
static long check_against_one(job jb, int size)
{
    thread_arg *ranks = (thread_arg *)calloc(MAXR, sizeof *ranks);
    job one = jb;
    long shard_calls;
    int r, e;
    dl_set_threads(1);
    run_job(&one, NULL);
    DL_CHECK_EQ_INT(one.rc, DL_OK);
    run_ranks(&jb, size, 0, 0, ranks);
    for (r = 0; r < size; r++) {
        job *rj = &ranks[r].jb;
        DL_CHECK_EQ_INT(rj->rc, DL_OK);
        if (rj->rc != DL_OK) { fprintf(stderr, "  rank %d: %s\n", r, rj->err); continue; }
        DL_CHECK(rj->nw == one.nw);
        if (rj->nw != one.nw) continue;
        printf("  %d ranks, batch %d, rank %d: weights within %.2g relative of one process\n",
               size, jb.batch, r, rel_diff(one.w, rj->w, one.nw));
        DL_CHECK(rel_diff(one.w, rj->w, one.nw) <= 1e-5);
        DL_CHECK(memcmp(rj->w, ranks[0].jb.w, one.nw * sizeof(float)) == 0);
        DL_CHECK(!ranks[r].rc.touched_early);
        DL_CHECK(!ranks[r].rc.updated_all);
        DL_CHECK_EQ_INT(rj->n_hist, one.n_hist);
        for (e = 0; e < one.n_hist && e < rj->n_hist; e++) {
            DL_CHECK_NEAR(rj->hist[e].loss, one.hist[e].loss, 1e-5 * (1 + fabs(one.hist[e].loss)));
            DL_CHECK_NEAR(rj->hist[e].accuracy, one.hist[e].accuracy, 1e-6);
            if (jb.val_split > 0.0f) {
                DL_CHECK_NEAR(rj->hist[e].val_loss, one.hist[e].val_loss, 1e-5 * (1 + fabs(one.hist[e].val_loss)));
                DL_CHECK_NEAR(rj->hist[e].val_accuracy, one.hist[e].val_accuracy, 1e-6);
            }
        }
        DL_CHECK_EQ_INT(rj->mt.n, one.mt.n);
        DL_CHECK_NEAR(rj->mt.loss, one.mt.loss, 1e-5 * (1 + fabs(one.mt.loss)));
        DL_CHECK(memcmp(rj->mt.confusion, one.mt.confusion, sizeof one.mt.confusion) == 0);
    }
    shard_calls = ranks[0].rc.shard_calls;
    for (r = 0; r < size; r++) free(ranks[r].jb.w);
    free(one.w);
    free(ranks);
    return shard_calls;
}

static job base_job(void)
{
    job jb;
    memset(&jb, 0, sizeof jb);
    jb.n = 301; jb.batch = 24; jb.epochs = 3; jb.seed = 7;   /* last batch: 13 rows, split 6 + 7 */
    return jb;
}

DL_TEST(two_ranks_equal_one_process_adam_dropout)
{
    job jb = base_job();
    jb.val_split = 0.2f;
    check_against_one(jb, 2);
}

DL_TEST(two_ranks_nonblocking_hook_equal_one_process)
{
    job jb = base_job();
    jb.nonblocking = 1;
    check_against_one(jb, 2);
}

DL_TEST(three_ranks_uneven_and_empty_shares_sgd_clip_l2)
{
    job jb = base_job();
    jb.n = 302; jb.batch = 20; jb.sgd = 1;   /* last batch: 2 rows over 3 ranks, one empty */
    check_against_one(jb, 3);
}

/* The sharded update (ZeRO stage 1): every parameter summed by reduce_scatter, each
   rank updating its shard, allgather sharing the rest; then one more epoch in one
   process, which needs the whole Adam state that dl_fit gathered at its end. */
DL_TEST(two_ranks_sharded_update_equal_one_process)
{
    job jb = base_job();
    jb.val_split = 0.2f;
    jb.shard = 1;
    jb.refit = 1;
    DL_CHECK(check_against_one(jb, 2) > 0);
}

/* Three ranks, an empty share in the last batch, SGD with momentum and L2 (the
   update's other path), parameters shorter than 16 floats (one rank's shard holds
   them all) and longer ones. */
DL_TEST(three_ranks_sharded_sgd_momentum_l2)
{
    job jb = base_job();
    jb.n = 302; jb.batch = 20; jb.sgd = 1; jb.no_clip = 1; jb.shard = 1; jb.refit = 1;
    DL_CHECK(check_against_one(jb, 3) > 0);
}

/* clip_norm needs the whole gradient's norm: the update is not sharded then. */
DL_TEST(clip_norm_keeps_the_whole_update)
{
    job jb = base_job();
    jb.n = 302; jb.batch = 20; jb.sgd = 1; jb.shard = 1;
    DL_CHECK_EQ_INT(check_against_one(jb, 3), 0);
}

/* The shards tile [0, count) in rank order, cut at multiples of 16 but the end, and
   as even as 16-element blocks allow; a rank outside [0, size) gets none. */
DL_TEST(comm_shards_tile_the_array)
{
    static const size_t counts[] = { 0, 1, 15, 16, 17, 47, 48, 100, 4096, 100352, 100353 };
    int c, size, r;
    for (c = 0; c < (int)(sizeof counts / sizeof counts[0]); c++)
        for (size = 1; size <= 5; size++) {
            size_t next = 0, blocks = counts[c] / 16;
            for (r = 0; r < size; r++) {
                size_t lo, hi, want;
                dl_comm_shard(counts[c], r, size, &lo, &hi);
                DL_CHECK(lo == next && hi >= lo);
                DL_CHECK(lo % 16 == 0 && (r == size - 1 || hi % 16 == 0));
                want = blocks * (size_t)(r + 1) / (size_t)size - blocks * (size_t)r / (size_t)size;
                DL_CHECK((hi - lo) / 16 == want);   /* the last rank's remainder is under 16 */
                next = hi;
            }
            DL_CHECK(next == counts[c]);
        }
    {
        size_t lo = 7, hi = 7;
        dl_comm_shard(100, 2, 2, &lo, &hi);
        DL_CHECK(lo == 0 && hi == 0);
        dl_comm_shard(100, -1, 2, &lo, &hi);
        DL_CHECK(lo == 0 && hi == 0);
    }
}

/* The comparison above can fail: half the global batch trains other weights. */
DL_TEST(a_different_global_batch_is_told_apart)
{
    job one = base_job(), half = base_job();
    half.batch = 12;
    dl_set_threads(1);
    run_job(&one, NULL);
    run_job(&half, NULL);
    DL_CHECK(one.rc == DL_OK && half.rc == DL_OK);
    DL_CHECK(rel_diff(one.w, half.w, one.nw) > 1e-3);
    free(one.w);
    free(half.w);
}

DL_TEST(a_failing_collective_fails_every_rank)
{
    thread_arg *ranks = (thread_arg *)calloc(MAXR, sizeof *ranks);
    job jb = base_job();
    /* the start-up exchange (call 2), the parameter broadcast (calls 3-15), and the
       one sum of a step (its small gradients with the loss and hits) mid-training */
    static const long at[3] = { 2, 9, 40 };
    static const char *const what[3] = { "allreduce failed", "bcast of the parameters", "6 small gradients and 2 figures" };
    int r, i;
    dl_set_threads(1);
    for (i = 0; i < 3; i++) {
        run_ranks(&jb, 2, at[i], 0, ranks);
        for (r = 0; r < 2; r++) {
            DL_CHECK_EQ_INT(ranks[r].jb.rc, DL_ERR);
            DL_CHECK_STR_CONTAINS(ranks[r].jb.err, what[i]);
            DL_CHECK_STR_CONTAINS(ranks[r].jb.err, r ? "rank 1 of 2" : "rank 0 of 2");
            free(ranks[r].jb.w);
        }
    }
    free(ranks);
}

/* The same with the sharded update: a failing reduce_scatter (call 20: the fifth
   gradient of the first step) and a failing allgather (call 25: the third weight's)
   end every rank with an error that names it, and no rank waits for the others. */
DL_TEST(a_failing_sharded_collective_fails_every_rank)
{
    thread_arg *ranks = (thread_arg *)calloc(MAXR, sizeof *ranks);
    job jb = base_job();
    int r, i;
    static const long at[2] = { 20, 25 };
    static const char *const what[2] = { "reduce_scatter", "allgather" };
    jb.shard = 1;
    dl_set_threads(1);
    for (i = 0; i < 2; i++) {
        run_ranks(&jb, 2, at[i], 0, ranks);
        for (r = 0; r < 2; r++) {
            DL_CHECK_EQ_INT(ranks[r].jb.rc, DL_ERR);
            DL_CHECK_STR_CONTAINS(ranks[r].jb.err, what[i]);
            DL_CHECK_STR_CONTAINS(ranks[r].jb.err, r ? "rank 1 of 2" : "rank 0 of 2");
            free(ranks[r].jb.w);
        }
    }
    free(ranks);
}

/* One sample's squared error overflows, so the loss of one rank's share is inf (its
   gradient stays finite). The ranks sum the loss with the step's gradients, so both
   stop at the step one process stops at, before that step's update, with one
   process's weights: with whole updates and with sharded ones. */
DL_TEST(an_infinite_loss_on_one_rank_stops_every_rank_at_the_same_step)
{
    thread_arg *ranks = (thread_arg *)calloc(MAXR, sizeof *ranks);
    job one = base_job();
    int r, shard;
    one.mse = 1;
    one.huge_at = 1 + 150;
    dl_set_threads(1);
    run_job(&one, NULL);
    DL_CHECK_EQ_INT(one.rc, DL_ERR);
    DL_CHECK_STR_CONTAINS(one.err, "loss became");
    DL_CHECK(strstr(one.err, "at epoch") != NULL);
    for (shard = 0; shard < 2; shard++) {
        job jb = one;
        jb.shard = shard;
        run_ranks(&jb, 2, 0, 0, ranks);
        for (r = 0; r < 2; r++) {
            const char *at = strstr(ranks[r].jb.err, "at epoch");
            DL_CHECK_EQ_INT(ranks[r].jb.rc, DL_ERR);
            DL_CHECK_STR_CONTAINS(ranks[r].jb.err, "loss became");
            DL_CHECK(at && strcmp(at, strstr(one.err, "at epoch")) == 0);   /* the same epoch and step */
            DL_CHECK(rel_diff(one.w, ranks[r].jb.w, one.nw) < 1e-5);
            DL_CHECK(memcmp(ranks[0].jb.w, ranks[r].jb.w, one.nw * sizeof(float)) == 0);
        }
        printf("  %s: both ranks stop %s\n", shard ? "sharded" : "whole", strstr(one.err, "at epoch"));
        for (r = 0; r < 2; r++) free(ranks[r].jb.w);
    }
    free(one.w);
    free(ranks);
}

DL_TEST(ranks_with_different_data_are_refused)
{
    thread_arg *ranks = (thread_arg *)calloc(MAXR, sizeof *ranks);
    job jb = base_job();
    dl_set_threads(1);
    run_ranks(&jb, 2, 0, 300, ranks);
    DL_CHECK_EQ_INT(ranks[0].jb.rc, DL_ERR);
    DL_CHECK_EQ_INT(ranks[1].jb.rc, DL_ERR);
    DL_CHECK_STR_CONTAINS(ranks[0].jb.err, "differ from rank 0's");
    DL_CHECK_STR_CONTAINS(ranks[1].jb.err, "rank 1 has 300 samples");
    free(ranks[0].jb.w);
    free(ranks[1].jb.w);
    free(ranks);
}

DL_TEST(a_bad_comm_is_refused)
{
    job jb = base_job();
    dl_comm c;
    memset(&c, 0, sizeof c);
    c.rank = 2; c.size = 2; c.allreduce = fake_allreduce; c.bcast = fake_bcast;
    dl_set_threads(1);
    run_job(&jb, &c);
    DL_CHECK_EQ_INT(jb.rc, DL_ERR);
    DL_CHECK_STR_CONTAINS(jb.err, "rank 2 of size 2");
    free(jb.w);
    c.rank = 0; c.bcast = NULL;
    jb = base_job();
    run_job(&jb, &c);
    DL_CHECK_EQ_INT(jb.rc, DL_ERR);
    DL_CHECK_STR_CONTAINS(jb.err, "allreduce and bcast");
    free(jb.w);
    c.bcast = fake_bcast; c.reduce_scatter = fake_reduce_scatter;
    jb = base_job();
    run_job(&jb, &c);
    DL_CHECK_EQ_INT(jb.rc, DL_ERR);
    DL_CHECK_STR_CONTAINS(jb.err, "one of reduce_scatter and allgather");
    free(jb.w);
}

static int never_allreduce(void *user, void *buf, size_t count, int dtype) { (void)user; (void)buf; (void)count; (void)dtype; return DL_ERR; }
static int never_bcast(void *user, void *buf, size_t bytes) { (void)user; (void)buf; (void)bytes; return DL_ERR; }

/* Augmentation draws in sample order, which a split batch would change: refused
   with several ranks before any collective, rather than silently different. */
DL_TEST(augmentation_with_several_ranks_is_refused)
{
    dl_dataset d;
    dl_comm c;
    dl_fit_opts fo;
    dl_model *m = dl_sequential(DL_SHAPE(4, 4));
    const int shape[2] = { 4, 4 };
    int i;
    memset(&c, 0, sizeof c);
    c.rank = 0; c.size = 2; c.allreduce = never_allreduce; c.bcast = never_bcast;
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(2, DL_SOFTMAX));
    DL_CHECK_EQ_INT(dl_compile(m, DL_LOSS_SPARSE_CE, dl_sgd(0.1f, 0.0f)), DL_OK);
    DL_CHECK_EQ_INT(dl_dataset_alloc(&d, 8, 2, shape, 1), DL_OK);
    for (i = 0; i < 8 * 16; i++) d.x[i] = (float)(i % 7) / 7.0f;
    for (i = 0; i < 8; i++) d.y[i] = (float)(i % 2);
    memset(&fo, 0, sizeof fo);
    fo.epochs = 1; fo.batch = 4; fo.progress = DL_PROGRESS_NONE; fo.comm = &c; fo.augment_shift = 1;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &fo), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "augmentation is not supported with a comm of 2 ranks");
    fo.augment_shift = 0; fo.augment_flip = 1;
    DL_CHECK_EQ_INT(dl_fit(m, &d, &fo), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "augmentation is not supported");
    dl_dataset_free(&d);
    dl_model_free(m);
}

/* A batch split by dl_graph_set_rows draws, row for row, the dropout masks the
   whole batch draws (rows of 6 and of 8 floats: not and on whole hashes). */
DL_TEST(split_rows_draw_the_whole_batch_masks)
{
    int width;
    for (width = 6; width <= 8; width += 2) {
        dl_graph *g = dl_graph_new(5);
        int x = dl_input(g, "x", DL_SHAPE(width)), y = dl_op_dropout(g, x, 0.5f), i, j, same = 1, dropped = 0;
        float whole[7 * 8];
        dl_graph_plan(g, 7);
        dl_graph_set_training(g, 1);
        dl_graph_set_batch(g, 7);
        for (i = 0; i < 7 * width; i++) dl_node_value(g, x).data[i] = 1.0f;
        dl_forward(g, y);
        memcpy(whole, dl_node_value(g, y).data, sizeof(float) * 7 * (size_t)width);
        for (i = 0; i < 7 * width; i++) dropped += whole[i] == 0.0f;
        /* the same step again, as rows [0, 3) and [3, 7) of 7 */
        dl_graph_free(g);
        for (j = 0; j < 2; j++) {
            int first = j ? 3 : 0, rows = j ? 4 : 3;
            g = dl_graph_new(5);
            x = dl_input(g, "x", DL_SHAPE(width));
            y = dl_op_dropout(g, x, 0.5f);
            dl_graph_plan(g, 7);
            dl_graph_set_training(g, 1);
            dl_graph_set_batch(g, rows);
            DL_CHECK_EQ_INT(dl_graph_set_rows(g, first, 7), DL_OK);
            for (i = 0; i < rows * width; i++) dl_node_value(g, x).data[i] = 1.0f;
            dl_forward(g, y);
            same &= memcmp(whole + first * width, dl_node_value(g, y).data, sizeof(float) * (size_t)(rows * width)) == 0;
            dl_graph_free(g);
        }
        DL_CHECK(same);
        DL_CHECK(dropped > 7 * width / 5 && dropped < 7 * width * 4 / 5);
    }
}

DL_TEST(set_rows_outside_the_batch_is_refused)
{
    dl_graph *g = dl_graph_new(1);
    int x = dl_input(g, "x", DL_SHAPE(4));
    dl_op_dropout(g, x, 0.5f);
    dl_graph_plan(g, 8);
    dl_graph_set_batch(g, 4);
    DL_CHECK_EQ_INT(dl_graph_set_rows(g, 5, 8), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "rows [5, 9) are not inside a global batch of 8");
    DL_CHECK_EQ_INT(dl_graph_set_rows(g, 0, 3), DL_ERR);
    DL_CHECK_EQ_INT(dl_graph_set_rows(g, 4, 8), DL_OK);
    dl_graph_free(g);
}

/* The graph-level hook: dl_graph_set_comm (which broadcasts rank 0's weights),
   dl_graph_set_rows and dl_graph_step, as a user of the graph API drives them. */
typedef struct graph_job {
    const dl_comm *comm;
    int rows, first;
    int alone;                 /* then dl_graph_set_comm(g, NULL) and 4 whole-batch steps */
    float w[5 * 3 + 3];
    int rc;
} graph_job;

static void run_graph(graph_job *j)
{
    dl_graph *g = dl_graph_new(j->comm ? 11 + (uint64_t)j->comm->rank : 11);
    int x = dl_input(g, "x", DL_SHAPE(5)), t = dl_input(g, "t", DL_SHAPE(1));
    int w = dl_param(g, "w", DL_SHAPE(5, 3), DL_INIT_GLOROT_UNIFORM), b = dl_param(g, "b", DL_SHAPE(3), DL_INIT_ZEROS);
    int h = dl_op_dropout(g, dl_op_dense(g, x, w, b), 0.25f), loss = dl_loss_sparse_ce(g, h, t), step, i;
    dl_optimizer o = dl_adam(0.05f);
    j->rc = dl_graph_plan(g, 8);
    if (j->comm && j->rc == DL_OK) j->rc = dl_graph_set_comm(g, j->comm);
    dl_graph_set_training(g, 1);
    for (step = 0; step < (j->alone ? 16 : 12) && j->rc == DL_OK; step++) {
        float *xv, *tv;
        int rows = j->rows, first = j->first;
        if (step >= 12) {   /* the rest alone: the state must be whole on every rank */
            if (j->comm && step == 12) j->rc = dl_graph_set_comm(g, NULL);
            dl_graph_set_training(g, 0);   /* each rank's dropout stream went its own way */
            rows = 8; first = 0;
        }
        dl_graph_set_batch(g, rows);
        xv = dl_node_value(g, x).data;
        tv = dl_node_value(g, t).data;
        for (i = 0; i < rows * 5; i++) xv[i] = (float)(((first * 5 + i) * 7 + step) % 11) / 5.0f - 1.0f;
        for (i = 0; i < rows; i++) tv[i] = (float)((first + i + step) % 3);
        if (j->comm && step < 12) j->rc = dl_graph_set_rows(g, first, 8);
        if (j->rc == DL_OK) j->rc = dl_forward(g, loss);
        if (j->rc == DL_OK) j->rc = dl_graph_step(g, loss, &o, 0);
    }
    memcpy(j->w, dl_node_value(g, w).data, 15 * sizeof(float));
    memcpy(j->w + 15, dl_node_value(g, b).data, 3 * sizeof(float));
    dl_graph_free(g);
}

typedef struct graph_arg { graph_job jb; rank_ctx rc; } graph_arg;
static void graph_main(void *p) { run_graph(&((graph_arg *)p)->jb); }

/* Two ranks (rows [0, 3) and [3, 8) of each batch) against one graph; shard: with
   the sharded update for every parameter, then dl_graph_set_comm(g, NULL), which
   gathers the Adam state, and steps alone. */
static void check_graph_ranks(int shard)
{
    static hub h;
    graph_arg a[2];
    graph_job one;
    int r;
    memset(&one, 0, sizeof one);
    one.rows = 8;
    one.alone = shard;
    run_graph(&one);
    DL_CHECK_EQ_INT(one.rc, DL_OK);
    hub_init(&h, 2, 0);
    memset(a, 0, sizeof a);
    for (r = 0; r < 2; r++) {
        rank_init(&a[r].rc, &h, r, 2);
        if (shard) {
            a[r].rc.comm.reduce_scatter = fake_reduce_scatter;
            a[r].rc.comm.allgather = fake_allgather;
            a[r].rc.comm.shard_min = 1;
        }
        a[r].jb.comm = &a[r].rc.comm;
        a[r].jb.rows = r ? 5 : 3;
        a[r].jb.first = r ? 3 : 0;
        a[r].jb.alone = shard;
    }
    run_threads(2, graph_main, a, sizeof a[0]);
    for (r = 0; r < 2; r++) {
        DL_CHECK_EQ_INT(a[r].jb.rc, DL_OK);
        if (shard) {
            DL_CHECK(a[r].rc.shard_calls == 2 * 12);   /* w and b, every step with the comm */
            DL_CHECK(!a[r].rc.updated_all);
        }
        printf("  rank %d: within %.2g relative of one graph\n", r, rel_diff(one.w, a[r].jb.w, 18));
        DL_CHECK(rel_diff(one.w, a[r].jb.w, 18) <= 1e-5);
    }
    DL_CHECK(memcmp(a[0].jb.w, a[1].jb.w, sizeof a[0].jb.w) == 0);
}

DL_TEST(graph_step_with_a_comm_equals_one_graph) { check_graph_ranks(0); }

DL_TEST(graph_step_sharded_then_alone_equals_one_graph) { check_graph_ranks(1); }

/* dl_evaluate_comm with more ranks than samples: the empty shares still join the
   reduction, and every rank gets dl_evaluate's figures for the whole set. */
typedef struct eval_arg { rank_ctx rc; dl_metrics mt; int rc_eval; } eval_arg;

static void eval_job(eval_arg *a, const dl_comm *comm)
{
    dl_dataset d, two;
    dl_model *m = dl_sequential(DL_SHAPE(10));
    dl_add(m, dl_dense(4, DL_SOFTMAX));
    dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f));
    blobs(&d, 50);
    dl_dataset_split(&d, 0, 2, &two);
    a->rc_eval = dl_evaluate_comm(m, &two, &a->mt, comm);
    dl_model_free(m);
    dl_dataset_free(&d);
}

static void eval_main(void *p) { eval_arg *a = (eval_arg *)p; eval_job(a, &a->rc.comm); }

DL_TEST(evaluate_over_more_ranks_than_samples)
{
    static hub h;
    eval_arg one, a[3];
    int r;
    memset(&one, 0, sizeof one);
    eval_job(&one, NULL);
    DL_CHECK_EQ_INT(one.rc_eval, DL_OK);
    hub_init(&h, 3, 0);
    memset(a, 0, sizeof a);
    for (r = 0; r < 3; r++) rank_init(&a[r].rc, &h, r, 3);
    run_threads(3, eval_main, a, sizeof a[0]);
    for (r = 0; r < 3; r++) {
        DL_CHECK_EQ_INT(a[r].rc_eval, DL_OK);
        DL_CHECK_EQ_INT(a[r].mt.n, 2);
        DL_CHECK_NEAR(a[r].mt.loss, one.mt.loss, 1e-6 * (1 + fabs(one.mt.loss)));
        DL_CHECK_NEAR(a[r].mt.accuracy, one.mt.accuracy, 1e-7);
        DL_CHECK(memcmp(a[r].mt.confusion, one.mt.confusion, sizeof one.mt.confusion) == 0);
    }
}

DL_TEST_MAIN()
