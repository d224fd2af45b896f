/* serve.c - dlcore-serve: an HTTP prediction server for dlcore model files,
   speaking TF Serving's REST API.

   dlcore-serve --model NAME=FILE [--model NAME2=FILE2 ...] [--listen 127.0.0.1:8501]
                [--threads N] [--max-batch N] [--batch-timeout-us N] [--max-body BYTES]
                [--max-connections N] [--timeout-s N] [--max-header BYTES]
                [--max-pixels N] [--poll-ms N] [--predict-threads N] [--json simdjson|cjson]

   POST /v1/models/NAME:predict   {"instances": [...]} -> {"predictions": [[...], ...]}
                                  {"inputs": ...}      -> {"outputs": [[...], ...]}
                                  image/png or image/jpeg body -> {"predictions": [[...]]}
   GET  /v1/models/NAME           status (version, AVAILABLE)
   GET  /v1/models/NAME/metadata  input and output shapes, accepted encodings
   GET  /healthz                  liveness
   GET  /metrics                  Prometheus text format

   Threads: --threads HTTP threads read requests and parse JSON (flat rows through
   simdjson, examples/serve_json.cc; the rest through cJSON) and images. With
   batching (the default) each runs its own libmicrohttpd daemon in its own select()
   loop (see "event loops"): the rows of the requests one round of the loop reads
   join one dl_predict call per model, up to --max-batch rows, and the answers go out
   in the next round; --batch-timeout-us > 0 makes a thread wait that long after the
   oldest row for more before it predicts. --max-batch 1 turns batching off: then
   libmicrohttpd's own pool (epoll) runs the threads, each predicting its requests
   one by one. Each model's dl_predict calls hold its lock (a model's activations
   live in one arena, so one call at a time).
   Signals: SIGHUP reloads every model file (also done when a file's mtime, size
   or inode changes, checked every --poll-ms); SIGTERM/SIGINT stop accepting,
   finish what is in flight and exit 0. */
#define _GNU_SOURCE   /* sched_getaffinity: the cores this process may run on */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

/* ---- options ---------------------------------------------------------------------- */

static struct {
    char     host[64];
    int      port;
    int      threads;
    int      max_batch;
    long     batch_timeout_us;
    size_t   max_body;
    int      max_conn;
    int      timeout_s;
    size_t   max_header;
    long     max_pixels;
    int      poll_ms;
    int      predict_threads;
} opt = { "127.0.0.1", 8501, 0, 64, 0, 4u << 20, 512, 10, 32768, 4000000, 1000, 1 };   /* threads 0: from the cores */

/* stb_image allocates what a file claims before it reads it: a 90-byte PNG whose
   IDAT chunk claims 1.2 GB has it reallocate 1.2 GB, then fail. Each allocation is
   capped by what an image within --max-pixels can need: 16 bytes a pixel and 1 MiB
   (16-bit RGBA takes 8 bytes a pixel plus a filter byte a row; a progressive JPEG of
   one column pads its rows to 8 pixels of 2-byte coefficients). A larger one fails
   as out of memory, and the image is refused. */
static size_t image_alloc_cap(void) { return (size_t)opt.max_pixels * 16 + ((size_t)1 << 20); }
static void *image_malloc(size_t n) { return n > image_alloc_cap() ? NULL : malloc(n); }
static void *image_realloc(void *p, size_t n) { return n > image_alloc_cap() ? NULL : realloc(p, n); }
#define STBI_MALLOC(n) image_malloc(n)
#define STBI_REALLOC(p, n) image_realloc(p, n)
#define STBI_FREE(p) free(p)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image_resize.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>

#define MAX_MODELS 16
#define MAX_CONN_BATCHING (FD_SETSIZE - 64)
#define MAX_CLASSES_COUNTED 64

/* ---- metrics: lock-free counters -------------------------------------------------- */

#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
typedef unsigned long long u64;

static const int codes[] = { 200, 400, 404, 405, 413, 415, 500 };
#define N_CODES 8   /* the last counts anything else */
static const double lat_le[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 };
#define N_LAT ((int)(sizeof lat_le / sizeof lat_le[0]))
static const int batch_le[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512 };
#define N_BATCH ((int)(sizeof batch_le / sizeof batch_le[0]))

typedef struct counters {
    u64 requests[N_CODES];
    u64 lat_bucket[N_LAT + 1], lat_count, lat_sum_ns;
    u64 batch_bucket[N_BATCH + 1], batch_count, batch_rows;
    u64 classes[MAX_CLASSES_COUNTED];
    u64 reload_ok, reload_err;
} counters;

/* ---- models and their batching queues --------------------------------------------- */

typedef struct job {
    struct job *next;
    float  *x, *y;
    int     rows, in_size, out_size;
    long    version;
    int     status;                /* HTTP status once done */
    char    err[192];
    int     done;
} job;

typedef struct slot {
    char     name[64];
    char     path[4096];
    /* pmu: the model pointer and every dl_predict on it */
    pthread_mutex_t pmu;
    dl_model *model;
    /* qmu: the shape handlers read */
    pthread_mutex_t qmu;
    dl_shape in_shape;
    int      in_size, out_size;
    long     version;
    double   loaded_at, load_seconds;
    struct stat seen;              /* the file as last loaded or tried */
    float   *bx, *by;
    size_t   bx_cap, by_cap;
    counters c;
} slot;

static slot    models[MAX_MODELS];
static int     n_models;
static counters other;            /* requests that name no served model */
static struct MHD_Daemon *daemon_;
static int     draining;
static long    active;            /* requests begun and not completed */
static double  started_at;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void logf_(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    time_t t = time(NULL);
    struct tm tm;
    size_t n;
    gmtime_r(&t, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ dlcore-serve: ", &tm);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

static slot *find_model(const char *name, size_t len)
{
    int i;
    for (i = 0; i < n_models; i++)
        if (strlen(models[i].name) == len && memcmp(models[i].name, name, len) == 0) return &models[i];
    return NULL;
}

/* ---- a growable string ------------------------------------------------------------- */

typedef struct sbuf { char *p; size_t len, cap; int failed; } sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    char *p;
    size_t cap;
    if (b->failed || b->len + more + 1 <= b->cap) return;
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    p = (char *)realloc(b->p, cap);
    if (!p) { b->failed = 1; return; }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->failed) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    char small[256];
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof small) { sb_put(b, small, (size_t)n); return; }
    sb_reserve(b, (size_t)n);
    if (b->failed) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A JSON string's content: quotes, backslashes and control bytes escaped. */
static void sb_json_str(sbuf *b, const char *s, size_t max)
{
    size_t i;
    for (i = 0; s[i] && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') { char e[2] = { '\\', (char)ch }; sb_put(b, e, 2); }
        else if (ch < 0x20 || ch == 0x7f) sb_printf(b, "\\u%04x", ch);
        else sb_put(b, (const char *)&ch, 1);
    }
}

/* ---- requests ---------------------------------------------------------------------- */

enum { R_NONE, R_PREDICT };
enum { K_JSON, K_IMAGE };

typedef struct req {
    int    route;
    slot  *s;
    int    kind;
    char  *body;
    size_t len, cap;
    int    too_big, responded, queued, columnar, get;
    int    code;
    double t0;
    job    j;
} req;

static void count_request(counters *c, int code, double seconds)
{
    int i, k = N_CODES - 1;
    for (i = 0; i < N_CODES - 1; i++) if (codes[i] == code) k = i;
    ADD(&c->requests[k], 1);
    for (i = 0; i < N_LAT && seconds > lat_le[i]; i++) {}
    ADD(&c->lat_bucket[i], 1);
    ADD(&c->lat_count, 1);
    ADD(&c->lat_sum_ns, (u64)(seconds * 1e9));
}

