/* serve_json.cc - dlcore-serve's fast path for the common JSON body,
   {"instances": [[n, n, ...], ...]} with flat rows of the model's input size, through
   Debian's simdjson (libsimdjson-dev). On a 784-number row it parses about 9 times
   faster than cJSON, whose number parsing was most of a request's time. It only
   accepts: anything else (another form, a shape or type error, a number that is not
   a finite float32, malformed JSON) is declined, and serve.c then parses the body
   with cJSON, which names what is wrong. Both read each number as the nearest double,
   then round it to float, so the inputs are the same bit for bit. */
#include <simdjson.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

extern "C" int dls_json_rows(const char *body, size_t len, size_t cap, int numel, float **x, int *rows);

/* simdjson reads "-0" as the integer 0, cJSON as the double -0.0: such a body is
   declined, so that both paths give the same bits. */
static bool has_minus_zero(const char *p, size_t len)
{
    const char *end = p + len;
    while ((p = static_cast<const char *>(std::memchr(p, '-', (size_t)(end - p)))) != nullptr) {
        p++;
        if (p < end && *p == '0' && (p + 1 == end || (p[1] != '.' && p[1] != 'e' && p[1] != 'E'))) return true;
    }
    return false;
}

/* The body's rows into a new array: 1 when it is the form above (*x, *rows set; the
   caller frees *x), 0 when declined (nothing allocated). cap is the body buffer's
   size: with simdjson's padding past len it is parsed in place, else copied. */
extern "C" int dls_json_rows(const char *body, size_t len, size_t cap, int numel, float **x, int *rows)
{
    static thread_local simdjson::dom::parser parser;   /* one per HTTP thread, reused */
    simdjson::dom::element root;
    simdjson::dom::array inst;
    float *out = nullptr;
    size_t n = 0, i = 0;
    if (numel < 1 || has_minus_zero(body, len)) return 0;
    try {
        if (parser.parse(body, len, cap < len || cap - len < simdjson::SIMDJSON_PADDING).get(root)) return 0;
        simdjson::dom::object obj;
        if (root.get_object().get(obj) || obj.size() != 1 || obj["instances"].get_array().get(inst)) return 0;
        n = inst.size();
        /* each number takes two bytes at least ("0,"): more rows than that cannot be
           whole, and must not size the allocation */
        if (n == 0 || (double)n * numel > (double)len / 2 + 1) return 0;
        out = static_cast<float *>(std::malloc(n * (size_t)numel * sizeof(float)));
        if (!out) return 0;
        for (simdjson::dom::element row : inst) {
            simdjson::dom::array a;
            size_t k = 0;
            if (row.get_array().get(a) || a.size() != (size_t)numel) { std::free(out); return 0; }
            for (simdjson::dom::element v : a) {
                double d;
                float f;
                if (v.get_double().get(d)) { std::free(out); return 0; }   /* not a number */
                f = static_cast<float>(d);
                if (!std::isfinite(f)) { std::free(out); return 0; }
                out[i * (size_t)numel + k++] = f;
            }
            i++;
        }
    } catch (...) {   /* the parser's allocations */
        std::free(out);
        return 0;
    }
    *x = out;
    *rows = (int)n;
    return 1;
}
