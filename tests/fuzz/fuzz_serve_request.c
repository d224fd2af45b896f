/* fuzz_serve_request.c - the bodies dlcore-serve takes from the network: a JSON
   predict request ({"instances": ...} / {"inputs": ...}, parsed by cJSON into the
   model's input) and an image body (PNG or JPEG, decoded by stb_image, then
   resized to the input). It compiles examples/serve.c itself, with its main
   renamed, so what is fuzzed is the server's own parse_json and parse_image.
   Input: one byte choosing the model's input shape and the body kind, then the
   body. A body that parses must fill exactly rows x numel finite values; one that
   does not must say why (a message and a 4xx status). A JSON body that the simdjson
   fast path (examples/serve_json.cc) takes must give cJSON's rows bit for bit. Seeds:
   requests of every accepted form for each shape, and real PNG and JPEG images. */
#define main serve_main
#include "../../examples/serve.c"
#undef main
#include "fuzz.h"

static const dl_shape fuzz_shapes[4] = {
    { 1, { 4, 0, 0, 0 } }, { 2, { 2, 3, 0, 0 } }, { 2, { 28, 28, 0, 0 } }, { 3, { 28, 28, 1, 0 } }
};

static void fuzz_serve_init(void)
{
    static int done;
    if (!done) {
        json_use_arena();
        opt.max_pixels = 1 << 20;   /* the image allocation cap follows it */
        done = 1;
    }
}