static enum MHD_Result respond(struct MHD_Connection *conn, req *r, int code, const char *ctype, sbuf *b)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    if (b->failed) { free(b->p); b->p = NULL; b->len = 0; code = 500; }
    resp = MHD_create_response_from_buffer(b->len, b->p ? (void *)b->p : (void *)"", b->p ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(b->p); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (code == 405) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->route == R_PREDICT ? "POST" : "GET, HEAD");
    if (LOAD(&draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, (unsigned int)code, resp);
    MHD_destroy_response(resp);
    r->code = code;
    r->responded = 1;
    count_request(r->s ? &r->s->c : &other, code, mono_now() - r->t0);
    return ret;
}

static enum MHD_Result respond_error(struct MHD_Connection *conn, req *r, int code, const char *fmt, ...)
{
    char msg[512];
    sbuf b = { 0 };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sb_put(&b, "{\"error\": \"", 11);
    sb_json_str(&b, msg, sizeof msg);
    sb_put(&b, "\"}\n", 3);
    return respond(conn, r, code, "application/json", &b);
}

/* ---- JSON requests ----------------------------------------------------------------- */

/* cJSON allocates one node per number and frees each: half of a one-instance
   request's time went to malloc and free. While a thread parses, its nodes come
   from that thread's bump arena instead, dropped whole after the parse. A body
   needs at most one node per two bytes ("0,"); bodies whose bound exceeds the
   arena cap parse on malloc as before. */
#define ARENA_CAP ((size_t)64 << 20)
typedef struct arena { char *p; size_t used, cap; } arena;
static __thread arena tl_arena;
static __thread int tl_arena_on;
/* A key only for its destructor: frees what a thread of libmicrohttpd's pool
   holds (its arena, dlcore's packing workspace) as the thread exits. */
static pthread_key_t arena_key;
static __thread int tl_registered;
static void arena_thread_free(void *a) { free(((arena *)a)->p); dl_thread_release(); }
static void register_thread(void) { if (!tl_registered) { tl_registered = 1; pthread_setspecific(arena_key, &tl_arena); } }

static void *arena_alloc(size_t n)
{
    arena *a = &tl_arena;
    n = (n + 15) & ~(size_t)15;
    if (tl_arena_on && a->cap - a->used >= n) { void *q = a->p + a->used; a->used += n; return q; }
    return malloc(n);
}

static void arena_free(void *q)
{
    arena *a = &tl_arena;
    if (q && !((char *)q >= a->p && (char *)q < a->p + a->cap)) free(q);
}

/* Makes room for a body of len bytes; returns 0 when the arena is not used. */
static int arena_begin(size_t len)
{
    arena *a = &tl_arena;
    size_t need = (len / 2 + 16) * ((sizeof(cJSON) + 15) & ~(size_t)15) + 4096;
    tl_arena_on = 0;
    if (need > ARENA_CAP) return 0;
    if (need > a->cap) {
        size_t cap = a->cap ? a->cap : (size_t)1 << 20;
        char *p;
        while (cap < need) cap *= 2;
        p = (char *)malloc(cap);
        if (!p) return 0;
        register_thread();
        free(a->p);
        a->p = p;
        a->cap = cap;
    }
    a->used = 0;
    tl_arena_on = 1;
    return 1;
}

static void arena_end(void) { tl_arena_on = 0; }

/* cJSON allocates through the arena from here on (once, before any thread parses). */
static void json_use_arena(void)
{
    cJSON_Hooks hooks;
    hooks.malloc_fn = arena_alloc;
    hooks.free_fn = arena_free;
    pthread_key_create(&arena_key, arena_thread_free);
    cJSON_InitHooks(&hooks);
}


static int read_number(const cJSON *v, float *out, char *err, size_t errsz)
{
    double d;
    if (!cJSON_IsNumber(v)) {
        snprintf(err, errsz, "expected a number, found %s", cJSON_IsString(v) ? "a string" : cJSON_IsArray(v) ? "an array"
                 : cJSON_IsObject(v) ? "an object" : cJSON_IsBool(v) ? "a boolean" : "null");
        return -1;
    }
    d = v->valuedouble;
    *out = (float)d;
    if (!isfinite(*out)) { snprintf(err, errsz, "%g is not a finite float32", d); return -1; }
    return 0;
}

/* One instance into out[0..numel): a flat array of numel numbers, or arrays nested
   exactly as the model's sample shape. */
static int read_nested(const cJSON *a, const dl_shape *s, int dim, float *out, char *err, size_t errsz)
{
    int n = cJSON_GetArraySize(a), i = 0;
    size_t stride = 1;
    const cJSON *e;
    if (!cJSON_IsArray(a)) return read_number(a, out, err, errsz);
    if (n != s->d[dim]) { snprintf(err, errsz, "dimension %d has %d values, the model's input shape needs %d", dim, n, s->d[dim]); return -1; }
    for (i = dim + 1; i < s->ndim; i++) stride *= (size_t)s->d[i];
    i = 0;
    cJSON_ArrayForEach(e, a) {
        if (dim + 1 < s->ndim) {
            if (!cJSON_IsArray(e)) { snprintf(err, errsz, "dimension %d: expected an array, found a %s", dim + 1, cJSON_IsNumber(e) ? "number" : "non-array"); return -1; }
            if (read_nested(e, s, dim + 1, out + (size_t)i * stride, err, errsz)) return -1;
        } else if (read_number(e, out + i, err, errsz)) return -1;
        i++;
    }
    return 0;
}

static int read_instance(const cJSON *a, const dl_shape *s, int numel, float *out, char *err, size_t errsz)
{
    const cJSON *e;
    int i = 0;
    if (!cJSON_IsArray(a)) { snprintf(err, errsz, "an instance must be an array of the input shape"); return -1; }
    if (s->ndim > 1 && cJSON_GetArraySize(a) == numel && cJSON_IsNumber(a->child)) {
        cJSON_ArrayForEach(e, a) { if (read_number(e, out + i, err, errsz)) return -1; i++; }
        return 0;
    }
    return read_nested(a, s, 0, out, err, errsz);
}

/* examples/serve_json.cc: the common body through simdjson (1: parsed; 0: declined) */
int dls_json_rows(const char *body, size_t len, size_t cap, int numel, float **x, int *rows);
#define JSON_FAST_MAX ((size_t)4 << 20)   /* larger bodies: cJSON (simdjson's parser keeps its buffers) */
static int json_fast = 1;                 /* 0: cJSON alone (--json cjson) */

/* Fills r->j.x and r->j.rows from {"instances": ...} or {"inputs": ...}. Returns 0,
   or the HTTP status with r->j.err set. Flat rows go through simdjson first; what it
   declines is parsed here by cJSON, whose tree names what is wrong. */
