/* bench.h - benchmark cases written in C, run by the Google Benchmark harness
   (bench/harness.cc, the only C++ file of the project).

   A suite is a plain table of cases. The harness registers every case under the
   name "<suite>/<group>/<impl>", calls setup() once before each timing loop, run()
   in it, and teardown() after it; it reports GFLOP/s and the percentage of the
   FMA peak measured by the "peak" suite, and prints, per group, the ratio of
   each implementation to the suite's peer (e.g. dlcore-avx2 / openblas).

   Adding a suite: write bench/bench_<name>.c defining
   `const bench_suite bench_suite_<name>`, and add X(<name>) to BENCH_SUITES. */
#ifndef BENCH_H
#define BENCH_H

#ifdef __cplusplus
extern "C" {
#endif

enum { BENCH_MAX_ARGS = 8 };

typedef struct bench_case bench_case;

/* What a case owns while it runs. setup() may fill msg when it fails;
   teardown() fills it when it finds the result wrong. */
typedef struct bench_state {
    const bench_case *c;
    void *ctx;
    char msg[256];
} bench_state;

struct bench_case {
    const char *group;   /* what is measured, e.g. "NN/128x128x784/t1" */
    const char *impl;    /* who does it, e.g. "openblas", "dlcore-avx2" */
    const char *set;     /* ratio-table subset for a geometric mean, e.g. "mlp" */
    const char *param;   /* free for the case, e.g. the ISA name for dl_set_isa */
    int threads;         /* 1: run pinned to one core; more: needs that many */
    /* NULL when the case can run here, else why not (printed, case not registered). */
    const char *(*unavailable)(const bench_case *c);
    int (*setup)(bench_state *s);        /* 0 ok; else the run is skipped */
    void (*run)(bench_state *s);         /* one timed iteration */
    int (*teardown)(bench_state *s);     /* 0 ok; else the result was wrong */
    double flops;                        /* per run(); 0: ask flops_of */
    double (*flops_of)(const bench_case *c);
    long args[BENCH_MAX_ARGS];
};

typedef struct bench_suite {
    const char *name;
    const char *peer;        /* impl the others are divided by; NULL: no ratios */
    int is_peak;             /* its GFLOP/s is the FMA peak quoted by others */
    const bench_case *cases;
    int n;
    /* optional: a line on how the peer ran (its version, kernel set, settings),
       printed above the ratio table; NULL: none */
    const char *(*peer_info)(void);
} bench_suite;

/* Settings a peer library reads from the environment when it is loaded, before main
   runs (OpenBLAS: its kernel set and how long idle threads spin). Called first thing
   in main; returns 1 when it set a variable, and the harness then re-executes itself
   so that the library, loaded afresh, sees it. Defined in bench_gemm.c. */
int bench_peer_env(void);

/* Every suite, in run order: the peak first, so the others can quote it. */
#define BENCH_SUITES(X) X(peak) X(gemm) X(conv) X(int8)

#define BENCH_DECLARE_SUITE(name) extern const bench_suite bench_suite_##name;
BENCH_SUITES(BENCH_DECLARE_SUITE)
#undef BENCH_DECLARE_SUITE

#ifdef __cplusplus
}
#endif
#endif /* BENCH_H */