/* The fast path against cJSON alone on the same body. */
static void fuzz_fast_equals_cjson(req *r, const dl_shape *s, int numel)
{
    float *fx = NULL;
    int frows = 0, code;
    req c;
    if (!dls_json_rows(r->body, r->len, r->len, numel, &fx, &frows)) return;   /* declined */
    if (!fx || frows < 1) abort();
    memset(&c, 0, sizeof c);
    c.body = r->body;
    c.len = r->len;
    json_fast = 0;
    code = parse_json(&c, s, numel);
    json_fast = 1;
    if (code != 0 || c.j.rows != frows || memcmp(c.j.x, fx, (size_t)frows * (size_t)numel * sizeof(float)) != 0) abort();
    free(c.j.x);
    free(fx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const dl_shape *s;
    req r;
    int numel, code, i, image;
    if (size < 1) return 0;
    fuzz_serve_init();
    s = &fuzz_shapes[data[0] & 3];
    image = data[0] >> 2 & 1;
    numel = (int)dl_shape_numel(*s);
    memset(&r, 0, sizeof r);
    r.len = size - 1;
    r.body = (char *)malloc(r.len ? r.len : 1);   /* exactly the body: ASan sees any overread */
    if (!r.body) return 0;
    if (r.len) memcpy(r.body, data + 1, r.len);
    code = image ? parse_image(&r, s, numel) : parse_json(&r, s, numel);
    if (code == 0) {
        if (!r.j.x || r.j.rows < 1) abort();
        for (i = 0; i < r.j.rows * numel; i++)
            if (!isfinite(r.j.x[i]) || (image && (r.j.x[i] < 0.0f || r.j.x[i] > 1.0f))) abort();
    } else if (code < 400 || code > 500 || !r.j.err[0]) {
        abort();   /* a refusal always has a status and a reason */
    }
    free(r.j.x);
    if (!image) fuzz_fast_equals_cjson(&r, s, numel);
    free(r.body);
    return 0;
}

#ifdef FUZZ_SEEDS
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

typedef struct fuzz_buf { unsigned char b[65536]; size_t n; } fuzz_buf;
static void fuzz_put(void *ctx, void *data, int size)
{
    fuzz_buf *f = (fuzz_buf *)ctx;
    if (size > 0 && f->n + (size_t)size <= sizeof f->b) { memcpy(f->b + f->n, data, (size_t)size); f->n += (size_t)size; }
}

static void fuzz_seed_body(const char *name, int selector, const void *body, size_t len)
{
    static unsigned char b[65536 + 1];
    b[0] = (unsigned char)selector;
    memcpy(b + 1, body, len);
    fuzz_seed(name, b, len + 1);
}

static void fuzz_seed_json(const char *name, int selector, const char *json)
{
    fuzz_seed_body(name, selector, json, strlen(json));
}

/* jpeg: 0 for a PNG, else the JPEG quality. cut > 0 ends the entropy-coded data
   after that many bytes with an EOI marker, a truncated upload. */
static void fuzz_seed_image(const char *name, int selector, int w, int h, int jpeg, size_t cut)
{
    static fuzz_buf out;
    unsigned char px[64 * 64];
    int i;
    for (i = 0; i < w * h; i++) px[i] = (unsigned char)((i * 37 + i / w * 11) & 255);
    out.n = 0;
    if (jpeg ? !stbi_write_jpg_to_func(fuzz_put, &out, w, h, 1, px, jpeg) : !stbi_write_png_to_func(fuzz_put, &out, w, h, 1, px, w)) {
        fprintf(stderr, "fuzz seeds: cannot encode %s\n", name);
        fuzz__failed = 1;
        return;
    }
    if (cut) {
        size_t sos = 0;
        while (sos + 3 < out.n && !(out.b[sos] == 0xFF && out.b[sos + 1] == 0xDA)) sos++;
        sos += 2 + ((size_t)out.b[sos + 2] << 8 | out.b[sos + 3]);
        if (sos + cut + 2 > out.n) {
            fprintf(stderr, "fuzz seeds: %s has fewer than %lu bytes of scan data\n", name, (unsigned long)cut);
            fuzz__failed = 1;
            return;
        }
        out.n = sos + cut;
        out.b[out.n++] = 0xFF;
        out.b[out.n++] = 0xD9;
    }
    fuzz_seed_body(name, selector | 4, out.b, out.n);
}

static void fuzz_seeds(void)
{
    fuzz_seed_json("instances-4.json", 0, "{\"instances\": [[0.5, -1, 2e-3, 7], [1, 2, 3, 4]]}");
    fuzz_seed_json("inputs-flat-4.json", 0, "{\"inputs\": [0.5, -1, 2e-3, 7, 1, 2, 3, 4]}");
    fuzz_seed_json("inputs-named-4.json", 0, "{\"inputs\": {\"x\": [[1, 2, 3, 4]]}}");
    fuzz_seed_json("instances-2x3-nested.json", 1, "{\"instances\": [[[1, 2, 3], [4, 5, 6]]]}");
    fuzz_seed_json("instances-2x3-flat.json", 1, "{\"instances\": [[1, 2, 3, 4, 5, 6]]}");
    fuzz_seed_json("bad-shape.json", 1, "{\"instances\": [[[1, 2], [4, 5, 6]]]}");
    fuzz_seed_json("bad-type.json", 0, "{\"instances\": [[1, \"2\", null, true]]}");
    fuzz_seed_json("bad-both.json", 0, "{\"instances\": [[1, 2, 3, 4]], \"inputs\": [1, 2, 3, 4]}");
    fuzz_seed_json("bad-huge.json", 0, "{\"instances\": [[1e39, 2, 3, 4]]}");
    fuzz_seed_json("bad-trailing.json", 0, "{\"instances\": [[1, 2, 3, 4]]} x");
    fuzz_seed_image("digit-28x28.png", 2, 28, 28, 0, 0);
    fuzz_seed_image("digit-32x20.png", 3, 32, 20, 0, 0);
    fuzz_seed_image("digit-28x28.jpg", 2, 28, 28, 90, 0);
    fuzz_seed_image("digit-64x64.jpg", 3, 64, 64, 90, 0);
    /* Its scan ends inside a block: stb_image's bit reader goes below zero bits and
       shifts by 32 (see tests/fuzz/ubsan.supp). */
    fuzz_seed_image("truncated-64x64.jpg", 3, 64, 64, 100, 136);
    {
        /* A PNG whose IDAT chunk claims 1.2 GB: stb_image reallocates that much
           unless the server's cap stops it (and -malloc_limit_mb calls it a finding). */
        static const unsigned char png[] = {
            0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 0, 28, 0, 0, 0, 28, 8, 0, 0, 0, 0, 0, 0, 0x57, 0x80,
            0x48, 0x66, 0x00, 0x1a, 'I', 'D', 'A', 'T', 0x78, 0x5e, 0x63, 0x64, 0x50, 0xc5
        };
        fuzz_seed_body("png-idat-claims-1.2GB.png", 2 | 4, png, sizeof png);
    }
}
#endif