static int parse_json(req *r, const dl_shape *s, int numel)
{
    const char *end = NULL;
    cJSON *root, *inst, *inp, *v;
    char e[160] = "";
    int n, i, code = 400;
    if (json_fast && r->len <= JSON_FAST_MAX && dls_json_rows(r->body, r->len, r->cap, numel, &r->j.x, &r->j.rows)) {
        r->columnar = 0;
        return 0;
    }
    arena_begin(r->len);
    root = cJSON_ParseWithLengthOpts(r->body, r->len, &end, 0);
    if (!root) {
        size_t at = end && end >= r->body ? (size_t)(end - r->body) : 0;
        arena_end();
        snprintf(r->j.err, sizeof r->j.err, "malformed JSON near byte %zu of %zu", at, r->len);
        return 400;
    }
    while (end && (size_t)(end - r->body) < r->len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && (size_t)(end - r->body) < r->len) {
        snprintf(r->j.err, sizeof r->j.err, "malformed JSON: trailing bytes at %zu", (size_t)(end - r->body));
        goto out;
    }
    if (!cJSON_IsObject(root)) { snprintf(r->j.err, sizeof r->j.err, "the body must be a JSON object with \"instances\" or \"inputs\""); goto out; }
    inst = cJSON_GetObjectItemCaseSensitive(root, "instances");
    inp = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (!inst == !inp) { snprintf(r->j.err, sizeof r->j.err, "the body needs exactly one of \"instances\" (rows) or \"inputs\" (columns)"); goto out; }
    v = inst ? inst : inp;
    r->columnar = inp != NULL;
    if (cJSON_IsObject(v)) {   /* named columnar input: {"inputs": {"x": ...}} */
        if (cJSON_GetArraySize(v) != 1) { snprintf(r->j.err, sizeof r->j.err, "\"inputs\" names %d tensors; the model has one input", cJSON_GetArraySize(v)); goto out; }
        v = v->child;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) { snprintf(r->j.err, sizeof r->j.err, "\"%s\" must be a non-empty array", inst ? "instances" : "inputs"); goto out; }
    n = cJSON_GetArraySize(v);
    if (cJSON_IsNumber(v->child) && (inp || s->ndim > 1 || numel > 1)) {
        /* flat columnar data: n * numel numbers (rows may not be flat scalars) */
        if (!inp) { snprintf(r->j.err, sizeof r->j.err, "each instance must be an array of the input shape, not a number"); goto out; }
        if (n % numel) { snprintf(r->j.err, sizeof r->j.err, "flat \"inputs\" has %d values, not a multiple of the input size %d", n, numel); goto out; }
        r->j.rows = n / numel;
        r->j.x = (float *)malloc((size_t)n * sizeof(float));
        if (!r->j.x) { code = 500; snprintf(r->j.err, sizeof r->j.err, "out of memory"); goto out; }
        i = 0;
        for (inst = v->child; inst; inst = inst->next, i++)
            if (read_number(inst, r->j.x + i, e, sizeof e)) { snprintf(r->j.err, sizeof r->j.err, "inputs[%d]: %s", i, e); goto out; }
    } else {
        /* Every value takes two bytes of the body at least ("0,"). When n rows cannot fit,
           one of them is bad: read them all into one row's room, to name that one, rather
           than allocate for n (4 MB of "[]," would ask for 5 GB). */
        int fits = (size_t)n * (size_t)numel <= r->len / 2 + 1;
        r->j.rows = n;
        r->j.x = (float *)malloc((fits ? (size_t)n : 1) * (size_t)numel * sizeof(float));
        if (!r->j.x) { code = 500; snprintf(r->j.err, sizeof r->j.err, "out of memory"); goto out; }
        i = 0;
        for (inst = v->child; inst; inst = inst->next, i++)
            if (read_instance(inst, s, numel, r->j.x + (fits ? (size_t)i * (size_t)numel : 0), e, sizeof e)) {
                char sh[64];
                snprintf(r->j.err, sizeof r->j.err, "%s[%d]: %s (input shape %s)", inp ? "inputs" : "instances", i, e, dl_shape_str(*s, sh, sizeof sh));
                goto out;
            }
        if (!fits) { snprintf(r->j.err, sizeof r->j.err, "%d instances of %d values cannot fit in %zu bytes", n, numel, r->len); goto out; }
    }
    code = 0;
out:
    cJSON_Delete(root);
    arena_end();
    return code;
}

/* ---- image requests ---------------------------------------------------------------- */

/* stb_image as Debian ships it (0.0~git20220908) writes past its 257-entry Huffman
   size table when a JPEG's DHT segment declares more than 256 codes in one table
   (nothings/stb#1289, #1291), a memory corruption any client could send. Every
   FF C4 in the body is read as stb_image would read a DHT there; one whose table
   declares more than 256 codes refuses the whole image before it is decoded. In a
   sound JPEG, FF C4 occurs only as that marker (entropy-coded data stuffs FF 00),
   so no sound image is refused. A body is a JPEG to stb_image when it opens with
   FF, any more FF fill bytes, then D8 (SOI). Returns the offset of the bad table,
   or -1. */
static long jpeg_bad_huffman_table(const unsigned char *p, size_t n)
{
    size_t i = 1, at, end;
    if (n < 2 || p[0] != 0xFF) return -1;
    while (i < n && p[i] == 0xFF) i++;
    if (i >= n || p[i] != 0xD8) return -1;
    for (; i + 4 <= n; i++) {
        if (p[i] != 0xFF || p[i + 1] != 0xC4) continue;
        at = i + 4;
        end = i + 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
        while (at < end && at < n) {   /* class/id byte, 16 counts, the values */
            unsigned k, codes = 0;
            for (k = 1; k <= 16 && at + k < n; k++) codes += p[at + k];   /* stb_image reads 0 past the end */
            if (codes > 256) return (long)at;
            at += 17 + codes;
        }
    }
    return -1;
}

static int parse_image(req *r, const dl_shape *s, int numel)
{
    int w, h, comp, W, H, i;
    long bad;
    unsigned char *px, *use;
    if (s->ndim == 2) { H = s->d[0]; W = s->d[1]; }
    else if (s->ndim == 3 && s->d[2] == 1) { H = s->d[0]; W = s->d[1]; }
    else if (s->ndim == 3 && s->d[0] == 1) { H = s->d[1]; W = s->d[2]; }
    else {
        char sh[64];
        snprintf(r->j.err, sizeof r->j.err, "the model's input shape %s is not a one-channel image", dl_shape_str(*s, sh, sizeof sh));
        return 415;
    }
    if ((bad = jpeg_bad_huffman_table((const unsigned char *)r->body, r->len)) >= 0) {
        snprintf(r->j.err, sizeof r->j.err, "corrupt JPEG: the Huffman table at byte %ld declares more than 256 codes", bad);
        return 400;
    }
    if (r->len > (size_t)0x7fffffff || !stbi_info_from_memory((const stbi_uc *)r->body, (int)r->len, &w, &h, &comp)) {
        snprintf(r->j.err, sizeof r->j.err, "not a PNG or JPEG image (%s)", stbi_failure_reason());
        return 400;
    }
    if ((double)w * (double)h > (double)opt.max_pixels) {
        snprintf(r->j.err, sizeof r->j.err, "the image is %dx%d = %.0f pixels; the limit is %ld", w, h, (double)w * (double)h, opt.max_pixels);
        return 413;
    }
    px = stbi_load_from_memory((const stbi_uc *)r->body, (int)r->len, &w, &h, &comp, 1);
    if (!px) {
        const char *why = stbi_failure_reason();
        if (why && !strcmp(why, "outofmem")) why = "it claims more data than an image within --max-pixels holds";
        snprintf(r->j.err, sizeof r->j.err, "corrupt image (%s)", why ? why : "unknown");
        return 400;
    }
    use = px;
    if (w != W || h != H) {
        use = (unsigned char *)malloc((size_t)W * (size_t)H);
        if (!use || !stbir_resize_uint8(px, w, h, 0, use, W, H, 0, 1)) {
            free(use);
            stbi_image_free(px);
            snprintf(r->j.err, sizeof r->j.err, "cannot resize the %dx%d image to %dx%d", w, h, W, H);
            return 400;
        }
    }
    r->j.rows = 1;
    r->j.x = (float *)malloc((size_t)numel * sizeof(float));
    if (r->j.x) for (i = 0; i < numel; i++) r->j.x[i] = (float)use[i] * (1.0f / 255.0f);   /* as dlcore makes pixels: same values as the data set */
    if (use != px) free(use);
    stbi_image_free(px);
    if (!r->j.x) { snprintf(r->j.err, sizeof r->j.err, "out of memory"); return 500; }
    return 0;
}

/* ---- prediction ------------------------------------------------------------------- */

static void count_batch(slot *s, const float *y, int rows, int out)
{
    int i, j;
    for (j = 0; j < N_BATCH && rows > batch_le[j]; j++) {}
    ADD(&s->c.batch_bucket[j], 1);
    ADD(&s->c.batch_count, 1);
    ADD(&s->c.batch_rows, (u64)rows);
    for (i = 0; i < rows; i++) {
        const float *v = y + (size_t)i * (size_t)out;
        int best = 0;
        if (out == 1) best = v[0] >= 0.5f;
        else for (j = 1; j < out; j++) if (v[j] > v[best]) best = j;
        if (best < MAX_CLASSES_COUNTED) ADD(&s->c.classes[best], 1);
    }
}

