/* fuzz_idx.c - IDX files, raw or gzip, and an images/labels pair becoming a data set
   (dl_idx_read's parser, dl_idx_value, dl_idx_load's checks and fill).
   Input: a 4-byte little-endian length L, then L bytes of the images file and the
   rest as the labels file (L is taken modulo what is there). Seeds: the tiny
   MNIST-format pair of tests/data, compressed and not, and one file of each
   element type (u8 i8 i16 i32 f32 f64). */
#include "fuzz.h"

static volatile double fuzz_sink;   /* keeps the reads */

/* Parses one file image; on success reads every value (up to 4096) and one past the end. */
static int fuzz_one(dl_idx *idx, const uint8_t *p, size_t n, const char *name)
{
    unsigned char *copy = (unsigned char *)malloc(n + 1);
    size_t i, lim;
    double sum = 0.0;
    if (!copy) return DL_ERR;
    if (n) memcpy(copy, p, n);
    if (dl__idx_take(idx, copy, n, name) != DL_OK) return DL_ERR;
    lim = idx->count < 4096 ? idx->count : 4096;
    for (i = 0; i < lim; i++) sum += dl_idx_value(idx, i);
    if (!(dl_idx_value(idx, idx->count) != dl_idx_value(idx, idx->count))) abort();   /* NaN, no assert */
    fuzz_sink = sum;
    return DL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dl_idx im, lb;
    size_t len;
    int a, b;
    if (size < 4) return 0;
    len = ((size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24) % (size - 4 + 1);
    a = fuzz_one(&im, data + 4, len, "images");
    b = fuzz_one(&lb, data + 4 + len, size - 4 - len, "labels");
    if (a == DL_OK && b == DL_OK) {
        dl_dataset ds;
        if (dl__idx_pair(&ds, &im, &lb, "images", "labels") == DL_OK) {
            if (ds.n != im.dims[0] || ds.x_size != im.dims[1] * im.dims[2] || ds.n_classes < 1) abort();
            dl_dataset_free(&ds);
        }
    }
    if (a == DL_OK) dl_idx_free(&im);
    if (b == DL_OK) dl_idx_free(&lb);
    return 0;
}

#ifdef FUZZ_SEEDS
/* An IDX file of `type` holding 2 x 3 elements, big-endian, each of size esize. */
static size_t fuzz_idx_file(unsigned char *out, int type, int esize)
{
    size_t n = 0;
    int i, k;
    out[n++] = 0; out[n++] = 0; out[n++] = (unsigned char)type; out[n++] = 2;
    out[n++] = 0; out[n++] = 0; out[n++] = 0; out[n++] = 2;
    out[n++] = 0; out[n++] = 0; out[n++] = 0; out[n++] = 3;
    for (i = 0; i < 6; i++)
        for (k = 0; k < esize; k++) out[n++] = (unsigned char)(k == esize - 1 ? 0x10 * i + 1 : (type == 0x0E && k == 0 ? 0x3F : 0));
    return n;
}

static void fuzz_pair(const char *name, const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    unsigned char *buf = (unsigned char *)malloc(4 + na + nb);
    if (!buf) return;
    buf[0] = (unsigned char)na; buf[1] = (unsigned char)(na >> 8); buf[2] = (unsigned char)(na >> 16); buf[3] = (unsigned char)(na >> 24);
    memcpy(buf + 4, a, na);
    memcpy(buf + 4 + na, b, nb);
    fuzz_seed(name, buf, 4 + na + nb);
    free(buf);
}

static void fuzz_seeds(void)
{
    static const int types[] = { 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E }, sizes[] = { 1, 1, 2, 4, 4, 8 };
    unsigned char *gi = NULL, *gl = NULL, *ri = NULL, *rl = NULL, one[64];
    size_t ngi, ngl, nri = 0, nrl = 0, i;
    if (dl_read_file("tests/data/tiny-images-idx3-ubyte.gz", &gi, &ngi) != DL_OK ||
        dl_read_file("tests/data/tiny-labels-idx1-ubyte.gz", &gl, &ngl) != DL_OK ||
        dl_gunzip(gi, ngi, &ri, &nri) != DL_OK || dl_gunzip(gl, ngl, &rl, &nrl) != DL_OK) {
        fprintf(stderr, "fuzz seeds: %s\n", dl_last_error());
        fuzz__failed = 1;
    } else {
        fuzz_pair("pair-raw", ri, nri, rl, nrl);
        fuzz_pair("pair-gz", gi, ngi, gl, ngl);
        fuzz_pair("pair-mixed", ri, nri, gl, ngl);
    }
    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        char name[32];
        size_t n = fuzz_idx_file(one, types[i], sizes[i]);
        snprintf(name, sizeof name, "type-%02x", types[i]);
        fuzz_pair(name, one, n, rl ? rl : one, rl ? nrl : n);
    }
    dl_free(gi); dl_free(gl); dl_free(ri); dl_free(rl);
}
#endif
