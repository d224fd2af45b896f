/* fuzz.h - shared by the libFuzzer targets, tests/fuzz/fuzz_*.c.
   A target is one file: it includes this header and defines
       int  LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
       #ifdef FUZZ_SEEDS
       static void fuzz_seeds(void) { ... }   its seed corpus: fuzz_seed / fuzz_seed_file
       #endif
   mk/hardening.mk finds every tests/fuzz/fuzz_*.c and builds it twice: with
   clang -fsanitize=fuzzer,address,undefined as the target, and with -DFUZZ_SEEDS as
   a program that writes the seeds into the directory it is given (run from the
   repository root, so it can read tests/data). `make fuzz` runs each target for
   FUZZ_SECONDS; `make test` for FUZZ_SMOKE_SECONDS. Memory is capped with
   -rss_limit_mb=512, so a blow-up is a finding; the limits below keep dlcore's
   own legitimate allocations far under it. */
#ifndef DL_FUZZ_H
#define DL_FUZZ_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef DLCORE_MAX_ARENA
#define DLCORE_MAX_ARENA ((size_t)64 << 20)
#endif
#ifndef DLCORE_GUNZIP_MAX
#define DLCORE_GUNZIP_MAX ((size_t)64 << 20)
#endif
#ifndef FUZZ_SEEDS
#define DLCORE_FUZZ_NO_CRC
#endif
#define DLCORE_IMPLEMENTATION
#include "../../dlcore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_SEEDS
static void fuzz_seeds(void);
static const char *fuzz__dir;
static int fuzz__failed, fuzz__written;

/* Writes one seed file; a failure fails the seed program (a missing seed is an error). */
static void fuzz_seed(const char *name, const void *data, size_t len)
{
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", fuzz__dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "fuzz seeds: cannot write %s\n", path);
        fuzz__failed = 1;
        return;
    }
    fuzz__written++;
}

/* Copies a real file (a path from the repository root) into the corpus. */
__attribute__((unused)) static void fuzz_seed_file(const char *name, const char *src)
{
    unsigned char *d;
    size_t n;
    if (dl_read_file(src, &d, &n) != DL_OK) { fprintf(stderr, "fuzz seeds: %s\n", dl_last_error()); fuzz__failed = 1; return; }
    fuzz_seed(name, d, n);
    dl_free(d);
}

/* The target's function is compiled in (and so kept warning-free) but not called. */
int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]); return 2; }
    fuzz__dir = argv[1];
    dl_set_threads(1);
    fuzz_seeds();
    printf("%s: %d seeds\n", argv[0], fuzz__written);
    return fuzz__failed || fuzz__written == 0;
}
#else
/* One thread: each input's work is small, and a target must be deterministic. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    dl_set_threads(1);
    return 0;
}
#endif
#endif
