/* The one translation unit of the benchmark that holds dlcore's implementation.
   Built with plain -O2 like a user's program: the library picks its kernels at
   run time, no -march is needed. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
