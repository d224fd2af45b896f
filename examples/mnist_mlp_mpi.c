/* mnist_mlp_mpi - mnist_mlp (or with --cnn mnist_cnn) trained data-parallel over
   MPI ranks: every rank holds the model, trains on its share of each global batch,
   and the gradients are summed through dlcore's dl_comm hook: in an MPI-3
   shared-memory window when all ranks are on one host (mpi_node_sum.h), else with
   MPI's collectives (with --overlap, MPI_Iallreduce while the layers below compute
   theirs). The update is sharded (dl_comm.reduce_scatter and .allgather): each rank
   receives its shard of a large gradient's sum, runs Adam on that shard only and
   shares the updated weights, so the ranks split the optimizer's work instead of
   each doing all of it. The result is the model one process trains with the same
   --batch and --seed, up to the order of the gradient sums.

   mpirun -np 2 build/mnist_mlp_mpi --data data/fashion-mnist
   (as root add --allow-run-as-root; with more ranks than cores, --oversubscribe)

   usage: mnist_mlp_mpi [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]
                        [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet]
                        [--overlap] [--mpi-allreduce] [--no-shard] [--comm-barrier] [--cnn]
                        [--train-samples N] [--kill-rank R --kill-after N]
   --batch is the global batch, split over the ranks. --cnn trains mnist_cnn's model
   (the seeds' CNN) instead of the MLP: with the same flags it ends with the weights
   mnist_cnn trains. --train-samples N trains on the first N samples only.
   --threads 0 (the default) shares the node's cores among the ranks on it. Only
   rank 0 prints, writes the log and saves.
   --overlap starts each layer's reduction (MPI_Iallreduce) as soon as its gradient
   is ready and waits for it before that layer's update. It is not the default: with
   a core per rank nothing moves the data while the rank computes, and Open MPI's
   MPI_Iallreduce of the gradients takes about 1.5x its MPI_Allreduce
   (bench/mpi/mpi_allreduce.c), so on one host the blocking reduction trains faster
   (make bench-mpi: 2x1 against 2x1o). It turns the sharded update off.
   --mpi-allreduce uses MPI's collectives also on one host: MPI_Reduce_scatter and
   MPI_Allgatherv for the sharded update, MPI_Allreduce for the rest.
   --no-shard: every rank sums whole gradients (allreduce) and updates every weight.
   --comm-barrier (a diagnosis, without --overlap) puts a barrier before each
   gradient sum (and each allgather of the sharded update) and prints
   "gradient_sum_seconds <f> barrier_wait_seconds <f>": what the sums cost in
   training, apart from waiting for the slowest rank.
   --kill-rank/--kill-after: fault injection for the tests, rank R kills itself
   (SIGKILL) at its N-th collective call. Before the last line rank 0 prints
   "comm_seconds <f> of train_seconds": time inside the MPI calls during training.
   The last line of standard output is always
   "test_accuracy <f> test_loss <f> train_seconds <f>". */
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#include "mpi_node_sum.h"
#include <mpi.h>
#include <limits.h>
#include <signal.h>

#define MAX_REQ 64
/* Smaller arrays take MPI_Allreduce: the window's three barriers make it slower for
   a few floats (mpi_allreduce COUNT, 2 ranks: 128 floats 1.1 us against 2.6; 1280
   both 3.2; 4096 6.6 against 4.3). */
#define NODE_SUM_MIN 4096

typedef struct mpi_ctx {
    MPI_Comm comm;
    int rank;
    int use_node_sum;          /* gradients summed through the shared-memory window */
    node_sum ns;
    MPI_Request req[MAX_REQ];
    int used[MAX_REQ];
    double seconds;            /* inside MPI calls */
    int barrier;               /* --comm-barrier: wait for all ranks before each gradient sum */
    double waited, summed;     /* with it: in those barriers, and in the sums after them */
    int size, *counts, *displs; /* sharded update over MPI: each rank's shard (dl_comm_shard) */
    long calls, kill_after;    /* fault injection: die at this collective */
} mpi_ctx;

static int check(mpi_ctx *c, int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (rc == MPI_SUCCESS) return DL_OK;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "mnist_mlp_mpi: rank %d: %s failed: %s\n", c->rank, what, msg);
    return DL_ERR;
}

static void maybe_die(mpi_ctx *c)
{
    if (c->kill_after > 0 && ++c->calls == c->kill_after) {
        fprintf(stderr, "mnist_mlp_mpi: rank %d: killing itself at collective %ld (--kill-rank)\n", c->rank, c->calls);
        fflush(stderr);
        raise(SIGKILL);
    }
}