static int grow(float **p, size_t *cap, size_t n)
{
    float *q;
    if (n <= *cap) return 0;
    q = (float *)realloc(*p, n * sizeof(float));
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Predicts every job of a list in one dl_predict call, under the model's lock, so a
   reload swaps between calls: a call in progress finishes on the model it began with. */
static void run_jobs(slot *s, job *list)
{
    job *j;
    int rows = 0, in, out;
    long version;
    float *x, *y;
    pthread_mutex_lock(&s->pmu);
    in = dl_input_size(s->model);
    out = dl_output_size(s->model);
    version = s->version;
    for (j = list; j; j = j->next) {
        if (j->in_size != in) {
            j->status = 400;
            snprintf(j->err, sizeof j->err, "the model was reloaded with another input size (%d, not %d); send the request again", in, j->in_size);
        } else rows += j->rows;
    }
    if (list && !list->next && list->status == 0) { x = list->x; rows = list->rows; }
    else {
        if (grow(&s->bx, &s->bx_cap, (size_t)rows * (size_t)in)) rows = -1;
        x = s->bx;
        if (rows > 0) {
            size_t at = 0;
            for (j = list; j; j = j->next)
                if (j->status == 0) { memcpy(x + at, j->x, (size_t)j->rows * (size_t)in * sizeof(float)); at += (size_t)j->rows * (size_t)in; }
        }
    }
    if (rows > 0 && grow(&s->by, &s->by_cap, (size_t)rows * (size_t)out)) rows = -1;
    y = s->by;
    if (rows > 0 && dl_predict(s->model, x, rows, y) != DL_OK) {
        for (j = list; j; j = j->next)
            if (j->status == 0) { j->status = 500; snprintf(j->err, sizeof j->err, "dl_predict failed: %.160s", dl_last_error()); }
        rows = 0;
    }
    if (rows > 0) {   /* still under the lock: s->by is shared by every thread that predicts */
        size_t at = 0;
        count_batch(s, y, rows, out);
        for (j = list; j; j = j->next) {
            if (j->status) continue;
            j->y = (float *)malloc((size_t)j->rows * (size_t)out * sizeof(float));
            if (!j->y) { j->status = 500; snprintf(j->err, sizeof j->err, "out of memory"); }
            else { memcpy(j->y, y + at, (size_t)j->rows * (size_t)out * sizeof(float)); j->status = 200; }
            j->out_size = out;
            j->version = version;
            at += (size_t)j->rows * (size_t)out;
        }
    }
    pthread_mutex_unlock(&s->pmu);
    if (rows < 0)
        for (j = list; j; j = j->next)
            if (j->status == 0) { j->status = 500; snprintf(j->err, sizeof j->err, "out of memory for a batch"); }
}

/* ---- event loops (batching on) ----------------------------------------------------- */

/* With batching, each HTTP thread runs its own libmicrohttpd daemon (all of them
   accept from one listening socket) in a loop of its own: select() on the daemon's
   sockets, then MHD_run_from_select(), which calls on_request for every connection
   with something to read. A request whose body is in is parsed and its rows join
   the thread's batch for that model, without a response yet; once a round has read
   everything that is ready (or --max-batch rows are in, or the oldest row has
   waited --batch-timeout-us), the thread predicts the batch in one dl_predict call,
   and the next round, which calls on_request again for each connection still
   without a response, sends the answers. No request changes threads or is
   suspended: a batch costs one more select(), not a thread switch and a wake-up per
   request (one core: 41k requests/s against 15k with a batching thread per model,
   and 32k without batching). */
typedef struct loop {
    struct MHD_Daemon *d;
    pthread_t th;
    job  *head[MAX_MODELS], **tail[MAX_MODELS];
    int   rows[MAX_MODELS];
    int   pending, answered;        /* rows waiting; batches predicted but not yet sent */
    double oldest;                  /* when the oldest waiting row arrived */
    int   quiesced;
    unsigned int max_conn;          /* this daemon's share of --max-connections */
} loop;

static loop  *loops;
static int    n_loops, loops_stop;
static MHD_socket listen_fd = MHD_INVALID_SOCKET;
static __thread loop *tl_loop;

static void flush_model(loop *L, int m)
{
    job *list = L->head[m], *j;
    if (!list) return;
    L->pending -= L->rows[m];
    L->head[m] = NULL;
    L->tail[m] = &L->head[m];
    L->rows[m] = 0;
    run_jobs(&models[m], list);
    for (j = list; j;) {   /* unlinked as they are marked, so each next is read first */
        job *next = j->next;
        j->next = NULL;
        j->done = 1;
        j = next;
    }
    L->answered = 1;
}

static void flush_all(loop *L)
{
    int m;
    for (m = 0; m < n_models; m++) flush_model(L, m);
}

/* Adds a parsed request to its thread's batch; predicts the batch once it is full. */
static void enqueue(loop *L, slot *s, job *j)
{
    int m = (int)(s - models);
    if (!L->pending) L->oldest = mono_now();
    j->next = NULL;
    *L->tail[m] = j;
    L->tail[m] = &j->next;
    L->rows[m] += j->rows;
    L->pending += j->rows;
    if (L->rows[m] >= opt.max_batch) flush_model(L, m);
}

/* A connection closed while its rows wait (the client went away): they leave the batch. */
static void dequeue(loop *L, job *j)
{
    int m;
    for (m = 0; m < n_models; m++) {
        job **pp;
        for (pp = &L->head[m]; *pp; pp = &(*pp)->next)
            if (*pp == j) {
                *pp = j->next;
                if (L->tail[m] == &j->next) L->tail[m] = pp;
                L->rows[m] -= j->rows;
                L->pending -= j->rows;
                return;
            }
    }
}

static void *loop_main(void *arg)
{
    loop *L = (loop *)arg;
    int m;
    tl_loop = L;
    for (m = 0; m < MAX_MODELS; m++) L->tail[m] = &L->head[m];
    register_thread();
    while (!__atomic_load_n(&loops_stop, __ATOMIC_ACQUIRE)) {
        fd_set rs, ws, es;
        MHD_socket mx = 0;
        struct timeval tv;
        double wait = 0.02;   /* 20 ms at most: SIGTERM and the connection timeouts are seen */
        int n;
        if (!L->quiesced && LOAD(&draining)) { MHD_quiesce_daemon(L->d); __atomic_store_n(&L->quiesced, 1, __ATOMIC_RELAXED); }
        FD_ZERO(&rs); FD_ZERO(&ws); FD_ZERO(&es);
        if (MHD_get_fdset2(L->d, &rs, &ws, &es, &mx, FD_SETSIZE) != MHD_YES) { logf_("MHD_get_fdset2 failed"); break; }
        /* At its limit a daemon in this mode would accept and close at once: leave the
           connection in the kernel's queue for a thread with room (as libmicrohttpd's
           own threads do), or until one of this thread's closes. */
        if (!L->quiesced) {
            const union MHD_DaemonInfo *ci = MHD_get_daemon_info(L->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
            if (ci && ci->num_connections >= L->max_conn) FD_CLR(listen_fd, &rs);
        }
        if (L->answered) wait = 0;   /* the answers go out in the next round */
        else if (L->pending) {
            double left = L->oldest + 1e-6 * (double)opt.batch_timeout_us - mono_now();
            if (left < wait) wait = left > 0 ? left : 0;
        }
        tv.tv_sec = (time_t)wait;
        tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6);
        n = select((int)mx + 1, &rs, &ws, &es, &tv);
        if (n < 0) { if (errno == EINTR) continue; logf_("select: %s", strerror(errno)); break; }
        L->answered = 0;
        MHD_run_from_select(L->d, &rs, &ws, &es);
        if (L->pending && (LOAD(&draining) || mono_now() - L->oldest >= 1e-6 * (double)opt.batch_timeout_us)) flush_all(L);
    }
    flush_all(L);
    /* Also after an error above: the shared socket must not be closed by MHD_stop_daemon. */
    if (!L->quiesced) { MHD_quiesce_daemon(L->d); __atomic_store_n(&L->quiesced, 1, __ATOMIC_RELAXED); }
    dl_thread_release();
    return NULL;
}

/* ---- responses --------------------------------------------------------------------- */

/* A float as a JSON number that reads back as the same float: 9 significant digits,
   trailing zeros dropped, in the form %.9g uses. snprintf's %.9g took about a tenth of
   a request's time (10 values; glibc formats the exact binary value in multiple
   precision). Here the 9 digits come from double products: f * 10^(8 - e) is
   within a few ulps of a double of the exact value, so the rounded integer is off by
   one unit of the 9th digit at worst, 1e-8 of the value, while a float's neighbours
   lie 6e-8 apart or more: the number still rounds back to f. Writes at most 16 bytes;
   returns the length. tests/serve_float.c checks the round trip. */
static int format_float(char *out, float f)
{
    static const double p10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
                                  1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };
    double d = (double)f, m;
    char dig[10], *o = out;
    long long q;
    int e, nd, i;
    if (f != f || d - d != 0) { memcpy(out, "null", 4); return 4; }   /* NaN, inf: JSON has no word */
    if (signbit(f)) { *o++ = '-'; d = -d; }
    if (d == 0) { *o++ = '0'; return (int)(o - out); }
    e = (int)floor(log10(d));
    for (;;) {   /* scale by 10^(8-e), 8-e in [-31, 54]: exact powers, at most 1e22 a step */
        int k = 8 - e;
        m = d;
        for (; k > 22; k -= 22) m *= p10[22];
        for (; k < -22; k += 22) m /= p10[22];
        m = k >= 0 ? m * p10[k] : m / p10[-k];
        q = llrint(m);
        if (q >= 1000000000LL) { e++; continue; }   /* log10 rounded up to the next power */
        if (q < 100000000LL) { e--; continue; }
        break;
    }
    for (i = 8; i >= 0; i--) { dig[i] = (char)('0' + q % 10); q /= 10; }
    for (nd = 9; nd > 1 && dig[nd - 1] == '0'; nd--) {}
    if (e >= -4 && e < 9) {   /* plain notation, as %g */
        if (e < 0) {
            *o++ = '0'; *o++ = '.';
            for (i = -1; i > e; i--) *o++ = '0';
            memcpy(o, dig, (size_t)nd); o += nd;
        } else {
            for (i = 0; i <= e; i++) *o++ = i < nd ? dig[i] : '0';
            if (nd > e + 1) { *o++ = '.'; memcpy(o, dig + e + 1, (size_t)(nd - e - 1)); o += nd - e - 1; }
        }
    } else {
        *o++ = dig[0];
        if (nd > 1) { *o++ = '.'; memcpy(o, dig + 1, (size_t)(nd - 1)); o += nd - 1; }
        *o++ = 'e'; *o++ = e < 0 ? '-' : '+';
        if (e < 0) e = -e;
        *o++ = (char)('0' + e / 10);   /* two digits at least, as %g */
        *o++ = (char)('0' + e % 10);
    }
    return (int)(o - out);
}

