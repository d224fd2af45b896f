/* fuzz_gunzip.c - gzip members and raw deflate streams (dl_gunzip_limit, dl_inflate).
   Seeds: the gzip fixtures of tests/data (stored, fixed and dynamic Huffman blocks,
   long matches, a named member, empty), and their raw deflate bodies. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *out = NULL;
    size_t len = 0, used = 0;
    if (dl_gunzip_limit(data, size, &out, &len, (size_t)16 << 20) == DL_OK) {
        if (out[len] != 0) abort();   /* promised: NUL one past the end */
        if (len > ((size_t)16 << 20)) abort();
    } else if (out || len) {
        abort();                      /* a failure hands nothing back */
    }
    dl_free(out);
    out = NULL;
    if (dl_inflate(data, size, &used, &out, &len, (size_t)16 << 20) == DL_OK) {
        if (used > size || len > ((size_t)16 << 20)) abort();
    }
    dl_free(out);
    return 0;
}

#ifdef FUZZ_SEEDS
static void fuzz_seeds(void)
{
    static const char *const files[] = { "empty.gz", "fixed.gz", "named.gz", "seq5000-1.gz", "seq5000-9.gz",
                                         "stored.gz", "yes100k.gz", "tiny-images-idx3-ubyte.gz", "tiny-labels-idx1-ubyte.gz" };
    size_t i;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        char src[256], name[256];
        unsigned char *d;
        size_t n;
        snprintf(src, sizeof src, "tests/data/%s", files[i]);
        fuzz_seed_file(files[i], src);
        /* The deflate body alone: after the 10-byte header (and the name, when FNAME is
           set), before the 8-byte trailer. */
        if (dl_read_file(src, &d, &n) == DL_OK && n > 18) {
            size_t at = 10;
            if (d[3] & 8) while (at < n && d[at++] != 0) {}
            if (at + 8 < n) {
                snprintf(name, sizeof name, "%s.deflate", files[i]);
                fuzz_seed(name, d + at, n - at - 8);
            }
        }
        dl_free(d);
    }
}
#endif
