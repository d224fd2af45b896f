/* A data set in memory: n samples, each x_size floats (shape[0..ndim-1]) and
   y_size floats of target. Class labels are stored as floats (exact up to 2^24),
   y_size == 1, n_classes > 0; regression targets have n_classes == 0. */
typedef struct dl_dataset {
    int n;
    int ndim, shape[3];
    int x_size, y_size;
    int n_classes;
    float *x, *y;
} dl_dataset;

/* Allocates x and y for n samples of the given per-sample shape (zeros fill). */
DLDEF int  dl_dataset_alloc(dl_dataset *ds, int n, int ndim, const int *shape, int y_size);
DLDEF void dl_dataset_free(dl_dataset *ds);
