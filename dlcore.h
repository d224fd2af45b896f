/* dlcore.h - a single-header deep-learning library in C99 (public domain / MIT)

   DEVELOPMENT SKELETON: during the founding session the sections live in
   dev/ and are inlined here before the first release commit.
*/
#ifndef DLCORE_H
#define DLCORE_H

/* The implementation uses a few POSIX calls (threads, a monotonic clock, isatty)
   that strict -std=c99 headers hide unless asked for before the first include. */
#if defined(DLCORE_IMPLEMENTATION) && !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef DLDEF
#if defined(DLCORE_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define DLDEF static __attribute__((unused))   /* a user need not call every function */
#elif defined(DLCORE_STATIC)
#define DLDEF static
#else
#define DLDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 0. Conventions: status codes and errors ==================================== */

enum { DL_OK = 0, DL_ERR = -1 };

/* The message of the last failed call on this thread ("" if none). */
DLDEF const char *dl_last_error(void);

/* ==== 1. Kernels ================================================================== */
#ifndef DLCORE_DEV_NO_KERNELS
#include "dev/kernels_api.h"
#endif

/* ==== 2-3. Tensors, graph, autograd, optimizers ==================================== */
#ifndef DLCORE_DEV_NO_CORE
#include "dev/core_api.h"
#endif

/* ==== 4. IO: checksums, gzip, IDX datasets ========================================= */
#ifndef DLCORE_DEV_NO_IO
#include "dev/io_api.h"
#endif

/* ==== 5. Models ==================================================================== */
#ifndef DLCORE_DEV_NO_MODEL
#include "dev/model_api.h"
#endif

#ifdef __cplusplus
}
#endif
#endif /* DLCORE_H */

/* ================================================================================== */
/*                               IMPLEMENTATION                                       */
/* ================================================================================== */
#ifdef DLCORE_IMPLEMENTATION
#ifndef DLCORE_IMPLEMENTATION_DONE
#define DLCORE_IMPLEMENTATION_DONE

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <math.h>
#include <assert.h>

#if !defined(DLCORE_MALLOC) && !defined(DLCORE_FREE) && !defined(DLCORE_REALLOC)
#define DLCORE_MALLOC(sz) malloc(sz)
#define DLCORE_REALLOC(p, sz) realloc(p, sz)
#define DLCORE_FREE(p) free(p)
#elif !defined(DLCORE_MALLOC) || !defined(DLCORE_FREE) || !defined(DLCORE_REALLOC)
#error "dlcore: define all of DLCORE_MALLOC, DLCORE_REALLOC and DLCORE_FREE, or none"
#endif
#ifndef DLCORE_ASSERT
#define DLCORE_ASSERT(x) assert(x)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#define DL__THREAD_LOCAL thread_local
#elif defined(_MSC_VER)
#define DL__THREAD_LOCAL __declspec(thread)
#elif defined(__GNUC__) || defined(__clang__)
#define DL__THREAD_LOCAL __thread
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define DL__THREAD_LOCAL _Thread_local
#else
#define DL__THREAD_LOCAL
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 0. Conventions ============================================================== */

static DL__THREAD_LOCAL char dl__errbuf[512];

DLDEF const char *dl_last_error(void) { return dl__errbuf; }

/* Records a printf-style message for dl_last_error() and returns DL_ERR, so a
   failing call reads `return dl__error("%s: bad magic", path);`. */
#if defined(__GNUC__) || defined(__clang__)
#define DL__UNUSED __attribute__((unused))
__attribute__((format(printf, 1, 2)))
#else
#define DL__UNUSED
#endif
DL__UNUSED static int dl__error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dl__errbuf, sizeof dl__errbuf, fmt, ap);
    va_end(ap);
    return DL_ERR;
}

/* ==== 1. Kernels ================================================================== */
#ifndef DLCORE_DEV_NO_KERNELS
#include "dev/kernels_impl.h"
#endif

/* ==== 2-3. Tensors, graph, autograd, optimizers ==================================== */
#ifndef DLCORE_DEV_NO_CORE
#include "dev/core_impl.h"
#endif

/* ==== 4. IO ======================================================================== */
#ifndef DLCORE_DEV_NO_IO
#include "dev/io_impl.h"
#endif

/* ==== 5. Models ==================================================================== */
#ifndef DLCORE_DEV_NO_MODEL
#include "dev/model_impl.h"
#endif

#ifdef __cplusplus
}
#endif
#endif /* DLCORE_IMPLEMENTATION_DONE */
#endif /* DLCORE_IMPLEMENTATION */
