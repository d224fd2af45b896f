/* mpi_node_sum.h - the sum of a float array over the ranks of one host through an
   MPI-3 shared-memory window (MPI_Win_allocate_shared), for mnist_mlp_mpi's gradient
   sums and its benchmark (bench/mpi/mpi_allreduce.c).

   Every rank copies its array, but for its own chunk, into its own slot of the
   window. After a barrier, rank r sums chunk r of its array and of the other slots,
   and stores the sum in its slot; after a second barrier every rank copies the other
   chunks' sums out of their owners' slots. Each chunk is summed by one rank, so every
   rank gets the same bits whatever the timing.
   Open MPI's shared-memory transport (vader, without the cross-memory attach that a
   container forbids) instead copies each 32 KB fragment into a FIFO and out again,
   with a handshake per fragment. For the MLP's 407 KB on 2 ranks of a 2-core Zen 5
   VM: 18-30 us against MPI_Allreduce's 20-41 alone (mpi_allreduce, a quiet and a busy
   hour), and in training at batch 128 about 53 against 66 us a step (mnist_mlp_mpi
   --comm-barrier, before the copy-in was halved).
   The window grows (collectively) to the largest array asked for. It serves one
   host: node_sum_init returns 0 when the ranks span hosts, and the caller keeps
   MPI_Allreduce (a hierarchical sum, this within each host and MPI_Allreduce across
   hosts, would be the next step).
   node_sum_scatter and node_sum_gather are the two halves of that sum, for dlcore's
   sharded update (dl_comm.reduce_scatter and .allgather): the first leaves chunk r
   of the sum in rank r's array, the second copies every rank's chunk r to all. The
   chunks are dl_comm_shard's. They take one barrier each, not node_sum_run's
   closing one: every slot has two halves and each call uses the other half from the
   call before, so a call writes only a half whose last readers (two calls back)
   have all passed the barrier of the call in between.
   Every rank must make the same calls in the same order, as with any collective. */
#ifndef MPI_NODE_SUM_H
#define MPI_NODE_SUM_H
#include <mpi.h>
#include <string.h>

#define NODE_SUM_MAX_RANKS 64

typedef struct node_sum {
    MPI_Comm comm;      /* the ranks, all on this host; MPI_COMM_NULL: not usable */
    MPI_Win win;
    int rank, size, live;
    size_t cap;         /* floats in each half of a rank's slot */
    int half;           /* the half of every slot the next call uses */
    float *slot[NODE_SUM_MAX_RANKS];   /* each rank's slot (two halves), mapped into this process */
} node_sum;

/* Collective over `world`. Returns 1 when every rank of world is on this host (and
   there are at most NODE_SUM_MAX_RANKS), else 0 and the caller uses MPI_Allreduce. */
static int node_sum_init(node_sum *s, MPI_Comm world)
{
    MPI_Comm node;
    int wsize, nsize, all = 0, mine;
    memset(s, 0, sizeof *s);
    s->comm = MPI_COMM_NULL;
    if (MPI_Comm_size(world, &wsize) != MPI_SUCCESS) return 0;
    if (MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return 0;
    MPI_Comm_size(node, &nsize);
    mine = nsize == wsize && wsize <= NODE_SUM_MAX_RANKS;
    /* every rank must take the same path, whatever it sees */
    if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, world) != MPI_SUCCESS) all = 0;
    if (!all) { MPI_Comm_free(&node); return 0; }
    s->comm = node;
    MPI_Comm_rank(node, &s->rank);
    s->size = nsize;
    return 1;
}

static void node_sum_free(node_sum *s)
{
    if (s->live) { MPI_Win_unlock_all(s->win); MPI_Win_free(&s->win); }
    if (s->comm != MPI_COMM_NULL) MPI_Comm_free(&s->comm);
    s->live = 0;
    s->comm = MPI_COMM_NULL;
}

/* What this rank has stored in the window is visible to all, and theirs to it. */
static int node_sum_fence(node_sum *s)
{
    int rc = MPI_Win_sync(s->win);
    if (rc == MPI_SUCCESS) rc = MPI_Barrier(s->comm);
    if (rc == MPI_SUCCESS) rc = MPI_Win_sync(s->win);
    return rc;
}

/* Every page of the window mapped in every rank now, not at the first sums: a fresh
   window faults each 4 KB page in each process on its first touch, about 1 ms for
   the MLP's slots, and a caller that reserves before it starts its clock keeps that
   out of the training time. */
static int node_sum_touch(node_sum *s)
{
    volatile float sink = 0.0f;
    size_t j;
    int r, rc;
    memset(s->slot[s->rank], 0, 2 * s->cap * sizeof(float));
    if ((rc = node_sum_fence(s)) != MPI_SUCCESS) return rc;
    for (r = 0; r < s->size; r++) {
        for (j = 0; j < 2 * s->cap; j += 1024) sink += s->slot[r][j];
        sink += s->slot[r][2 * s->cap - 1];
    }
    (void)sink;
    return node_sum_fence(s);
}

/* Slots of two halves of at least n floats on every rank (collective; n is the same
   everywhere). */