static void put_float(sbuf *b, float f)
{
    char t[24];
    sb_put(b, t, (size_t)format_float(t, f));
}

static enum MHD_Result send_prediction(struct MHD_Connection *conn, req *r)
{
    sbuf b = { 0 };
    int i, k;
    if (r->j.status != 200) return respond_error(conn, r, r->j.status ? r->j.status : 500, "%s", r->j.err);
    sb_reserve(&b, (size_t)r->j.rows * (size_t)r->j.out_size * 16 + 64);
    sb_put(&b, r->columnar ? "{\"outputs\": [" : "{\"predictions\": [", r->columnar ? 13 : 17);
    for (i = 0; i < r->j.rows; i++) {
        sb_put(&b, i ? ", [" : "[", i ? 3 : 1);
        for (k = 0; k < r->j.out_size; k++) {
            if (k) sb_put(&b, ", ", 2);
            put_float(&b, r->j.y[(size_t)i * (size_t)r->j.out_size + (size_t)k]);
        }
        sb_put(&b, "]", 1);
    }
    sb_printf(&b, "], \"model_version\": \"%ld\"}\n", r->j.version);
    return respond(conn, r, 200, "application/json", &b);
}

static enum MHD_Result finish_predict(struct MHD_Connection *conn, req *r)
{
    slot *s = r->s;
    dl_shape shape;
    int numel, code;
    if (r->too_big) return respond_error(conn, r, 413, "the body is over the %zu-byte limit (--max-body)", opt.max_body);
    if (r->len == 0) return respond_error(conn, r, 400, "empty body: send {\"instances\": [...]}, {\"inputs\": ...} or an image");
    pthread_mutex_lock(&s->qmu);
    shape = s->in_shape;
    numel = s->in_size;
    pthread_mutex_unlock(&s->qmu);
    code = r->kind == K_JSON ? parse_json(r, &shape, numel) : parse_image(r, &shape, numel);
    if (code) return respond_error(conn, r, code, "%s", r->j.err);
    r->j.in_size = numel;
    if (tl_loop && opt.max_batch > 1) {
        r->queued = 1;
        enqueue(tl_loop, s, &r->j);
        if (!r->j.done) return MHD_YES;   /* answered in a later round (on_request) */
        return send_prediction(conn, r);
    }
    register_thread();
    run_jobs(s, &r->j);
    return send_prediction(conn, r);
}

/* ---- model status, metadata, metrics ----------------------------------------------- */

static enum MHD_Result send_status(struct MHD_Connection *conn, req *r, slot *s)
{
    sbuf b = { 0 };
    long v;
    pthread_mutex_lock(&s->qmu);
    v = s->version;
    pthread_mutex_unlock(&s->qmu);
    sb_printf(&b, "{\"model_version_status\": [{\"version\": \"%ld\", \"state\": \"AVAILABLE\", "
                  "\"status\": {\"error_code\": \"OK\", \"error_message\": \"\"}}]}\n", v);
    return respond(conn, r, 200, "application/json", &b);
}

static void put_dims(sbuf *b, const int *d, int n)
{
    int i;
    sb_put(b, "{\"size\": \"-1\"}", 14);
    for (i = 0; i < n; i++) sb_printf(b, ", {\"size\": \"%d\"}", d[i]);
}

static enum MHD_Result send_metadata(struct MHD_Connection *conn, req *r, slot *s)
{
    sbuf b = { 0 };
    dl_shape in;
    int out;
    long v;
    pthread_mutex_lock(&s->qmu);
    in = s->in_shape;
    out = s->out_size;
    v = s->version;
    pthread_mutex_unlock(&s->qmu);
    sb_printf(&b, "{\"model_spec\": {\"name\": \"");
    sb_json_str(&b, s->name, sizeof s->name);
    sb_printf(&b, "\", \"signature_name\": \"\", \"version\": \"%ld\"}, \"metadata\": {\"signature_def\": {\"signature_def\": "
                  "{\"serving_default\": {\"inputs\": {\"x\": {\"dtype\": \"DT_FLOAT\", \"tensor_shape\": {\"dim\": [", v);
    put_dims(&b, in.d, in.ndim);
    sb_printf(&b, "], \"unknown_rank\": false}, \"name\": \"x\"}}, \"outputs\": {\"probabilities\": {\"dtype\": \"DT_FLOAT\", "
                  "\"tensor_shape\": {\"dim\": [");
    put_dims(&b, &out, 1);
    sb_printf(&b, "], \"unknown_rank\": false}, \"name\": \"probabilities\"}}, \"method_name\": \"tensorflow/serving/predict\"}}}, "
                  "\"encodings\": {\"application/json\": [\"instances: rows, each flat or nested as the input shape\", "
                  "\"inputs: columns, nested or flat\"], \"image/png\": \"one channel, resized to the input shape, [0, 1]\", "
                  "\"image/jpeg\": \"one channel, resized to the input shape, [0, 1]\"}}}\n");
    return respond(conn, r, 200, "application/json", &b);
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * 4096L;
}

