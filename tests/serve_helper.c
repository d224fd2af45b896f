/* serve_helper.c - the test side of dlcore-serve's tests, linked to dlcore alone
   (not to the server): makes model files, request bodies and PNGs from real test
   images, and computes with dl_predict what the server must answer.

   serve_helper model OUT.dlc SEED            an untrained MNIST-shaped MLP (28x28 -> 128 relu -> 10 softmax)
   serve_helper body DIR FIRST N FORMAT OUT   a JSON body of t10k images FIRST..FIRST+N-1 of DIR;
                                              FORMAT: rows (flat instances), nested (28 rows of 28),
                                              columns (nested under "inputs"), flatcols (one flat
                                              array under "inputs"), named ({"inputs": {"x": ...}})
   serve_helper png DIR INDEX OUT.png SCALE   image INDEX as an 8-bit grey PNG, SCALE x its size
                                              (nearest neighbour); prints its label (OUT.jpg: a JPEG)
   serve_helper expect MODEL DIR FIRST N      dl_predict on the same values as `body` sends (each
                                              number as the decimal text the body holds): one line
                                              per row, each output's float bits in hex
   serve_helper expect-png MODEL DIR INDEX    dl_predict on the PNG's pixels k as k * (1/255), as dlcore makes pixels */
#define DLCORE_IMPLEMENTATION
#include "dlcore.h"
#include <stdlib.h>
#include <string.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

static int die(const char *what)
{
    fprintf(stderr, "serve_helper: %s\n", what);
    return 1;
}

static int load(dl_dataset *d, const char *dir)
{
    if (dl_idx_load(d, dir, "t10k") != DL_OK) return die(dl_last_error());
    return 0;
}

/* A sample's pixels as bytes, whichever way the data set stores them. */
static void pixels(const dl_dataset *d, int i, unsigned char *px)
{
    int k;
    if (d->x8) memcpy(px, d->x8 + (size_t)i * (size_t)d->x_size, (size_t)d->x_size);
    else for (k = 0; k < d->x_size; k++) px[k] = (unsigned char)(d->x[(size_t)i * (size_t)d->x_size + (size_t)k] * 255.0f + 0.5f);
}

/* The decimal text the body carries for value k of sample i. */
static void text(const dl_dataset *d, int i, int k, char *buf, size_t size)
{
    static float row[784];
    static int cached = -1;
    if (cached != i) { dl_dataset_get_x(d, i, 1, row); cached = i; }
    snprintf(buf, size, "%.9g", (double)row[k]);
}

static int cmd_body(const char *dir, int first, int n, const char *fmt, const char *out)
{
    dl_dataset d;
    FILE *f;
    int i, k, rows = !strcmp(fmt, "rows"), nested = !strcmp(fmt, "nested"), cols = !strcmp(fmt, "columns");
    int flat = !strcmp(fmt, "flatcols"), named = !strcmp(fmt, "named");
    char t[32];
    if (!(rows || nested || cols || flat || named)) return die("FORMAT is rows, nested, columns, flatcols or named");
    if (load(&d, dir)) return 1;
    if (first < 0 || n < 1 || first + n > d.n || d.x_size != 784) return die("FIRST/N out of range, or images are not 28x28");
    f = fopen(out, "w");
    if (!f) return die("cannot write the body");
    fprintf(f, rows || nested ? "{\"instances\": [" : named ? "{\"inputs\": {\"x\": [" : "{\"inputs\": [");
    for (i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        if (!flat) fputc('[', f);
        for (k = 0; k < 784; k++) {
            text(&d, first + i, k, t, sizeof t);
            if (nested || cols || named) {
                if (k % 28 == 0) fputs(k ? "], [" : "[", f);
                else fputs(", ", f);
            } else if (k || (flat && i)) fputs(k ? ", " : "", f);
            fputs(t, f);
        }
        if (nested || cols || named) fputc(']', f);
        if (!flat) fputc(']', f);
    }
    fputs(named ? "]}}\n" : "]}\n", f);
    fclose(f);
    dl_dataset_free(&d);
    return 0;
}

