/* C = alpha * op(A) * op(B) + beta * C, row-major, BLAS semantics.
   op(A) is m x k, op(B) is k x n, C is m x n. trans_* != 0 means transposed.
   beta == 0 overwrites C without reading it (NaN garbage in C is not propagated). */
DLDEF void dl_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb,
                    float beta, float *c, int ldc);