static void put_counters(sbuf *b, const char *model, const counters *c, int which)
{
    int i;
    u64 cum = 0;
    switch (which) {
    case 0:
        for (i = 0; i < N_CODES; i++) {
            u64 n = LOAD(&c->requests[i]);
            if (!n) continue;
            if (i < N_CODES - 1) sb_printf(b, "dlserve_requests_total{model=\"%s\",code=\"%d\"} %llu\n", model, codes[i], n);
            else sb_printf(b, "dlserve_requests_total{model=\"%s\",code=\"other\"} %llu\n", model, n);
        }
        break;
    case 1:
        for (i = 0; i <= N_LAT; i++) {
            cum += LOAD(&c->lat_bucket[i]);
            if (i < N_LAT) sb_printf(b, "dlserve_request_duration_seconds_bucket{model=\"%s\",le=\"%g\"} %llu\n", model, lat_le[i], cum);
            else sb_printf(b, "dlserve_request_duration_seconds_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", model, cum);
        }
        sb_printf(b, "dlserve_request_duration_seconds_sum{model=\"%s\"} %.9f\n", model, 1e-9 * (double)LOAD(&c->lat_sum_ns));
        sb_printf(b, "dlserve_request_duration_seconds_count{model=\"%s\"} %llu\n", model, LOAD(&c->lat_count));
        break;
    case 2:
        for (i = 0; i <= N_BATCH; i++) {
            cum += LOAD(&c->batch_bucket[i]);
            if (i < N_BATCH) sb_printf(b, "dlserve_batch_size_bucket{model=\"%s\",le=\"%d\"} %llu\n", model, batch_le[i], cum);
            else sb_printf(b, "dlserve_batch_size_bucket{model=\"%s\",le=\"+Inf\"} %llu\n", model, cum);
        }
        sb_printf(b, "dlserve_batch_size_sum{model=\"%s\"} %llu\n", model, LOAD(&c->batch_rows));
        sb_printf(b, "dlserve_batch_size_count{model=\"%s\"} %llu\n", model, LOAD(&c->batch_count));
        break;
    case 3:
        for (i = 0; i < MAX_CLASSES_COUNTED; i++) {
            u64 n = LOAD(&c->classes[i]);
            if (n) sb_printf(b, "dlserve_predicted_class_total{model=\"%s\",class=\"%d\"} %llu\n", model, i, n);
        }
        break;
    case 4:
        sb_printf(b, "dlserve_model_reloads_total{model=\"%s\",result=\"ok\"} %llu\n", model, LOAD(&c->reload_ok));
        sb_printf(b, "dlserve_model_reloads_total{model=\"%s\",result=\"error\"} %llu\n", model, LOAD(&c->reload_err));
        break;
    }
}

