/* mhd_floor.c - the HTTP floor of make bench-serve: a libmicrohttpd server with
   dlcore-serve's daemon flags that reads each POST body and answers a fixed JSON
   prediction of the same size, with no parsing and no model. Its requests/s, under
   the same wrk load, is the most a server built on this library could answer on
   this machine; dlcore-serve's own work (JSON, dl_predict, the answer, metrics) is
   the rest of each request's time. With "cjson" it also parses each body with cJSON
   into a bump arena, as dlcore-serve does, and sums the numbers: the floor plus the
   parse alone.
   Usage: mhd_floor PORT [cjson]   (stops on SIGTERM or SIGINT) */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char answer[] =
    "{\"predictions\": [[0.000123456789, 0.000123456789, 0.000123456789, 0.000123456789, 0.000123456789, "
    "0.000123456789, 0.000123456789, 0.000123456789, 0.000123456789, 0.998888888]], \"model_version\": \"1\"}\n";
typedef struct { char *p; size_t len, cap; } body;
static int parse;             /* "cjson" given */
static volatile double sink;  /* the numbers' sum: the walk is not dead code */

/* cJSON's nodes from one arena, reset per request (one HTTP thread) */
static char arena[1 << 20];
static size_t arena_used;
static void *arena_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (sizeof arena - arena_used < n) return malloc(n);
    arena_used += n;
    return arena + arena_used - n;
}
static void arena_free(void *p)
{
    if (p && !((char *)p >= arena && (char *)p < arena + sizeof arena)) free(p);
}

static double sum_numbers(const cJSON *v)
{
    double s = 0.0;
    const cJSON *e;
    if (cJSON_IsNumber(v)) return v->valuedouble;
    for (e = v ? v->child : NULL; e; e = e->next) s += sum_numbers(e);
    return s;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    body *b = (body *)*con_cls;
    (void)cls; (void)conn; (void)toe;
    if (b) { free(b->p); free(b); }
    *con_cls = NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **con_cls)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    body *b = (body *)*con_cls;
    (void)cls; (void)url; (void)method; (void)version;
    if (!b) {
        if (!(b = (body *)calloc(1, sizeof *b))) return MHD_NO;
        *con_cls = b;
        return MHD_YES;
    }
    if (*size) {   /* kept only when it is to be parsed */
        if (parse) {
            if (b->len + *size + 1 > b->cap) {
                size_t cap = 2 * (b->len + *size + 1);
                char *p = (char *)realloc(b->p, cap);
                if (!p) return MHD_NO;
                b->p = p;
                b->cap = cap;
            }
            memcpy(b->p + b->len, data, *size);
            b->len += *size;
        }
        *size = 0;
        return MHD_YES;
    }
    if (parse) {
        cJSON *doc = cJSON_ParseWithLength(b->p ? b->p : "", b->len);
        sink = sum_numbers(doc);
        cJSON_Delete(doc);
        arena_used = 0;
        b->len = 0;
    }
    resp = MHD_create_response_from_buffer(sizeof answer - 1, (void *)answer, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    sigset_t set;
    int sig;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (argc < 2 || argc > 3 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535 || (argc == 3 && strcmp(argv[2], "cjson"))) {
        fprintf(stderr, "usage: mhd_floor PORT [cjson]\n");
        return 2;
    }
    parse = argc == 3;
    if (parse) {
        cJSON_Hooks hooks = { arena_alloc, arena_free };
        cJSON_InitHooks(&hooks);
    }
    sigemptyset(&set); sigaddset(&set, SIGTERM); sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    d = MHD_start_daemon(flags, (unsigned short)atoi(argv[1]), NULL, NULL, on_request, NULL,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!d) { fprintf(stderr, "mhd_floor: cannot listen on port %s\n", argv[1]); return 1; }
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
