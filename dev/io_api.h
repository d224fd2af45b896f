/* A data set in memory: n samples, each x_size floats (shape[0..ndim-1]) and
   y_size floats of target. Class labels are stored as floats (exact up to 2^24),
   y_size == 1, n_classes > 0; regression targets have n_classes == 0.
   owned == 1: x and y were allocated by dlcore and dl_dataset_free releases them;
   owned == 0: a view into another data set (dl_dataset_split) or caller memory,
   which dl_dataset_free only clears. A view lives no longer than its source. */
typedef struct dl_dataset {
    int n;
    int ndim, shape[3];
    int x_size, y_size;
    int n_classes;
    float *x, *y;
    int owned;
} dl_dataset;

/* Allocates x and y for n samples of the given per-sample shape (zeros fill). */
DLDEF int  dl_dataset_alloc(dl_dataset *ds, int n, int ndim, const int *shape, int y_size);
DLDEF void dl_dataset_free(dl_dataset *ds);

/* A non-owning view of rows [first, first + count) of src (no copy). */
DLDEF int  dl_dataset_split(const dl_dataset *src, int first, int count, dl_dataset *view);

/* Loads an MNIST-format pair <dir>/<prefix>-images-idx3-ubyte and
   <dir>/<prefix>-labels-idx1-ubyte (also the "<prefix>-images.idx3-ubyte" spelling,
   each raw or with ".gz"). Pixels become floats in [0,1] (ds->x, shape
   [rows][cols]), labels floats in ds->y, n_classes = largest label + 1. */
DLDEF int  dl_idx_load(dl_dataset *ds, const char *dir, const char *prefix);

/* One IDX file, raw or gzip-compressed (detected by content, not by name).
   data points at count elements of the file's type, big-endian as stored. */
typedef struct dl_idx {
    int type;                   /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int ndim;                   /* 1 .. 4 */
    int dims[4];
    size_t count;               /* product of dims */
    const unsigned char *data;
    unsigned char *buf_;        /* the whole file; owned */
} dl_idx;

DLDEF int    dl_idx_read(dl_idx *idx, const char *path);
DLDEF double dl_idx_value(const dl_idx *idx, size_t i);   /* element i, any type */
DLDEF void   dl_idx_free(dl_idx *idx);

/* Reads a whole file into memory (DLCORE_MALLOC; release with dl_free). */
DLDEF int  dl_read_file(const char *path, unsigned char **data, size_t *len);

/* CRC-32 as in gzip, zlib and PNG. Start with crc = 0; feed pieces in order:
   dl_crc32(dl_crc32(0, a, na), b, nb) == CRC of a followed by b. */
DLDEF uint32_t dl_crc32(uint32_t crc, const void *data, size_t n);

/* Decompresses a gzip file image (RFC 1952; concatenated members are joined).
   *out is allocated with DLCORE_MALLOC (release with dl_free / DLCORE_FREE) and
   is NUL-terminated one byte past *out_len. Output beyond max_out bytes is an
   error; dl_gunzip uses DLCORE_GUNZIP_MAX (default 1 GiB). */
DLDEF int  dl_gunzip(const void *in, size_t in_len, unsigned char **out, size_t *out_len);
DLDEF int  dl_gunzip_limit(const void *in, size_t in_len, unsigned char **out,
                           size_t *out_len, size_t max_out);
/* Raw deflate (RFC 1951). *in_used receives the bytes consumed (may be NULL). */
DLDEF int  dl_inflate(const void *in, size_t in_len, size_t *in_used,
                      unsigned char **out, size_t *out_len, size_t max_out);

/* Releases memory returned by dlcore (DLCORE_FREE). */
DLDEF void dl_free(void *p);
