/* dltest.h - the project's own minimal test runner.
   DL_TEST(name) { ... DL_CHECK(cond); ... }   registers a test case;
   DL_TEST_MAIN()                               ends each test file.
   DL_SKIP("why");                              ends a case as skipped, for a case
                                                that cannot apply to this build (a
                                                missing prerequisite is a failure, not a skip)
   A case fails when any check in it fails; the binary prints one line per case,
   then "<file>: N passed, N failed, N skipped", and exits non-zero if any case failed.
   Optional argument: a substring; only cases whose name contains it run. */
#ifndef DLTEST_H
#define DLTEST_H
#include <stdio.h>
#include <string.h>
#include <math.h>

typedef void (*dltest_fn)(void);
static struct { const char *name; dltest_fn fn; } dltest__cases[512];
static int dltest__ncases, dltest__case_failed, dltest__checks, dltest__case_skipped;

#define DL_TEST(tname)                                                         \
    static void dltest_##tname(void);                                           \
    __attribute__((constructor)) static void dltest__reg_##tname(void) {        \
        dltest__cases[dltest__ncases].name = #tname;                            \
        dltest__cases[dltest__ncases++].fn = dltest_##tname;                    \
    }                                                                          \
    static void dltest_##tname(void)

#define DL_FAILF(...)                                                          \
    do { dltest__case_failed = 1; fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__); \
         fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } while (0)

#define DL_SKIP(why)                                                           \
    do { dltest__case_skipped = 1; printf("  skipped: %s\n", (why)); return; } while (0)

#define DL_CHECK(cond)                                                         \
    do { dltest__checks++; if (!(cond)) DL_FAILF("check failed: %s", #cond); } while (0)

#define DL_CHECK_EQ_INT(a, b)                                                  \
    do { long long dlt_a = (long long)(a), dlt_b = (long long)(b); dltest__checks++; \
         if (dlt_a != dlt_b) DL_FAILF("%s == %s: %lld != %lld", #a, #b, dlt_a, dlt_b); } while (0)

#define DL_CHECK_NEAR(a, b, tol)                                               \
    do { double dlt_a = (double)(a), dlt_b = (double)(b); dltest__checks++;    \
         if (!(fabs(dlt_a - dlt_b) <= (double)(tol)))                          \
             DL_FAILF("%s ~= %s: %.9g vs %.9g (tol %.3g)", #a, #b, dlt_a, dlt_b, (double)(tol)); } while (0)

#define DL_CHECK_STR_CONTAINS(hay, needle)                                     \
    do { const char *dlt_h = (hay); dltest__checks++;                          \
         if (!dlt_h || !strstr(dlt_h, (needle)))                               \
             DL_FAILF("\"%s\" does not contain \"%s\"", dlt_h ? dlt_h : "(null)", (needle)); } while (0)

#define DL_TEST_MAIN()                                                         \
    int main(int argc, char **argv) {                                          \
        int i, passed = 0, failed = 0, skipped = 0;                            \
        for (i = 0; i < dltest__ncases; i++) {                                 \
            int before = dltest__checks;                                       \
            if (argc > 1 && !strstr(dltest__cases[i].name, argv[1])) continue; \
            dltest__case_failed = dltest__case_skipped = 0;                    \
            dltest__cases[i].fn();                                             \
            if (dltest__case_skipped && !dltest__case_failed) {                \
                printf("skip %s\n", dltest__cases[i].name);                    \
                skipped++;                                                     \
                continue;                                                      \
            }                                                                  \
            if (dltest__checks == before) DL_FAILF("test asserted nothing");   \
            printf("%s %s\n", dltest__case_failed ? "FAIL" : "ok  ", dltest__cases[i].name); \
            fflush(stdout);                                                    \
            if (dltest__case_failed) failed++; else passed++;                  \
        }                                                                      \
        printf("%s: %d passed, %d failed, %d skipped\n", __FILE__, passed, failed, skipped); \
        return failed ? 1 : 0;                                                 \
    }
#endif