static int hook_allreduce(void *user, void *buf, size_t count, int dtype)
{
    mpi_ctx *c = (mpi_ctx *)user;
    double t0 = MPI_Wtime(), t1;
    int rc = MPI_SUCCESS, grad = dtype == DL_COMM_F32, window;
    maybe_die(c);
    if (count > INT_MAX) return DL_ERR;
    if (c->barrier && grad) {   /* a late rank's lag counted apart from the sum */
        rc = MPI_Barrier(c->comm);
        c->waited += MPI_Wtime() - t0;
    }
    t1 = MPI_Wtime();
    window = c->use_node_sum && grad && count >= NODE_SUM_MIN;
    if (rc == MPI_SUCCESS && window) rc = node_sum_run(&c->ns, (float *)buf, count);
    else if (rc == MPI_SUCCESS)
        rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, grad ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, c->comm);
    if (c->barrier && grad) c->summed += MPI_Wtime() - t1;
    c->seconds += MPI_Wtime() - t0;
    return check(c, rc, window ? "the shared-memory sum" : "MPI_Allreduce");
}

/* The sharded update (dl_comm.reduce_scatter and .allgather): in the window on one
   host, else MPI_Reduce_scatter and MPI_Allgatherv over dl_comm_shard's cuts. */
static void set_shards(mpi_ctx *c, size_t count)
{
    int r;
    for (r = 0; r < c->size; r++) {
        size_t lo, hi;
        dl_comm_shard(count, r, c->size, &lo, &hi);
        c->counts[r] = (int)(hi - lo);
        c->displs[r] = (int)lo;
    }
}

/* gather 0: reduce_scatter, 1: allgather; timed as hook_allreduce times a sum */
static int hook_shard(mpi_ctx *c, float *buf, size_t count, int gather)
{
    double t0 = MPI_Wtime(), t1;
    int rc = MPI_SUCCESS;
    maybe_die(c);
    if (count > INT_MAX) return DL_ERR;
    if (c->barrier) { rc = MPI_Barrier(c->comm); c->waited += MPI_Wtime() - t0; }
    t1 = MPI_Wtime();
    if (rc == MPI_SUCCESS && c->use_node_sum)
        rc = gather ? node_sum_gather(&c->ns, buf, count) : node_sum_scatter(&c->ns, buf, count);
    else if (rc == MPI_SUCCESS) {
        set_shards(c, count);
        if (gather)
            rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c->counts, c->displs, MPI_FLOAT, c->comm);
        else {   /* the sum of this rank's shard lands at the front of buf */
            rc = MPI_Reduce_scatter(MPI_IN_PLACE, buf, c->counts, MPI_FLOAT, MPI_SUM, c->comm);
            if (rc == MPI_SUCCESS) memmove(buf + c->displs[c->rank], buf, (size_t)c->counts[c->rank] * sizeof(float));
        }
    }
    if (c->barrier) c->summed += MPI_Wtime() - t1;
    c->seconds += MPI_Wtime() - t0;
    return check(c, rc, c->use_node_sum ? (gather ? "the shared-memory allgather" : "the shared-memory reduce-scatter")
                                        : (gather ? "MPI_Allgatherv" : "MPI_Reduce_scatter"));
}

static int hook_reduce_scatter(void *user, float *buf, size_t count) { return hook_shard((mpi_ctx *)user, buf, count, 0); }
static int hook_allgather(void *user, float *buf, size_t count) { return hook_shard((mpi_ctx *)user, buf, count, 1); }

static int hook_bcast(void *user, void *buf, size_t bytes)
{
    mpi_ctx *c = (mpi_ctx *)user;
    double t0 = MPI_Wtime();
    int rc = MPI_SUCCESS;
    maybe_die(c);
    while (bytes > 0 && rc == MPI_SUCCESS) {   /* MPI counts are ints */
        int n = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        rc = MPI_Bcast(buf, n, MPI_BYTE, 0, c->comm);
        buf = (char *)buf + n;
        bytes -= (size_t)n;
    }
    c->seconds += MPI_Wtime() - t0;
    return check(c, rc, "MPI_Bcast");
}

static int hook_iallreduce(void *user, void *buf, size_t count, int dtype, void **req)
{
    mpi_ctx *c = (mpi_ctx *)user;
    double t0 = MPI_Wtime();
    int i, rc;
    maybe_die(c);
    for (i = 0; i < MAX_REQ && c->used[i]; i++) {}
    if (i == MAX_REQ || count > INT_MAX) return DL_ERR;
    rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, dtype == DL_COMM_F64 ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM,
                        c->comm, &c->req[i]);
    c->used[i] = 1;
    *req = &c->req[i];
    c->seconds += MPI_Wtime() - t0;
    return check(c, rc, "MPI_Iallreduce");
}

