/* C = alpha * op(A) * op(B) + beta * C, row-major, BLAS semantics.
   op(A) is m x k, op(B) is k x n, C is m x n. trans_* != 0 means transposed.
   beta == 0 overwrites C without reading it (NaN garbage in C is not propagated).
   After the first call with a given shape and thread count it allocates nothing
   (per-thread packing workspaces only grow). */
DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc);

/* The instruction set the kernels use now: "scalar", "avx2", "avx512" or "neon".
   Chosen at first use: the best one the CPU has, or $DLCORE_ISA if set and supported. */
DLDEF const char *dl_isa_name(void);

/* Forces one instruction set for all later calls. NULL or "auto" picks the best
   available. An unknown name or one this CPU/build lacks returns DL_ERR (message in
   dl_last_error()) and keeps the current choice. Not to be called while another
   thread is inside a dlcore kernel. */
DLDEF int dl_set_isa(const char *name);

/* Number of threads the kernels may use (the caller counts as one); 0 means all
   online cores. Default: $DLCORE_THREADS if set, else all cores. With DLCORE_NO_THREADS the
   count stays 1. Returns DL_ERR for n < 0. */
DLDEF int dl_set_threads(int n);
DLDEF int dl_get_threads(void);

/* Stops the thread pool and frees the calling thread's packing workspace (worker
   threads free their own). Optional; later kernel calls start things up again. */
DLDEF void dl_shutdown(void);
