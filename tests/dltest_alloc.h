/* dltest_alloc.h - routes dlcore's allocations through counters, so a test can
   assert that a training step allocates nothing, or that loading a file allocates
   no more than it should. Include instead of dlcore.h,
   before dltest.h: it defines DLCORE_IMPLEMENTATION. */
#ifndef DLTEST_ALLOC_H
#define DLTEST_ALLOC_H
#include <stdlib.h>
/* Atomic: the thread pool's workers allocate their workspaces too. */
static long g_allocs;
static size_t g_alloc_bytes;   /* bytes asked for (a realloc counts its new size) */
static void count_one(size_t n) { __sync_fetch_and_add(&g_allocs, 1); __sync_fetch_and_add(&g_alloc_bytes, n); }
static void *count_malloc(size_t n) { count_one(n); return malloc(n); }
static void *count_realloc(void *p, size_t n) { count_one(n); return realloc(p, n); }
#define DLCORE_MALLOC(n) count_malloc(n)
#define DLCORE_REALLOC(p, n) count_realloc(p, n)
#define DLCORE_FREE(p) free(p)
#define DLCORE_IMPLEMENTATION
#include "../dlcore.h"
#endif