static int node_sum_reserve(node_sum *s, size_t n)
{
    float *base = NULL;
    MPI_Aint bytes;
    int r, unit, rc;
    if (s->live && n <= s->cap) return MPI_SUCCESS;
    if (s->live) { MPI_Win_unlock_all(s->win); MPI_Win_free(&s->win); s->live = 0; }
    n = (n + 15) / 16 * 16;   /* whole 64-byte lines per slot */
    rc = MPI_Win_allocate_shared((MPI_Aint)(2 * n * sizeof(float)), (int)sizeof(float), MPI_INFO_NULL, s->comm, &base, &s->win);
    if (rc != MPI_SUCCESS) return rc;
    for (r = 0; r < s->size && rc == MPI_SUCCESS; r++)
        rc = MPI_Win_shared_query(s->win, r, &bytes, &unit, &s->slot[r]);
    if (rc == MPI_SUCCESS) rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
    if (rc != MPI_SUCCESS) { MPI_Win_free(&s->win); return rc; }
    s->live = 1;
    s->cap = n;
    s->half = 0;
    return node_sum_touch(s);
}

/* Rank r's slot in the half now in use. */
static float *node_sum_slot(const node_sum *s, int r) { return s->slot[r] + (size_t)s->half * s->cap; }

/* Chunk r of n floats: [n r / size, n (r + 1) / size), cut at multiples of 16, the
   last rank taking the remainder (dl_comm_shard's cut). */
static size_t node_sum_cut(const node_sum *s, size_t n, int r)
{
    return r >= s->size ? n : n / 16 * (size_t)r / (size_t)s->size * 16;
}

/* out = a + b. In blocks of 16 of known length, which gcc vectorizes at -O2 too (a
   loop of unknown length it leaves scalar there: the whole sum took 20% longer). out may be a. */
static void node_sum_add(float *out, const float *a, const float *b, size_t n)
{
    size_t j = 0;
    int q;
    for (; j + 16 <= n; j += 16) {
        float t[16];
        for (q = 0; q < 16; q++) t[q] = a[j + q] + b[j + q];
        for (q = 0; q < 16; q++) out[j + q] = t[q];
    }
    for (; j < n; j++) out[j] = a[j] + b[j];
}

/* The first phase of every sum: the chunks the others read into this rank's slot
   (its own chunk [lo, hi) stays in buf), a fence, then this rank's chunk of the sum
   in buf: its own values, then the others' in rank order. */
static int node_sum_own_chunk(node_sum *s, float *buf, size_t n, size_t lo, size_t hi)
{
    float *mine = node_sum_slot(s, s->rank);
    int r, rc;
    memcpy(mine, buf, lo * sizeof(float));
    memcpy(mine + hi, buf + hi, (n - hi) * sizeof(float));
    if ((rc = node_sum_fence(s)) != MPI_SUCCESS) return rc;
    for (r = 0; r < s->size; r++)
        if (r != s->rank) node_sum_add(buf + lo, buf + lo, node_sum_slot(s, r) + lo, hi - lo);
    return MPI_SUCCESS;
}

/* The last phase: every other rank's chunk out of its slot into buf. */
static void node_sum_copy_out(const node_sum *s, float *buf, size_t n)
{
    int r;
    for (r = 0; r < s->size; r++) {
        size_t a = node_sum_cut(s, n, r), b = node_sum_cut(s, n, r + 1);
        if (r != s->rank && b > a) memcpy(buf + a, node_sum_slot(s, r) + a, (b - a) * sizeof(float));
    }
}

/* buf (n floats) becomes the sum over the ranks, the same bits on every rank. Returns
   an MPI error code. */
static int node_sum_run(node_sum *s, float *buf, size_t n)
{
    size_t lo = node_sum_cut(s, n, s->rank), hi = node_sum_cut(s, n, s->rank + 1);
    float *mine;
    int rc;
    if (s->size == 1) return MPI_SUCCESS;   /* the sum of one */
    if ((rc = node_sum_reserve(s, n)) != MPI_SUCCESS) return rc;
    mine = node_sum_slot(s, s->rank);
    if ((rc = node_sum_own_chunk(s, buf, n, lo, hi)) != MPI_SUCCESS) return rc;
    memcpy(mine + lo, buf + lo, (hi - lo) * sizeof(float));   /* the sum, for the others to read */
    if ((rc = node_sum_fence(s)) != MPI_SUCCESS) return rc;
    node_sum_copy_out(s, buf, n);
    /* no rank writes its slot again before every rank has read the sums */
    return node_sum_fence(s);
}

/* The first half of node_sum_run: chunk r of the sum over the ranks in rank r's buf,
   the same bits node_sum_run gives there; the rest of buf is left as it was. */
static int node_sum_scatter(node_sum *s, float *buf, size_t n)
{
    size_t lo = node_sum_cut(s, n, s->rank), hi = node_sum_cut(s, n, s->rank + 1);
    int rc;
    if (s->size == 1) return MPI_SUCCESS;
    if ((rc = node_sum_reserve(s, n)) != MPI_SUCCESS) return rc;
    if ((rc = node_sum_own_chunk(s, buf, n, lo, hi)) != MPI_SUCCESS) return rc;
    s->half ^= 1;
    return MPI_SUCCESS;
}

/* The second half: every rank's chunk r of buf copied into chunk r of all the others'
   buf (an allgather). */
static int node_sum_gather(node_sum *s, float *buf, size_t n)
{
    size_t lo = node_sum_cut(s, n, s->rank), hi = node_sum_cut(s, n, s->rank + 1);
    int rc;
    if (s->size == 1) return MPI_SUCCESS;
    if ((rc = node_sum_reserve(s, n)) != MPI_SUCCESS) return rc;
    memcpy(node_sum_slot(s, s->rank) + lo, buf + lo, (hi - lo) * sizeof(float));
    if ((rc = node_sum_fence(s)) != MPI_SUCCESS) return rc;
    node_sum_copy_out(s, buf, n);
    s->half ^= 1;
    return MPI_SUCCESS;
}
#endif