static enum MHD_Result send_metrics(struct MHD_Connection *conn, req *r)
{
    static const char *const help[] = {
        "# HELP dlserve_requests_total HTTP requests answered, by model and status code.\n# TYPE dlserve_requests_total counter\n",
        "# HELP dlserve_request_duration_seconds Time from a request's headers to its response being queued.\n# TYPE dlserve_request_duration_seconds histogram\n",
        "# HELP dlserve_batch_size Rows per dl_predict call.\n# TYPE dlserve_batch_size histogram\n",
        "# HELP dlserve_predicted_class_total Predictions by most probable class (a drift signal).\n# TYPE dlserve_predicted_class_total counter\n",
        "# HELP dlserve_model_reloads_total Model file reloads after start, by result.\n# TYPE dlserve_model_reloads_total counter\n",
    };
    sbuf b = { 0 };
    int w, i;
    sb_reserve(&b, 16384);
    for (w = 0; w < 5; w++) {
        sb_put(&b, help[w], strlen(help[w]));
        for (i = 0; i < n_models; i++) put_counters(&b, models[i].name, &models[i].c, w);
        if (w < 2) put_counters(&b, "", &other, w);
    }
    sb_printf(&b, "# HELP dlserve_model_version Version of the model being served (1 at start, +1 per reload).\n# TYPE dlserve_model_version gauge\n");
    for (i = 0; i < n_models; i++) {
        pthread_mutex_lock(&models[i].qmu);
        sb_printf(&b, "dlserve_model_version{model=\"%s\"} %ld\n", models[i].name, models[i].version);
        pthread_mutex_unlock(&models[i].qmu);
    }
    sb_printf(&b, "# HELP dlserve_model_load_timestamp_seconds When the served version was loaded (Unix time).\n# TYPE dlserve_model_load_timestamp_seconds gauge\n");
    for (i = 0; i < n_models; i++) {
        pthread_mutex_lock(&models[i].qmu);
        sb_printf(&b, "dlserve_model_load_timestamp_seconds{model=\"%s\"} %.3f\n", models[i].name, models[i].loaded_at);
        pthread_mutex_unlock(&models[i].qmu);
    }
    sb_printf(&b, "# HELP dlserve_model_load_duration_seconds How long loading the served version took.\n# TYPE dlserve_model_load_duration_seconds gauge\n");
    for (i = 0; i < n_models; i++) {
        pthread_mutex_lock(&models[i].qmu);
        sb_printf(&b, "dlserve_model_load_duration_seconds{model=\"%s\"} %.6f\n", models[i].name, models[i].load_seconds);
        pthread_mutex_unlock(&models[i].qmu);
    }
    sb_printf(&b, "# HELP dlserve_inflight_requests Requests received and not yet answered.\n# TYPE dlserve_inflight_requests gauge\n"
                  "dlserve_inflight_requests %ld\n", LOAD(&active));
    sb_printf(&b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %ld\n", rss_bytes());
    sb_printf(&b, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\n"
                  "process_start_time_seconds %.3f\n", started_at);
    return respond(conn, r, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* ---- routing ----------------------------------------------------------------------- */

static int is_get(const char *method) { return !strcmp(method, "GET") || !strcmp(method, "HEAD"); }

/* The media type of a Content-Type header, without parameters, compared case-blind. */
static int media_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    while (*ct == ' ') ct++;
    return strncasecmp(ct, type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* First call for a request: its headers are in. Answers at once or prepares to read a body. */
static enum MHD_Result route(struct MHD_Connection *conn, req *r, const char *url, const char *method)
{
    static const char prefix[] = "/v1/models/";
    const char *name, *rest, *colon, *slash, *ct, *cl;
    size_t nlen;
    if (!strcmp(url, "/healthz")) {
        sbuf b = { 0 };
        if (!is_get(method)) return respond_error(conn, r, 405, "%s /healthz: use GET", method);
        sb_printf(&b, "{\"status\": \"%s\"}\n", LOAD(&draining) ? "stopping" : "ok");
        return respond(conn, r, 200, "application/json", &b);
    }
    if (!strcmp(url, "/metrics")) {
        if (!is_get(method)) return respond_error(conn, r, 405, "%s /metrics: use GET", method);
        return send_metrics(conn, r);
    }
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return respond_error(conn, r, 404, "no such path; try POST /v1/models/NAME:predict, GET /v1/models/NAME, /healthz or /metrics");
    name = url + sizeof prefix - 1;
    colon = strchr(name, ':');
    slash = strchr(name, '/');
    rest = colon && (!slash || colon < slash) ? colon : slash;
    nlen = rest ? (size_t)(rest - name) : strlen(name);
    r->s = find_model(name, nlen);
    if (!r->s) return respond_error(conn, r, 404, "model '%.*s' is not served here", (int)(nlen > 64 ? 64 : nlen), name);
    if (!rest) {
        if (!is_get(method)) return respond_error(conn, r, 405, "%s /v1/models/%s: use GET", method, r->s->name);
        return send_status(conn, r, r->s);
    }
    if (!strcmp(rest, "/metadata")) {
        if (!is_get(method)) return respond_error(conn, r, 405, "%s /v1/models/%s/metadata: use GET", method, r->s->name);
        return send_metadata(conn, r, r->s);
    }
    if (strcmp(rest, ":predict") != 0)
        return respond_error(conn, r, 404, "no such path under /v1/models/%s (':predict' and '/metadata' are)", r->s->name);
    r->route = R_PREDICT;
    if (strcmp(method, "POST") != 0) return respond_error(conn, r, 405, "%s /v1/models/%s:predict: use POST", method, r->s->name);
    ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || media_is(ct, "application/json")) r->kind = K_JSON;
    else if (media_is(ct, "image/png") || media_is(ct, "image/jpeg") || media_is(ct, "image/jpg")) r->kind = K_IMAGE;
    else return respond_error(conn, r, 415, "Content-Type '%.64s' is not served: use application/json, image/png or image/jpeg", ct);
    cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtod(cl, NULL) > (double)opt.max_body)
        return respond_error(conn, r, 413, "Content-Length %.32s is over the %zu-byte limit (--max-body)", cl, opt.max_body);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    req *r = (req *)*con_cls;
    (void)cls; (void)version;
    if (!r) {
        r = (req *)calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->t0 = mono_now();
        *con_cls = r;
        ADD(&active, 1);
        /* A response queued on this first call, before libmicrohttpd has read the whole
           request, closes the connection after it: GETs answer on a later call, so a
           scraper's connection stays open. */
        if (is_get(method)) { r->get = 1; return MHD_YES; }
        return route(conn, r, url, method);
    }
    if (r->responded) { *upload_size = 0; return MHD_YES; }
    if (r->get && !*upload_size) return route(conn, r, url, method);
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->route != R_PREDICT || r->too_big) return MHD_YES;
        if (r->len + n > opt.max_body) { r->too_big = 1; return MHD_YES; }
        if (r->len + n + 64 > r->cap) {   /* 64: simdjson's padding, so it parses in place */
            size_t cap = r->cap ? r->cap : 16384;
            char *p;
            while (cap < r->len + n + 64) cap *= 2;
            p = (char *)realloc(r->body, cap);
            if (!p) { r->too_big = 1; return MHD_YES; }
            r->body = p;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->route != R_PREDICT) return respond_error(conn, r, 404, "no such path");
    if (r->queued) {
        if (!__atomic_load_n(&r->j.done, __ATOMIC_ACQUIRE)) return MHD_YES;   /* not ours yet */
        return send_prediction(conn, r);
    }
    return finish_predict(conn, r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    req *r = (req *)*con_cls;
    (void)cls; (void)conn; (void)toe;
    if (!r) return;
    if (r->queued && !r->j.done && tl_loop) dequeue(tl_loop, &r->j);
    free(r->body);
    free(r->j.x);
    free(r->j.y);
    free(r);
    *con_cls = NULL;
    ADD(&active, -1);
}

/* ---- loading and reloading ---------------------------------------------------------- */

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Loads the file beside the served model and swaps it in under the model's lock;
   a file that does not load leaves the old model serving. */
static int load_model(slot *s, int initial, int forced)
{
    struct stat st;
    dl_model *m, *old;
    double t0;
    char sh[64];
    if (stat(s->path, &st) != 0) {
        if (initial || forced) logf_("model '%s': cannot stat '%s': %s%s", s->name, s->path, strerror(errno), initial ? "" : "; still serving the loaded version");
        if (!initial) ADD(&s->c.reload_err, forced);
        return -1;
    }
    if (!initial && !forced && same_file(&st, &s->seen)) return 0;
    s->seen = st;
    t0 = mono_now();
    m = dl_load(s->path);
    if (!m) {
        logf_("model '%s': %s%s", s->name, dl_last_error(), initial ? "" : "; still serving the loaded version");
        if (!initial) ADD(&s->c.reload_err, 1);
        return -1;
    }
    pthread_mutex_lock(&s->pmu);
    pthread_mutex_lock(&s->qmu);
    old = s->model;
    s->model = m;
    s->in_shape = dl_input_shape(m);
    s->in_size = dl_input_size(m);
    s->out_size = dl_output_size(m);
    s->version++;
    s->loaded_at = wall_now();
    s->load_seconds = mono_now() - t0;
    pthread_mutex_unlock(&s->qmu);
    pthread_mutex_unlock(&s->pmu);
    dl_model_free(old);
    if (!initial) ADD(&s->c.reload_ok, 1);
    logf_("model '%s' version %ld: %s, input %s, %d outputs, %zu parameters, loaded in %.1f ms", s->name, s->version, s->path,
          dl_shape_str(s->in_shape, sh, sizeof sh), s->out_size, dl_model_param_count(m), 1e3 * s->load_seconds);
    return 0;
}

/* Batching on: one listening socket, and a daemon and loop per HTTP thread, each
   with its share of --max-connections. */
static int start_loops(const struct sockaddr_in *sa)
{
    int i, one = 1, per;
    if (opt.threads > opt.max_conn) opt.threads = opt.max_conn;
    per = opt.max_conn / opt.threads;
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(listen_fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || listen(listen_fd, 512) != 0) {
        fprintf(stderr, "dlcore-serve: cannot listen on %s:%d: %s\n", opt.host, opt.port, strerror(errno));
        return -1;
    }
    loops = (loop *)calloc((size_t)opt.threads, sizeof *loops);
    if (!loops) { fprintf(stderr, "dlcore-serve: out of memory\n"); return -1; }
    for (i = 0; i < opt.threads; i++) {
        loops[i].max_conn = (unsigned int)(per + (i < opt.max_conn % opt.threads));
        loops[i].d = MHD_start_daemon(MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
                                      MHD_OPTION_LISTEN_SOCKET, listen_fd,
                                      MHD_OPTION_CONNECTION_LIMIT, loops[i].max_conn,
                                      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)opt.timeout_s,
                                      MHD_OPTION_CONNECTION_MEMORY_LIMIT, opt.max_header,
                                      MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                      MHD_OPTION_END);
        if (!loops[i].d) { fprintf(stderr, "dlcore-serve: cannot start an HTTP daemon\n"); return -1; }
    }
    for (i = 0; i < opt.threads; i++) {
        if (pthread_create(&loops[i].th, NULL, loop_main, &loops[i]) != 0) { fprintf(stderr, "dlcore-serve: cannot start an HTTP thread\n"); return -1; }
        n_loops++;
    }
    return 0;
}

/* ---- command line and main ---------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: dlcore-serve --model NAME=FILE [--model NAME2=FILE2 ...] [options]\n"
        "  --listen HOST:PORT       address to listen on (127.0.0.1:8501; port 0 picks a free one)\n"
        "  --threads N              HTTP threads (default: the cores it may use)\n"
        "  --max-batch N            most rows joined into one dl_predict call (64); 1 turns batching off\n"
        "  --batch-timeout-us N     how long a thread waits for more rows after the oldest before it\n"
        "                           predicts (0: predict what one round of reading brought)\n"
        "  --max-body BYTES         largest request body (4194304)\n"
        "  --max-connections N      open connections at once (512; at most 960 with batching on)\n"
        "  --timeout-s N            idle seconds before a connection is closed (10)\n"
        "  --max-header BYTES       memory for one connection's request line and headers (32768)\n"
        "  --max-pixels N           largest image accepted, checked before decoding (4000000)\n"
        "  --poll-ms N              how often model files are checked for changes (1000; 0: only on SIGHUP)\n"
        "  --predict-threads N      dlcore kernel threads per prediction (1)\n"
        "  --json simdjson|cjson    parser of {\"instances\": [[...], ...]} bodies (simdjson; every other\n"
        "                           body, and any simdjson declines, goes through cJSON)\n");
}

/* The cores this process may run on (taskset, cgroups' cpusets), not all online ones. */
static int usable_cores(void)
{
    cpu_set_t set;
    long n;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "dlcore-serve: %s '%s' must be an integer in [%ld, %ld]\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    int i;
    long v;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (a[0] != '-' || a[1] != '-') { fprintf(stderr, "dlcore-serve: unexpected argument '%s'\n", a); return -1; }
        if (!val) { fprintf(stderr, "dlcore-serve: %s needs a value\n", a); return -1; }
        i++;
        if (!strcmp(a, "--model")) {
            const char *eq = strchr(val, '=');
            slot *s;
            if (!eq || eq == val || !eq[1]) { fprintf(stderr, "dlcore-serve: --model '%s' must be NAME=FILE\n", val); return -1; }
            if ((size_t)(eq - val) >= sizeof models[0].name || strlen(eq + 1) >= sizeof models[0].path) {
                fprintf(stderr, "dlcore-serve: --model '%s': name or path too long\n", val); return -1;
            }
            if (strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != (size_t)(eq - val)) {
                fprintf(stderr, "dlcore-serve: --model '%s': a name may use letters, digits, '_', '.' and '-'\n", val); return -1;
            }
            if (find_model(val, (size_t)(eq - val))) { fprintf(stderr, "dlcore-serve: model name '%.*s' given twice\n", (int)(eq - val), val); return -1; }
            if (n_models == MAX_MODELS) { fprintf(stderr, "dlcore-serve: at most %d models\n", MAX_MODELS); return -1; }
            s = &models[n_models++];
            memcpy(s->name, val, (size_t)(eq - val));
            strcpy(s->path, eq + 1);
        } else if (!strcmp(a, "--listen")) {
            const char *c = strrchr(val, ':');
            struct in_addr ia;
            if (!c || (size_t)(c - val) >= sizeof opt.host) { fprintf(stderr, "dlcore-serve: --listen '%s' must be HOST:PORT (IPv4)\n", val); return -1; }
            memcpy(opt.host, val, (size_t)(c - val));
            opt.host[c - val] = '\0';
            if (inet_pton(AF_INET, opt.host, &ia) != 1) { fprintf(stderr, "dlcore-serve: --listen '%s': '%s' is not an IPv4 address\n", val, opt.host); return -1; }
            if (parse_long("--listen port", c + 1, 0, 65535, &v)) return -1;
            opt.port = (int)v;
        } else if (!strcmp(a, "--threads")) { if (parse_long(a, val, 1, 1024, &v)) return -1; opt.threads = (int)v; }
        else if (!strcmp(a, "--max-batch")) { if (parse_long(a, val, 1, 65536, &v)) return -1; opt.max_batch = (int)v; }
        else if (!strcmp(a, "--batch-timeout-us")) { if (parse_long(a, val, 0, 10000000, &v)) return -1; opt.batch_timeout_us = v; }
        else if (!strcmp(a, "--max-body")) { if (parse_long(a, val, 16, 1L << 30, &v)) return -1; opt.max_body = (size_t)v; }
        else if (!strcmp(a, "--max-connections")) { if (parse_long(a, val, 1, 100000, &v)) return -1; opt.max_conn = (int)v; }
        else if (!strcmp(a, "--timeout-s")) { if (parse_long(a, val, 1, 86400, &v)) return -1; opt.timeout_s = (int)v; }
        else if (!strcmp(a, "--max-header")) { if (parse_long(a, val, 1024, 1L << 24, &v)) return -1; opt.max_header = (size_t)v; }
        else if (!strcmp(a, "--max-pixels")) { if (parse_long(a, val, 1, 1L << 30, &v)) return -1; opt.max_pixels = v; }
        else if (!strcmp(a, "--poll-ms")) { if (parse_long(a, val, 0, 3600000, &v)) return -1; opt.poll_ms = (int)v; }
        else if (!strcmp(a, "--predict-threads")) { if (parse_long(a, val, 0, 1024, &v)) return -1; opt.predict_threads = (int)v; }
        else if (!strcmp(a, "--json")) {
            if (strcmp(val, "simdjson") && strcmp(val, "cjson")) { fprintf(stderr, "dlcore-serve: --json takes simdjson or cjson, not '%s'\n", val); return -1; }
            json_fast = !strcmp(val, "simdjson");
        }
        else { fprintf(stderr, "dlcore-serve: unknown option '%s' (--help lists them)\n", a); return -1; }
    }
    if (!n_models) { fprintf(stderr, "dlcore-serve: give at least one --model NAME=FILE\n"); usage(stderr); return -1; }
    return 0;
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    unsigned int flags;
    int i, port, sig = 0, cores;
    double t_stop;