static int hook_wait(void *user, void *req)
{
    mpi_ctx *c = (mpi_ctx *)user;
    MPI_Request *r = (MPI_Request *)req;
    double t0 = MPI_Wtime();
    int rc = MPI_Wait(r, MPI_STATUS_IGNORE);
    c->used[r - c->req] = 0;
    c->seconds += MPI_Wtime() - t0;
    return check(c, rc, "MPI_Wait");
}

static int usage(int rank, const char *why)
{
    if (rank == 0)
        fprintf(stderr, "mnist_mlp_mpi: %s\nusage: mnist_mlp_mpi [--data DIR] [--epochs N] [--batch N] [--lr X] [--seed N]"
                        " [--threads N] [--save FILE] [--log FILE.csv] [--profile] [--quiet] [--overlap] [--mpi-allreduce]"
                        " [--comm-barrier] [--no-shard] [--cnn] [--train-samples N] [--kill-rank R --kill-after N]\n", why);
    MPI_Finalize();
    return 2;
}

/* Every rank stops the job: a rank returning alone would leave the others
   waiting in their next collective. */
static int fail(int rank, const char *what)
{
    fprintf(stderr, "mnist_mlp_mpi: rank %d: %s\n", rank, what);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    const char *dir = "data/fashion-mnist", *save = NULL, *log = NULL;
    int epochs = 5, batch = 32, threads = 0, quiet = 0, profile = 0, overlap = 0, kill_rank = -1, cnn = 0, limit = 0, i;
    int mpi_sum = 0, comm_barrier = 0, shard = 1;
    int rank, size, local_size;
    long kill_after = 0;
    unsigned long seed = 0;
    float lr = 1e-3f;
    dl_dataset train, test, part;
    dl_model *m;
    dl_fit_opts fo;
    dl_metrics mt;
    dl_comm comm;
    mpi_ctx ctx;
    MPI_Comm node;
    double t0, secs;

    MPI_Init(&argc, &argv);
    /* errors come back as codes: the hook reports them and dl_fit fails */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--overlap")) { overlap = 1; continue; }
        if (!strcmp(a, "--mpi-allreduce")) { mpi_sum = 1; continue; }
        if (!strcmp(a, "--no-shard")) { shard = 0; continue; }
        if (!strcmp(a, "--comm-barrier")) { comm_barrier = 1; continue; }
        if (!strcmp(a, "--cnn")) { cnn = 1; continue; }
        if (!v) return usage(rank, "missing value after an option");
        if (!strcmp(a, "--data")) dir = v;
        else if (!strcmp(a, "--save")) save = v;
        else if (!strcmp(a, "--log")) log = v;
        else if (!strcmp(a, "--epochs")) epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--batch")) batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--threads")) threads = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed")) seed = strtoul(v, &end, 10);
        else if (!strcmp(a, "--lr")) lr = strtof(v, &end);
        else if (!strcmp(a, "--train-samples")) limit = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--kill-rank")) kill_rank = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--kill-after")) kill_after = strtol(v, &end, 10);
        else return usage(rank, "unknown option");
        if (end && *end) return usage(rank, "option values must be numbers");
        i++;
    }
    if (epochs < 1 || batch < 1 || threads < 0 || !(lr > 0.0f) || limit < 0)
        return usage(rank, "epochs, batch and lr must be positive, --train-samples a count >= 0");
    if (batch < size) return usage(rank, "--batch is the global batch: at least one row per rank");

    /* --threads 0: this node's cores shared among its ranks */
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    if (dl_set_threads(threads) != DL_OK) return fail(rank, dl_last_error());
    if (threads == 0) dl_set_threads(dl_get_threads() / local_size > 0 ? dl_get_threads() / local_size : 1);

    if (dl_idx_load(&train, dir, "train") != DL_OK || dl_idx_load(&test, dir, "t10k") != DL_OK) {
        if (rank == 0) fprintf(stderr, "(run `make data` to fetch Fashion-MNIST and the MNIST digits)\n");
        return fail(rank, dl_last_error());
    }
    if (train.shape[0] != 28 || train.shape[1] != 28 || test.x_size != train.x_size || train.n_classes > 10)
        return fail(rank, "the data set does not hold 28x28 images with at most 10 classes");
    if (dl_dataset_pack_u8(&train) != DL_OK || dl_dataset_pack_u8(&test) != DL_OK)
        if (rank == 0) fprintf(stderr, "mnist_mlp_mpi: keeping the pixels as floats: %s\n", dl_last_error());
    if (rank == 0)
        printf("data %s: %d train, %d test samples%s; isa %s; %d ranks x %d thread%s, global batch %d\n", dir, train.n,
               test.n, train.x8 ? " (pixels as bytes)" : "", dl_isa_name(), size, dl_get_threads(),
               dl_get_threads() == 1 ? "" : "s", batch);

    part = train;
    part.owned = 0;
    /* a shortened run: a view of the first `limit` samples, as mnist_cnn takes it */
    if (limit > 0 && limit < train.n && dl_dataset_split(&train, 0, limit, &part) == DL_OK && rank == 0)
        printf("training on the first %d samples\n", part.n);

    m = dl_sequential(DL_SHAPE(28, 28));
    dl_model_seed(m, seed);
    if (cnn) {   /* mnist_cnn's model, layer for layer */
        for (i = 0; i < 3; i++) {
            dl_add(m, dl_conv2d(32 << i, 3, 3, DL_RELU, NULL));
            dl_add(m, dl_max_pool2d(2, 2, NULL));
        }
        dl_add(m, dl_flatten());
        dl_add(m, dl_dense(128, DL_RELU));
    } else {
        dl_add(m, dl_flatten());
        dl_add(m, dl_dense(128, DL_RELU));
        dl_add(m, dl_dropout(0.2f));
    }
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(lr)) != DL_OK) return fail(rank, dl_last_error());
    if (!quiet && rank == 0) dl_summary(m, stdout);
    fflush(stdout);

    memset(&ctx, 0, sizeof ctx);
    ctx.comm = MPI_COMM_WORLD;
    ctx.rank = rank;
    ctx.kill_after = rank == kill_rank ? kill_after : 0;
    ctx.barrier = comm_barrier && !overlap;
    memset(&comm, 0, sizeof comm);
    comm.rank = rank;
    comm.size = size;
    comm.user = &ctx;
    comm.allreduce = hook_allreduce;
    comm.bcast = hook_bcast;
    if (overlap) { comm.iallreduce = hook_iallreduce; comm.wait = hook_wait; }
    else if (!mpi_sum) ctx.use_node_sum = node_sum_init(&ctx.ns, MPI_COMM_WORLD);
    ctx.size = size;
    if (shard && !overlap) {   /* the sharded update for arrays of NODE_SUM_MIN floats and more */
        ctx.counts = (int *)malloc(2 * (size_t)size * sizeof(int));
        if (!ctx.counts) return fail(rank, "out of memory");
        ctx.displs = ctx.counts + size;
        comm.reduce_scatter = hook_reduce_scatter;
        comm.allgather = hook_allgather;
        comm.shard_min = NODE_SUM_MIN;
    }

    memset(&fo, 0, sizeof fo);
    fo.epochs = epochs;
    fo.batch = batch;
    fo.csv_log = log;
    fo.progress = quiet ? DL_PROGRESS_NONE : DL_PROGRESS_AUTO;
    fo.profile = profile;
    fo.comm = &comm;
    /* the window is made before the clock starts, as DDP makes its buckets when the
       model is wrapped: it holds the largest gradient (the sum of all bounds it) */
    if (ctx.use_node_sum && check(&ctx, node_sum_reserve(&ctx.ns, dl_model_param_count(m)), "the shared-memory window") != DL_OK)
        return fail(rank, "could not set up the shared-memory window");
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if (dl_fit(m, &part, &fo) != DL_OK) return fail(rank, dl_last_error());
    secs = MPI_Wtime() - t0;
    if (rank == 0 && ctx.barrier)
        printf("gradient_sum_seconds %.3f barrier_wait_seconds %.3f\n", ctx.summed, ctx.waited);
    if (rank == 0) printf("comm_seconds %.3f of train_seconds %.3f (%s)\n", ctx.seconds, secs,
                          overlap ? "MPI_Iallreduce overlapping backward"
                          : ctx.use_node_sum ? (comm.reduce_scatter ? "shared-memory window, sharded update" : "shared-memory window")
                          : comm.reduce_scatter ? "MPI_Reduce_scatter + MPI_Allgatherv, sharded update" : "MPI_Allreduce");
    if (dl_evaluate_comm(m, &test, &mt, &comm) != DL_OK) return fail(rank, dl_last_error());
    if (!quiet && rank == 0) dl_metrics_print(&mt, stdout);
    if (save && rank == 0) {
        if (dl_save(m, save) != DL_OK) return fail(rank, dl_last_error());
        printf("saved %s\n", save);
    }
    if (rank == 0) printf("test_accuracy %.4f test_loss %.4f train_seconds %.3f\n", (double)mt.accuracy, (double)mt.loss, secs);
    fflush(stdout);
    dl_model_free(m);
    dl_dataset_free(&train);
    dl_dataset_free(&test);
    if (ctx.use_node_sum) node_sum_free(&ctx.ns);
    free(ctx.counts);
    MPI_Finalize();
    return 0;
}