static void print_bits(const float *y, int rows, int out)
{
    int i, k;
    for (i = 0; i < rows; i++) {
        for (k = 0; k < out; k++) {
            uint32_t u;
            memcpy(&u, &y[i * out + k], 4);
            printf("%s%08x", k ? " " : "", (unsigned)u);
        }
        putchar('\n');
    }
}

static int cmd_expect(const char *model, const char *dir, int first, int n, int png)
{
    dl_dataset d;
    dl_model *m = dl_load(model);
    float *x, *y;
    int i, k;
    unsigned char px[784];
    char t[32];
    if (!m) return die(dl_last_error());
    if (load(&d, dir)) return 1;
    if (first < 0 || n < 1 || first + n > d.n || d.x_size != 784 || dl_input_size(m) != 784) return die("FIRST/N out of range, or sizes are not 784");
    x = (float *)malloc((size_t)n * 784 * sizeof(float));
    y = (float *)malloc((size_t)n * (size_t)dl_output_size(m) * sizeof(float));
    for (i = 0; i < n; i++) {
        if (png) pixels(&d, first + i, px);
        for (k = 0; k < 784; k++) {
            if (png) x[i * 784 + k] = (float)px[k] * (1.0f / 255.0f);
            else { text(&d, first + i, k, t, sizeof t); x[i * 784 + k] = (float)strtod(t, NULL); }
        }
    }
    if (dl_predict(m, x, n, y) != DL_OK) return die(dl_last_error());
    print_bits(y, n, dl_output_size(m));
    free(x); free(y);
    dl_model_free(m);
    dl_dataset_free(&d);
    return 0;
}

static int cmd_png(const char *dir, int index, const char *out, int scale)
{
    dl_dataset d;
    unsigned char px[784], *big;
    int r, c, ok;
    if (load(&d, dir)) return 1;
    if (index < 0 || index >= d.n || d.x_size != 784 || scale < 1 || scale > 4000) return die("INDEX or SCALE out of range");
    pixels(&d, index, px);
    big = (unsigned char *)malloc((size_t)784 * (size_t)scale * (size_t)scale);
    for (r = 0; r < 28 * scale; r++)
        for (c = 0; c < 28 * scale; c++) big[(size_t)r * 28 * (size_t)scale + (size_t)c] = px[(r / scale) * 28 + c / scale];
    if (strlen(out) > 4 && !strcmp(out + strlen(out) - 4, ".jpg")) ok = stbi_write_jpg(out, 28 * scale, 28 * scale, 1, big, 95);
    else ok = stbi_write_png(out, 28 * scale, 28 * scale, 1, big, 28 * scale);
    free(big);
    if (!ok) return die("cannot write the PNG");
    printf("%d\n", (int)d.y[index]);
    dl_dataset_free(&d);
    return 0;
}

static int cmd_model(const char *out, uint64_t seed)
{
    dl_model *m = dl_sequential(DL_SHAPE(28, 28));
    dl_model_seed(m, seed);
    dl_add(m, dl_flatten());
    dl_add(m, dl_dense(128, DL_RELU));
    dl_add(m, dl_dropout(0.2f));
    dl_add(m, dl_dense(10, DL_SOFTMAX));
    if (dl_compile(m, DL_LOSS_SPARSE_CE, dl_adam(1e-3f)) != DL_OK || dl_save(m, out) != DL_OK) return die(dl_last_error());
    dl_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "model")) return cmd_model(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 7 && !strcmp(argv[1], "body")) return cmd_body(argv[2], atoi(argv[3]), atoi(argv[4]), argv[5], argv[6]);
    if (argc == 6 && !strcmp(argv[1], "png")) return cmd_png(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "expect")) return cmd_expect(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), 0);
    if (argc == 5 && !strcmp(argv[1], "expect-png")) return cmd_expect(argv[2], argv[3], atoi(argv[4]), 1, 1);
    return die("usage: see the comment at the top of tests/serve_helper.c");
}