    if (parse_args(argc, argv)) return 2;
    cores = usable_cores();
    if (opt.threads == 0) opt.threads = cores;
    /* select() takes descriptors below FD_SETSIZE; the batching loops use it. */
    if (opt.max_batch > 1 && opt.max_conn > MAX_CONN_BATCHING) {
        fprintf(stderr, "dlcore-serve: --max-connections %d: with batching on at most %d (--max-batch 1 serves more)\n", opt.max_conn, MAX_CONN_BATCHING);
        return 2;
    }
    started_at = wall_now();
    json_use_arena();
    dl_set_threads(opt.predict_threads);
    for (i = 0; i < n_models; i++) {
        pthread_mutex_init(&models[i].pmu, NULL);
        pthread_mutex_init(&models[i].qmu, NULL);
        if (load_model(&models[i], 1, 1) != 0) return 1;
    }

    /* Every thread started from here on inherits the blocked set: signals arrive
       only through sigtimedwait below. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)opt.port);
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    if (opt.max_batch > 1) {
        if (start_loops(&sa) != 0) return 1;
    } else {
        flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
        daemon_ = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
                                   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                   MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(opt.threads > 1 ? opt.threads : 0),
                                   MHD_OPTION_CONNECTION_LIMIT, (unsigned int)opt.max_conn,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)opt.timeout_s,
                                   MHD_OPTION_CONNECTION_MEMORY_LIMIT, opt.max_header,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                   MHD_OPTION_END);
        if (!daemon_) {
            fprintf(stderr, "dlcore-serve: cannot listen on %s:%d (address in use, or not allowed)\n", opt.host, opt.port);
            return 1;
        }
    }
    if (daemon_) {
        info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
        port = info ? (int)info->port : opt.port;
    } else {
        struct sockaddr_in bound;
        socklen_t bl = sizeof bound;
        port = getsockname(listen_fd, (struct sockaddr *)&bound, &bl) == 0 ? ntohs(bound.sin_port) : opt.port;
    }
    logf_("listening on http://%s:%d (%d HTTP thread%s, %s)", opt.host, port, opt.threads, opt.threads > 1 ? "s" : "",
          opt.max_batch > 1 ? "batching on" : "batching off");

    for (;;) {
        struct timespec ts;
        long ms = opt.poll_ms > 0 ? opt.poll_ms : 3600000;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (ms % 1000) * 1000000L;
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) break;
        for (i = 0; i < n_models; i++)
            if (sig == SIGHUP || opt.poll_ms > 0) load_model(&models[i], 0, sig == SIGHUP);
    }

    /* Stop accepting, let every request already begun finish, then stop. */
    logf_("%s: stopping; %ld request%s in flight", sig == SIGTERM ? "SIGTERM" : "SIGINT", LOAD(&active), LOAD(&active) == 1 ? "" : "s");
    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
    if (daemon_) {
        MHD_socket ls = MHD_quiesce_daemon(daemon_);
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    t_stop = mono_now() + 30.0;
    /* Each loop stops accepting on its own daemon; the shared socket closes after. */
    while (n_loops && mono_now() < t_stop) {
        int q = 0;
        for (i = 0; i < n_loops; i++) q += __atomic_load_n(&loops[i].quiesced, __ATOMIC_RELAXED);
        if (q == n_loops) break;
        nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    }
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    while (LOAD(&active) > 0 && mono_now() < t_stop) nanosleep(&(struct timespec){ 0, 2000000 }, NULL);
    __atomic_store_n(&loops_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < n_loops; i++) pthread_join(loops[i].th, NULL);
    for (i = 0; i < n_loops; i++) MHD_stop_daemon(loops[i].d);
    free(loops);
    if (daemon_) MHD_stop_daemon(daemon_);
    for (i = 0; i < n_models; i++) {
        dl_model_free(models[i].model);
        free(models[i].bx);
        free(models[i].by);
        pthread_mutex_destroy(&models[i].pmu);
        pthread_mutex_destroy(&models[i].qmu);
    }
    dl_shutdown();
    logf_("stopped");
    return 0;
}
