/* serve_float.c - dlcore-serve writes each predicted float as a JSON number that
   reads back as the same float (format_float in examples/serve.c, compiled here with
   its main renamed): every power of two, the floats around every power of ten, the
   extremes and denormals, and millions of random bit patterns, through strtof; each
   string is a valid JSON number in %g's form, at most 16 bytes. */
#define main serve_main
#include "../examples/serve.c"
#undef main
#include "dltest.h"

static int is_json_number(const char *s)
{
    if (*s == '-') s++;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') while (*s >= '0' && *s <= '9') s++;
    else return 0;
    if (*s == '.') { s++; if (!(*s >= '0' && *s <= '9')) return 0; while (*s >= '0' && *s <= '9') s++; }
    if (*s == 'e') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!(*s >= '0' && *s <= '9')) return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0';
}

static int fails;

static void round_trip(float f)
{
    char t[32], ref[32];
    int n = format_float(t, f);
    float back;
    t[n] = '\0';
    back = strtof(t, NULL);
    if (n > 16 || !is_json_number(t) || memcmp(&back, &f, sizeof f) != 0) {
        snprintf(ref, sizeof ref, "%.9g", (double)f);
        if (++fails <= 5) fprintf(stderr, "  %s (%d bytes) for %s\n", t, n, ref);
    }
}

static uint32_t rng = 12345u;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

DL_TEST(floats_read_back_bit_for_bit)
{
    static const float special[] = { 0.0f, 1.0f, 0.1f, 0.5f, 1e-4f, 9.99999975e-05f, 1e-5f, 123456789.0f, 1e9f,
                                      999999999.0f, 1e8f, 3.40282347e38f, 1.17549435e-38f, 1.4e-45f, 0.99999994f,
                                      1.00000012f, 33554432.0f, 16777217.0f };
    int i, e, k;
    fails = 0;
    for (i = 0; i < (int)(sizeof special / sizeof special[0]); i++) { round_trip(special[i]); round_trip(-special[i]); }
    for (e = -149; e <= 127; e++) round_trip(ldexpf(1.0f, e));
    for (e = -45; e <= 38; e++) {   /* the floats on either side of each power of ten */
        float p = strtof("1", NULL) * (float)pow(10.0, e);
        for (k = -3; k <= 3; k++) {
            uint32_t u;
            memcpy(&u, &p, sizeof u);
            if ((long long)u + k < 1) continue;   /* stays a positive float */
            round_trip(from_bits(u + (uint32_t)k));
        }
    }
    for (i = 0; i < 4000000; i++) {
        uint32_t u = next();
        float f = from_bits(u);
        if (f != f || f - f != 0) continue;
        round_trip(f);
        round_trip(from_bits(0x3f800000u - (u & 0x00ffffffu)));   /* probabilities: (0, 1] densely */
    }
    DL_CHECK(fails == 0);
}

DL_TEST(non_finite_is_null_and_forms_are_g_like)
{
    char t[32];
    int n;
    n = format_float(t, from_bits(0x7fc00000u)); t[n] = 0; DL_CHECK(strcmp(t, "null") == 0);
    n = format_float(t, from_bits(0x7f800000u)); t[n] = 0; DL_CHECK(strcmp(t, "null") == 0);
    n = format_float(t, from_bits(0xff800000u)); t[n] = 0; DL_CHECK(strcmp(t, "null") == 0);
    n = format_float(t, 0.25f); t[n] = 0; DL_CHECK(strcmp(t, "0.25") == 0);
    n = format_float(t, -0.0f); t[n] = 0; DL_CHECK(strcmp(t, "-0") == 0);
    n = format_float(t, 100.0f); t[n] = 0; DL_CHECK(strcmp(t, "100") == 0);
    n = format_float(t, 1e-5f); t[n] = 0; DL_CHECK(strcmp(t, "9.99999975e-06") == 0);
    n = format_float(t, 1e20f); t[n] = 0; DL_CHECK(strcmp(t, "1.00000002e+20") == 0);
    n = format_float(t, 0.1f); t[n] = 0; DL_CHECK(strcmp(t, "0.100000001") == 0);
}

DL_TEST_MAIN()
