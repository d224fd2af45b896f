/* dlcore section 4: IO - CRC-32, inflate/gunzip, IDX files, data sets. libc only. */
#include <errno.h>
#include <limits.h>

#ifndef DLCORE_GUNZIP_MAX
#define DLCORE_GUNZIP_MAX ((size_t)1 << 30)
#endif

DLDEF void dl_free(void *p) { DLCORE_FREE(p); }

/* ---- CRC-32 (reflected polynomial 0xEDB88320), table generated once offline ---- */

static const uint32_t dl__crc32_table[256] = {
    0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu,
    0xE963A535u, 0x9E6495A3u, 0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u,
    0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u, 0x1DB71064u, 0x6AB020F2u,
    0xF3B97148u, 0x84BE41DEu, 0x1ADAD47Du, 0x6DDDE4EBu, 0xF4D4B551u, 0x83D385C7u,
    0x136C9856u, 0x646BA8C0u, 0xFD62F97Au, 0x8A65C9ECu, 0x14015C4Fu, 0x63066CD9u,
    0xFA0F3D63u, 0x8D080DF5u, 0x3B6E20C8u, 0x4C69105Eu, 0xD56041E4u, 0xA2677172u,
    0x3C03E4D1u, 0x4B04D447u, 0xD20D85FDu, 0xA50AB56Bu, 0x35B5A8FAu, 0x42B2986Cu,
    0xDBBBC9D6u, 0xACBCF940u, 0x32D86CE3u, 0x45DF5C75u, 0xDCD60DCFu, 0xABD13D59u,
    0x26D930ACu, 0x51DE003Au, 0xC8D75180u, 0xBFD06116u, 0x21B4F4B5u, 0x56B3C423u,
    0xCFBA9599u, 0xB8BDA50Fu, 0x2802B89Eu, 0x5F058808u, 0xC60CD9B2u, 0xB10BE924u,
    0x2F6F7C87u, 0x58684C11u, 0xC1611DABu, 0xB6662D3Du, 0x76DC4190u, 0x01DB7106u,
    0x98D220BCu, 0xEFD5102Au, 0x71B18589u, 0x06B6B51Fu, 0x9FBFE4A5u, 0xE8B8D433u,
    0x7807C9A2u, 0x0F00F934u, 0x9609A88Eu, 0xE10E9818u, 0x7F6A0DBBu, 0x086D3D2Du,
    0x91646C97u, 0xE6635C01u, 0x6B6B51F4u, 0x1C6C6162u, 0x856530D8u, 0xF262004Eu,
    0x6C0695EDu, 0x1B01A57Bu, 0x8208F4C1u, 0xF50FC457u, 0x65B0D9C6u, 0x12B7E950u,
    0x8BBEB8EAu, 0xFCB9887Cu, 0x62DD1DDFu, 0x15DA2D49u, 0x8CD37CF3u, 0xFBD44C65u,
    0x4DB26158u, 0x3AB551CEu, 0xA3BC0074u, 0xD4BB30E2u, 0x4ADFA541u, 0x3DD895D7u,
    0xA4D1C46Du, 0xD3D6F4FBu, 0x4369E96Au, 0x346ED9FCu, 0xAD678846u, 0xDA60B8D0u,
    0x44042D73u, 0x33031DE5u, 0xAA0A4C5Fu, 0xDD0D7CC9u, 0x5005713Cu, 0x270241AAu,
    0xBE0B1010u, 0xC90C2086u, 0x5768B525u, 0x206F85B3u, 0xB966D409u, 0xCE61E49Fu,
    0x5EDEF90Eu, 0x29D9C998u, 0xB0D09822u, 0xC7D7A8B4u, 0x59B33D17u, 0x2EB40D81u,
    0xB7BD5C3Bu, 0xC0BA6CADu, 0xEDB88320u, 0x9ABFB3B6u, 0x03B6E20Cu, 0x74B1D29Au,
    0xEAD54739u, 0x9DD277AFu, 0x04DB2615u, 0x73DC1683u, 0xE3630B12u, 0x94643B84u,
    0x0D6D6A3Eu, 0x7A6A5AA8u, 0xE40ECF0Bu, 0x9309FF9Du, 0x0A00AE27u, 0x7D079EB1u,
    0xF00F9344u, 0x8708A3D2u, 0x1E01F268u, 0x6906C2FEu, 0xF762575Du, 0x806567CBu,
    0x196C3671u, 0x6E6B06E7u, 0xFED41B76u, 0x89D32BE0u, 0x10DA7A5Au, 0x67DD4ACCu,
    0xF9B9DF6Fu, 0x8EBEEFF9u, 0x17B7BE43u, 0x60B08ED5u, 0xD6D6A3E8u, 0xA1D1937Eu,
    0x38D8C2C4u, 0x4FDFF252u, 0xD1BB67F1u, 0xA6BC5767u, 0x3FB506DDu, 0x48B2364Bu,
    0xD80D2BDAu, 0xAF0A1B4Cu, 0x36034AF6u, 0x41047A60u, 0xDF60EFC3u, 0xA867DF55u,
    0x316E8EEFu, 0x4669BE79u, 0xCB61B38Cu, 0xBC66831Au, 0x256FD2A0u, 0x5268E236u,
    0xCC0C7795u, 0xBB0B4703u, 0x220216B9u, 0x5505262Fu, 0xC5BA3BBEu, 0xB2BD0B28u,
    0x2BB45A92u, 0x5CB36A04u, 0xC2D7FFA7u, 0xB5D0CF31u, 0x2CD99E8Bu, 0x5BDEAE1Du,
    0x9B64C2B0u, 0xEC63F226u, 0x756AA39Cu, 0x026D930Au, 0x9C0906A9u, 0xEB0E363Fu,
    0x72076785u, 0x05005713u, 0x95BF4A82u, 0xE2B87A14u, 0x7BB12BAEu, 0x0CB61B38u,
    0x92D28E9Bu, 0xE5D5BE0Du, 0x7CDCEFB7u, 0x0BDBDF21u, 0x86D3D2D4u, 0xF1D4E242u,
    0x68DDB3F8u, 0x1FDA836Eu, 0x81BE16CDu, 0xF6B9265Bu, 0x6FB077E1u, 0x18B74777u,
    0x88085AE6u, 0xFF0F6A70u, 0x66063BCAu, 0x11010B5Cu, 0x8F659EFFu, 0xF862AE69u,
    0x616BFFD3u, 0x166CCF45u, 0xA00AE278u, 0xD70DD2EEu, 0x4E048354u, 0x3903B3C2u,
    0xA7672661u, 0xD06016F7u, 0x4969474Du, 0x3E6E77DBu, 0xAED16A4Au, 0xD9D65ADCu,
    0x40DF0B66u, 0x37D83BF0u, 0xA9BCAE53u, 0xDEBB9EC5u, 0x47B2CF7Fu, 0x30B5FFE9u,
    0xBDBDF21Cu, 0xCABAC28Au, 0x53B39330u, 0x24B4A3A6u, 0xBAD03605u, 0xCDD70693u,
    0x54DE5729u, 0x23D967BFu, 0xB3667A2Eu, 0xC4614AB8u, 0x5D681B02u, 0x2A6F2B94u,
    0xB40BBE37u, 0xC30C8EA1u, 0x5A05DF1Bu, 0x2D02EF8Du
};

DLDEF uint32_t dl_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
    while (n--) crc = dl__crc32_table[(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

/* ---- Inflate (RFC 1951) ----------------------------------------------------------
   Bits are taken LSB-first from a 64-bit buffer. Huffman codes are decoded through
   a 2^10-entry table (most codes are short); longer codes fall back to walking the
   canonical code one bit at a time, which needs only the per-length counts. */

#define DL__HUFF_FAST 10

typedef struct dl__huff {
    uint16_t fast[1 << DL__HUFF_FAST];  /* (length << 9) | symbol; 0: use slow path */
    uint16_t count[16];                 /* number of codes of each length */
    uint16_t sym[288];                  /* symbols ordered by (length, value) */
} dl__huff;

typedef struct dl__inflater {
    const unsigned char *in;
    size_t in_len, pos, base;           /* base: offset of in[0] for messages */
    uint64_t bits;
    int nbits;
    unsigned char *out;
    size_t out_len, out_cap, out_max;
    size_t start;                       /* where this stream's output begins */
    dl__huff lit, dist;
} dl__inflater;

static const uint16_t dl__len_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258 };
static const unsigned char dl__len_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 };
static const uint16_t dl__dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 };
static const unsigned char dl__dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 };

/* Byte offset (in the caller's buffer) of the byte holding the next unread bit. */
static size_t dl__inf_offset(const dl__inflater *s)
{
    return s->base + s->pos - (size_t)(s->nbits / 8);
}

static int dl__inf_fail(const dl__inflater *s, const char *what)
{
    return dl__error("deflate: %s at byte offset %lu", what, (unsigned long)dl__inf_offset(s));
}

static void dl__inf_refill(dl__inflater *s)
{
    while (s->nbits <= 56 && s->pos < s->in_len) {
        s->bits |= (uint64_t)s->in[s->pos++] << s->nbits;
        s->nbits += 8;
    }
}

/* n <= 16. Returns the bits, or -1 (message set) if the input ends first. */
static int dl__inf_bits(dl__inflater *s, int n)
{
    int v;
    if (s->nbits < n) {
        dl__inf_refill(s);
        if (s->nbits < n) return dl__inf_fail(s, "truncated input (stream ends inside a block)");
    }
    v = (int)(s->bits & ((1u << n) - 1u));
    s->bits >>= n;
    s->nbits -= n;
    return v;
}

/* Builds the decoder for n code lengths (each 0..15). Over-subscribed sets are
   rejected; incomplete ones are accepted, their unused codes fail when met. */
static int dl__huff_build(dl__huff *h, const unsigned char *lens, int n)
{
    uint16_t offs[16], next[16];
    int i, len, left = 1, code = 0;
    memset(h->count, 0, sizeof h->count);
    for (i = 0; i < n; i++) h->count[lens[i]]++;
    h->count[0] = 0;
    for (len = 1; len < 16; len++) {
        left = (left << 1) - h->count[len];
        if (left < 0) return -1;
    }
    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (len = 1; len < 16; len++) {
        code = (code + (len > 1 ? h->count[len - 1] : 0)) << 1;
        next[len] = (uint16_t)code;
    }
    memset(h->fast, 0, sizeof h->fast);
    for (i = 0; i < n; i++) {
        int l = lens[i], c, rev = 0, b, j;
        if (!l) continue;
        h->sym[offs[l]++] = (uint16_t)i;
        c = next[l]++;
        if (l > DL__HUFF_FAST) continue;
        for (b = 0; b < l; b++) rev |= ((c >> b) & 1) << (l - 1 - b);
        for (j = rev; j < (1 << DL__HUFF_FAST); j += 1 << l)
            h->fast[j] = (uint16_t)((l << 9) | i);
    }
    return 0;
}

static int dl__huff_decode(dl__inflater *s, const dl__huff *h)
{
    int e, len, code = 0, first = 0, index = 0;
    if (s->nbits < 15) dl__inf_refill(s);
    e = h->fast[s->bits & ((1u << DL__HUFF_FAST) - 1u)];
    if (e) {
        len = e >> 9;
        if (len > s->nbits) return dl__inf_fail(s, "truncated input (stream ends inside a code)");
        s->bits >>= len;
        s->nbits -= len;
        return e & 511;
    }
    for (len = 1; len < 16; len++) {
        int cnt = h->count[len];
        if (len > s->nbits) return dl__inf_fail(s, "truncated input (stream ends inside a code)");
        code |= (int)((s->bits >> (len - 1)) & 1u);
        if (code - first < cnt) {
            s->bits >>= len;
            s->nbits -= len;
            return h->sym[index + code - first];
        }
        index += cnt;
        first = (first + cnt) << 1;
        code <<= 1;
    }
    return dl__inf_fail(s, "invalid Huffman code (unused by the block's code set)");
}

/* Makes room for n more output bytes (plus the final NUL) within out_max. */
static int dl__inf_reserve(dl__inflater *s, size_t n)
{
    size_t need, cap;
    unsigned char *p;
    if (n > s->out_max - s->out_len) {
        char what[96];
        snprintf(what, sizeof what, "output exceeds the limit of %lu bytes", (unsigned long)s->out_max);
        return dl__inf_fail(s, what);
    }
    need = s->out_len + n;
    if (need <= s->out_cap) return 0;
    cap = s->out_cap < 4096 ? 4096 : s->out_cap;
    while (cap < need) cap = cap > s->out_max / 2 ? s->out_max : cap * 2;
    p = (unsigned char *)DLCORE_REALLOC(s->out, cap + 1);
    if (!p) return dl__inf_fail(s, "out of memory growing the output");
    s->out = p;
    s->out_cap = cap;
    return 0;
}

static int dl__inf_stored(dl__inflater *s)
{
    size_t len, nlen;
    /* Back up to the byte boundary: whole bytes still buffered are unread input. */
    s->pos -= (size_t)(s->nbits / 8);
    s->bits = 0;
    s->nbits = 0;
    if (s->in_len - s->pos < 4) return dl__inf_fail(s, "truncated input (stored block header)");
    len = (size_t)s->in[s->pos] | (size_t)s->in[s->pos + 1] << 8;
    nlen = (size_t)s->in[s->pos + 2] | (size_t)s->in[s->pos + 3] << 8;
    if (len != (~nlen & 0xFFFFu)) return dl__inf_fail(s, "stored block length does not match its complement");
    s->pos += 4;
    if (s->in_len - s->pos < len) return dl__inf_fail(s, "truncated input (stored block data)");
    if (dl__inf_reserve(s, len)) return -1;
    if (len) memcpy(s->out + s->out_len, s->in + s->pos, len);
    s->out_len += len;
    s->pos += len;
    return 0;
}

static int dl__inf_codes(dl__inflater *s)
{
    for (;;) {
        int sym = dl__huff_decode(s, &s->lit), e, dsym;
        size_t len, dist, i;
        unsigned char *dst;
        if (sym < 0) return -1;
        if (sym < 256) {
            if (s->out_len == s->out_cap && dl__inf_reserve(s, 1)) return -1;
            s->out[s->out_len++] = (unsigned char)sym;
            continue;
        }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return dl__inf_fail(s, "invalid length symbol (286 or 287)");
        if ((e = dl__inf_bits(s, dl__len_extra[sym])) < 0) return -1;
        len = (size_t)dl__len_base[sym] + (size_t)e;
        if ((dsym = dl__huff_decode(s, &s->dist)) < 0) return -1;
        if (dsym >= 30) return dl__inf_fail(s, "invalid distance symbol (30 or 31)");
        if ((e = dl__inf_bits(s, dl__dist_extra[dsym])) < 0) return -1;
        dist = (size_t)dl__dist_base[dsym] + (size_t)e;
        if (dist > s->out_len - s->start) {
            char what[96];
            snprintf(what, sizeof what, "distance %lu too far back (only %lu bytes output)",
                     (unsigned long)dist, (unsigned long)(s->out_len - s->start));
            return dl__inf_fail(s, what);
        }
        if (dl__inf_reserve(s, len)) return -1;
        dst = s->out + s->out_len;
        for (i = 0; i < len; i++) dst[i] = dst[(ptrdiff_t)i - (ptrdiff_t)dist];
        s->out_len += len;
    }
}

static int dl__inf_fixed(dl__inflater *s)
{
    unsigned char lens[288];
    int i;
    for (i = 0; i < 144; i++) lens[i] = 8;
    for (; i < 256; i++) lens[i] = 9;
    for (; i < 280; i++) lens[i] = 7;
    for (; i < 288; i++) lens[i] = 8;
    dl__huff_build(&s->lit, lens, 288);
    for (i = 0; i < 32; i++) lens[i] = 5;   /* 30 and 31 exist but are invalid */
    dl__huff_build(&s->dist, lens, 32);
    return dl__inf_codes(s);
}

static int dl__inf_dynamic(dl__inflater *s)
{
    static const unsigned char order[19] = {
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15 };
    unsigned char lens[286 + 30];
    int nlen, ndist, ncode, i, n;
    if ((nlen = dl__inf_bits(s, 5)) < 0 || (ndist = dl__inf_bits(s, 5)) < 0 ||
        (ncode = dl__inf_bits(s, 4)) < 0) return -1;
    nlen += 257;
    ndist += 1;
    ncode += 4;
    if (nlen > 286) return dl__inf_fail(s, "too many literal/length codes (HLIT > 29)");
    if (ndist > 30) return dl__inf_fail(s, "too many distance codes (HDIST > 29)");
    memset(lens, 0, sizeof lens);
    for (i = 0; i < ncode; i++) {
        int v = dl__inf_bits(s, 3);
        if (v < 0) return -1;
        lens[order[i]] = (unsigned char)v;
    }
    if (dl__huff_build(&s->lit, lens, 19)) return dl__inf_fail(s, "over-subscribed code-length code");
    for (n = 0; n < nlen + ndist;) {
        int sym = dl__huff_decode(s, &s->lit), rep, val = 0;
        if (sym < 0) return -1;
        if (sym < 16) { lens[n++] = (unsigned char)sym; continue; }
        if (sym == 16) {
            if (n == 0) return dl__inf_fail(s, "code length repeat with no previous length");
            val = lens[n - 1];
            if ((rep = dl__inf_bits(s, 2)) < 0) return -1;
            rep += 3;
        } else if (sym == 17) {
            if ((rep = dl__inf_bits(s, 3)) < 0) return -1;
            rep += 3;
        } else {
            if ((rep = dl__inf_bits(s, 7)) < 0) return -1;
            rep += 11;
        }
        if (rep > nlen + ndist - n) return dl__inf_fail(s, "code length repeat runs past the end of the lengths");
        while (rep--) lens[n++] = (unsigned char)val;
    }
    if (lens[256] == 0) return dl__inf_fail(s, "no end-of-block code in the literal/length code");
    if (dl__huff_build(&s->lit, lens, nlen)) return dl__inf_fail(s, "over-subscribed literal/length code");
    if (dl__huff_build(&s->dist, lens + nlen, ndist)) return dl__inf_fail(s, "over-subscribed distance code");
    return dl__inf_codes(s);
}

/* Decodes one deflate stream from s->in[s->pos]; output appends to s->out. */
static int dl__inf_run(dl__inflater *s)
{
    int final, type, rc;
    do {
        if ((final = dl__inf_bits(s, 1)) < 0 || (type = dl__inf_bits(s, 2)) < 0) return -1;
        if (type == 0) rc = dl__inf_stored(s);
        else if (type == 1) rc = dl__inf_fixed(s);
        else if (type == 2) rc = dl__inf_dynamic(s);
        else rc = dl__inf_fail(s, "invalid block type 3");
        if (rc) return -1;
    } while (!final);
    /* Unused whole bytes in the bit buffer belong to whatever follows the stream. */
    s->pos -= (size_t)(s->nbits / 8);
    s->bits = 0;
    s->nbits = 0;
    return 0;
}

static dl__inflater *dl__inf_new(size_t out_max, size_t cap_hint)
{
    dl__inflater *s = (dl__inflater *)DLCORE_MALLOC(sizeof *s);
    if (!s) { dl__error("deflate: out of memory"); return NULL; }
    memset(s, 0, sizeof *s);
    s->out_max = out_max;
    if (cap_hint > out_max) cap_hint = out_max;
    /* Never NULL, so that even empty output is a valid pointer (for memcpy/CRC). */
    s->out = (unsigned char *)DLCORE_MALLOC(cap_hint + 1);
    if (!s->out && cap_hint) {   /* the hint was too greedy: start small */
        cap_hint = 0;
        s->out = (unsigned char *)DLCORE_MALLOC(1);
    }
    if (!s->out) {
        DLCORE_FREE(s);
        dl__error("deflate: out of memory");
        return NULL;
    }
    s->out_cap = cap_hint;
    return s;
}

/* Hands the output to the caller (NUL-terminated, never NULL) and frees s. */
static int dl__inf_finish(dl__inflater *s, int rc, unsigned char **out, size_t *out_len)
{
    if (rc == 0) {
        s->out[s->out_len] = 0;
        *out = s->out;
        *out_len = s->out_len;
    } else {
        DLCORE_FREE(s->out);
    }
    DLCORE_FREE(s);
    return rc ? DL_ERR : DL_OK;
}

DLDEF int dl_inflate(const void *in, size_t in_len, size_t *in_used,
                     unsigned char **out, size_t *out_len, size_t max_out)
{
    dl__inflater *s;
    int rc;
    *out = NULL;
    *out_len = 0;
    if (in_used) *in_used = 0;
    if (!in && in_len) return dl__error("deflate: NULL input");
    if (!(s = dl__inf_new(max_out, 0))) return DL_ERR;
    s->in = (const unsigned char *)in;
    s->in_len = in_len;
    rc = dl__inf_run(s);
    if (rc == 0 && in_used) *in_used = s->pos;
    return dl__inf_finish(s, rc, out, out_len);
}

/* ---- gzip (RFC 1952) ------------------------------------------------------------- */

static uint32_t dl__le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parses the member header at in[pos]; on success *data_at is where deflate data starts. */
static int dl__gz_header(const unsigned char *in, size_t len, size_t pos, size_t *data_at)
{
    size_t p = pos;
    int flg;
    if (len - pos < 10) return dl__error("gzip: truncated header at byte offset %lu", (unsigned long)pos);
    if (in[p] != 0x1F || in[p + 1] != 0x8B)
        return dl__error("gzip: bad magic %02X %02X at byte offset %lu (expected 1F 8B)",
                         in[p], in[p + 1], (unsigned long)pos);
    if (in[p + 2] != 8)
        return dl__error("gzip: unknown compression method %d at byte offset %lu (only 8, deflate)",
                         in[p + 2], (unsigned long)(pos + 2));
    flg = in[p + 3];
    if (flg & 0xE0)
        return dl__error("gzip: reserved flag bits set (0x%02X) at byte offset %lu", flg, (unsigned long)(pos + 3));
    p += 10;
    if (flg & 4) { /* FEXTRA */
        size_t xlen;
        if (len - p < 2) return dl__error("gzip: truncated extra field at byte offset %lu", (unsigned long)p);
        xlen = (size_t)in[p] | (size_t)in[p + 1] << 8;
        p += 2;
        if (len - p < xlen) return dl__error("gzip: truncated extra field at byte offset %lu", (unsigned long)p);
        p += xlen;
    }
    if (flg & 8) { /* FNAME */
        const unsigned char *z = (const unsigned char *)memchr(in + p, 0, len - p);
        if (!z) return dl__error("gzip: unterminated file name at byte offset %lu", (unsigned long)p);
        p = (size_t)(z - in) + 1;
    }
    if (flg & 16) { /* FCOMMENT */
        const unsigned char *z = (const unsigned char *)memchr(in + p, 0, len - p);
        if (!z) return dl__error("gzip: unterminated comment at byte offset %lu", (unsigned long)p);
        p = (size_t)(z - in) + 1;
    }
    if (flg & 2) { /* FHCRC: low 16 bits of the CRC-32 of the header so far */
        uint32_t want;
        if (len - p < 2) return dl__error("gzip: truncated header CRC at byte offset %lu", (unsigned long)p);
        want = (uint32_t)in[p] | (uint32_t)in[p + 1] << 8;
        if ((dl_crc32(0, in + pos, p - pos) & 0xFFFFu) != want)
            return dl__error("gzip: header CRC mismatch at byte offset %lu", (unsigned long)p);
        p += 2;
    }
    *data_at = p;
    return DL_OK;
}

/* Decodes the member at in[*pos] and checks its trailer; advances *pos past it. */
static int dl__gz_member(dl__inflater *s, const unsigned char *in, size_t len, size_t *pos)
{
    size_t at = 0, n;
    uint32_t crc, want_crc, want_size;
    if (dl__gz_header(in, len, *pos, &at)) return -1;
    s->in = in + at;
    s->in_len = len - at;
    s->base = at;
    s->pos = 0;
    s->bits = 0;
    s->nbits = 0;
    s->start = s->out_len;
    if (dl__inf_run(s)) return -1;
    at += s->pos;
    if (len - at < 8) return dl__error("gzip: truncated trailer at byte offset %lu", (unsigned long)at);
    n = s->out_len - s->start;
    crc = dl_crc32(0, s->out + s->start, n);
    want_crc = dl__le32(in + at);
    want_size = dl__le32(in + at + 4);
    if (crc != want_crc)
        return dl__error("gzip: CRC-32 mismatch at byte offset %lu (stored %08lX, data gives %08lX)",
                         (unsigned long)at, (unsigned long)want_crc, (unsigned long)crc);
    if ((uint32_t)n != want_size)
        return dl__error("gzip: size mismatch at byte offset %lu (ISIZE %lu, data has %lu bytes)",
                         (unsigned long)(at + 4), (unsigned long)want_size, (unsigned long)n);
    *pos = at + 8;
    return 0;
}

DLDEF int dl_gunzip_limit(const void *in, size_t in_len, unsigned char **out,
                          size_t *out_len, size_t max_out)
{
    const unsigned char *p = (const unsigned char *)in;
    dl__inflater *s;
    size_t pos = 0, hint = 0;
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    if (!in || in_len == 0) return dl__error("gzip: empty input");
    /* The last ISIZE sizes the buffer for the common single-member file; a lying
       trailer cannot make it exceed what deflate can expand to (1032:1). */
    if (in_len >= 18) {
        hint = dl__le32(p + in_len - 4);
        if (hint / 1032 > in_len) hint = 0;
    }
    if (!(s = dl__inf_new(max_out, hint))) return DL_ERR;
    do {
        if (pos > 0 && (p[pos] != 0x1F || (in_len - pos > 1 && p[pos + 1] != 0x8B))) {
            rc = dl__error("gzip: %lu bytes of trailing data after the last member at byte offset %lu",
                           (unsigned long)(in_len - pos), (unsigned long)pos);
            break;
        }
        rc = dl__gz_member(s, p, in_len, &pos);
    } while (rc == 0 && pos < in_len);
    return dl__inf_finish(s, rc, out, out_len);
}

DLDEF int dl_gunzip(const void *in, size_t in_len, unsigned char **out, size_t *out_len)
{
    return dl_gunzip_limit(in, in_len, out, out_len, DLCORE_GUNZIP_MAX);
}

/* ---- Files ------------------------------------------------------------------------ */

DLDEF int dl_read_file(const char *path, unsigned char **data, size_t *len)
{
    FILE *f;
    unsigned char *buf = NULL, *nb;
    size_t n = 0, cap = 0, got;
    *data = NULL;
    *len = 0;
    if (!(f = fopen(path, "rb"))) return dl__error("%s: cannot open: %s", path, strerror(errno));
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : (size_t)1 << 16;
            if (!(nb = (unsigned char *)DLCORE_REALLOC(buf, cap + 1))) {
                DLCORE_FREE(buf);
                fclose(f);
                return dl__error("%s: out of memory reading the file", path);
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        DLCORE_FREE(buf);
        fclose(f);
        return dl__error("%s: read error after %lu bytes", path, (unsigned long)n);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DL_OK;
}

/* ---- IDX files ------------------------------------------------------------------- */

static int dl__idx_type_size(int type)
{
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

static uint32_t dl__be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads path, gunzipping it when it starts with the gzip magic; messages name path. */
static int dl__read_maybe_gz(const char *path, unsigned char **data, size_t *len)
{
    unsigned char *raw, *plain;
    size_t n, plain_len;
    if (dl_read_file(path, &raw, &n)) return DL_ERR;
    if (n < 2 || raw[0] != 0x1F || raw[1] != 0x8B) {
        *data = raw;
        *len = n;
        return DL_OK;
    }
    if (dl_gunzip(raw, n, &plain, &plain_len)) {
        char msg[400];
        size_t k = strlen(dl_last_error());
        if (k >= sizeof msg) k = sizeof msg - 1;
        memcpy(msg, dl_last_error(), k);
        msg[k] = 0;
        DLCORE_FREE(raw);
        return dl__error("%s: %s", path, msg);
    }
    DLCORE_FREE(raw);
    *data = plain;
    *len = plain_len;
    return DL_OK;
}

static int dl__idx_parse(dl_idx *idx, const char *path, size_t len)
{
    const unsigned char *b = idx->buf_;
    size_t header, need, esize;
    int i;
    if (len < 4) return dl__error("%s: too short for an IDX header (%lu bytes)", path, (unsigned long)len);
    if (b[0] || b[1] || !dl__idx_type_size(b[2]))
        return dl__error("%s: bad IDX magic 0x%08lX (expected 0x000008xx .. 0x00000Exx)",
                         path, (unsigned long)dl__be32(b));
    idx->type = b[2];
    idx->ndim = b[3];
    if (idx->ndim < 1 || idx->ndim > 4)
        return dl__error("%s: unsupported IDX rank %d (magic 0x%08lX; 1 to 4 handled)",
                         path, idx->ndim, (unsigned long)dl__be32(b));
    header = 4 + 4 * (size_t)idx->ndim;
    if (len < header) return dl__error("%s: truncated IDX header (%lu bytes)", path, (unsigned long)len);
    esize = (size_t)dl__idx_type_size(idx->type);
    idx->count = 1;
    for (i = 0; i < idx->ndim; i++) {
        uint32_t d = dl__be32(b + 4 + 4 * i);
        if (d > (uint32_t)INT_MAX || (d && idx->count > ((size_t)-1 / esize) / d))
            return dl__error("%s: absurd IDX dimension %d = %lu", path, i, (unsigned long)d);
        idx->dims[i] = (int)d;
        idx->count *= d;
    }
    need = idx->count * esize;
    if (len - header < need)
        return dl__error("%s: truncated: the header declares %lu elements (%lu bytes) but only %lu bytes follow",
                         path, (unsigned long)idx->count, (unsigned long)need, (unsigned long)(len - header));
    if (len - header > need)
        return dl__error("%s: %lu unexpected bytes after the %lu declared data bytes",
                         path, (unsigned long)(len - header - need), (unsigned long)need);
    idx->data = b + header;
    return DL_OK;
}

DLDEF int dl_idx_read(dl_idx *idx, const char *path)
{
    size_t len;
    memset(idx, 0, sizeof *idx);
    if (dl__read_maybe_gz(path, &idx->buf_, &len)) return DL_ERR;
    if (dl__idx_parse(idx, path, len)) {
        dl_idx_free(idx);
        return DL_ERR;
    }
    return DL_OK;
}

DLDEF double dl_idx_value(const dl_idx *idx, size_t i)
{
    const unsigned char *p;
    DLCORE_ASSERT(i < idx->count);
    p = idx->data + i * (size_t)dl__idx_type_size(idx->type);
    switch (idx->type) {
    case 0x08: return p[0];
    case 0x09: return p[0] < 128 ? (double)p[0] : (double)p[0] - 256.0;
    case 0x0B: { int v = p[0] << 8 | p[1]; return v < 32768 ? v : v - 65536; }
    case 0x0C: return (double)(int32_t)dl__be32(p);
    case 0x0D: { uint32_t u = dl__be32(p); float f; memcpy(&f, &u, 4); return f; }
    default: {
        uint64_t u = (uint64_t)dl__be32(p) << 32 | dl__be32(p + 4);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    }
}

DLDEF void dl_idx_free(dl_idx *idx)
{
    DLCORE_FREE(idx->buf_);
    memset(idx, 0, sizeof *idx);
}

/* ---- Data sets --------------------------------------------------------------------- */

DLDEF int dl_dataset_alloc(dl_dataset *ds, int n, int ndim, const int *shape, int y_size)
{
    size_t xs = 1, nx, ny;
    int i;
    memset(ds, 0, sizeof *ds);
    if (n < 0 || y_size < 0 || ndim < 1 || ndim > 3 || !shape)
        return dl__error("dl_dataset_alloc: bad arguments (n %d, ndim %d, y_size %d)", n, ndim, y_size);
    for (i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || xs > (size_t)INT_MAX / (size_t)shape[i])
            return dl__error("dl_dataset_alloc: bad sample shape (dimension %d is %d)", i, shape[i]);
        xs *= (size_t)shape[i];
        ds->shape[i] = shape[i];
    }
    if (n && (xs > ((size_t)-1 / sizeof(float)) / (size_t)n ||
              (size_t)y_size > ((size_t)-1 / sizeof(float)) / (size_t)n))
        return dl__error("dl_dataset_alloc: %d samples of %lu floats do not fit in memory", n, (unsigned long)xs);
    nx = (size_t)n * xs;
    ny = (size_t)n * (size_t)y_size;
    ds->x = (float *)DLCORE_MALLOC((nx ? nx : 1) * sizeof(float));
    ds->y = (float *)DLCORE_MALLOC((ny ? ny : 1) * sizeof(float));
    if (!ds->x || !ds->y) {
        DLCORE_FREE(ds->x);
        DLCORE_FREE(ds->y);
        memset(ds, 0, sizeof *ds);
        return dl__error("dl_dataset_alloc: out of memory for %d samples of %lu floats", n, (unsigned long)xs);
    }
    memset(ds->x, 0, (nx ? nx : 1) * sizeof(float));
    memset(ds->y, 0, (ny ? ny : 1) * sizeof(float));
    ds->n = n;
    ds->ndim = ndim;
    ds->x_size = (int)xs;
    ds->y_size = y_size;
    ds->owned = 1;
    return DL_OK;
}

DLDEF void dl_dataset_free(dl_dataset *ds)
{
    if (!ds) return;
    if (ds->owned) {
        DLCORE_FREE(ds->x);
        DLCORE_FREE(ds->y);
    }
    memset(ds, 0, sizeof *ds);
}

DLDEF int dl_dataset_split(const dl_dataset *src, int first, int count, dl_dataset *view)
{
    if (first < 0 || count < 0 || first > src->n || count > src->n - first)
        return dl__error("dl_dataset_split: rows [%d, %d+%d) outside a data set of %d samples",
                         first, first, count, src->n);
    *view = *src;
    view->x = src->x + (size_t)first * (size_t)src->x_size;
    view->y = src->y + (size_t)first * (size_t)src->y_size;
    view->n = count;
    view->owned = 0;
    return DL_OK;
}

/* Finds <dir>/<prefix>-<kind>-<idxn>-ubyte in its accepted spellings; on failure
   the message lists every path tried. */
static int dl__idx_find(char *path, size_t size, const char *dir, const char *prefix,
                        const char *kind, const char *idxn)
{
    static const char *const forms[4] = { "%s/%s-%s-%s-ubyte", "%s/%s-%s-%s-ubyte.gz",
                                          "%s/%s-%s.%s-ubyte", "%s/%s-%s.%s-ubyte.gz" };
    char tried[1024];
    size_t used = 0;
    int i;
    tried[0] = 0;
    for (i = 0; i < 4; i++) {
        FILE *f;
        int w = snprintf(path, size, forms[i], dir, prefix, kind, idxn);
        if (w < 0 || (size_t)w >= size) return dl__error("%s/%s: path too long", dir, prefix);
        if ((f = fopen(path, "rb")) != NULL) {
            fclose(f);
            return DL_OK;
        }
        w = snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", path);
        if (w > 0 && (size_t)w < sizeof tried - used) used += (size_t)w;
    }
    return dl__error("no %s file for '%s' in %s (tried %s)", kind, prefix, dir, tried);
}

static int dl__idx_fill(dl_dataset *ds, const dl_idx *im, const dl_idx *lb)
{
    int shape[2], i, maxl = -1;
    size_t k, nx;
    shape[0] = im->dims[1];
    shape[1] = im->dims[2];
    if (dl_dataset_alloc(ds, im->dims[0], 2, shape, 1)) return DL_ERR;
    nx = (size_t)ds->n * (size_t)ds->x_size;
    for (k = 0; k < nx; k++) ds->x[k] = (float)im->data[k] * (1.0f / 255.0f);
    for (i = 0; i < ds->n; i++) {
        int l = lb->data[i];
        ds->y[i] = (float)l;
        if (l > maxl) maxl = l;
    }
    ds->n_classes = maxl + 1;
    return DL_OK;
}

DLDEF int dl_idx_load(dl_dataset *ds, const char *dir, const char *prefix)
{
    char ipath[1024], lpath[1024];
    dl_idx im, lb;
    int rc = DL_ERR;
    memset(ds, 0, sizeof *ds);
    if (!dir || !*dir) dir = ".";
    if (!prefix) return dl__error("dl_idx_load: NULL prefix");
    if (dl__idx_find(ipath, sizeof ipath, dir, prefix, "images", "idx3") ||
        dl__idx_find(lpath, sizeof lpath, dir, prefix, "labels", "idx1"))
        return DL_ERR;
    if (dl_idx_read(&im, ipath)) return DL_ERR;
    if (dl_idx_read(&lb, lpath)) {
        dl_idx_free(&im);
        return DL_ERR;
    }
    if (im.type != 0x08 || im.ndim != 3)
        dl__error("%s: magic 0x%08X is not u8 images (expected 0x00000803)", ipath,
                  (unsigned)(im.type << 8 | im.ndim));
    else if (lb.type != 0x08 || lb.ndim != 1)
        dl__error("%s: magic 0x%08X is not u8 labels (expected 0x00000801)", lpath,
                  (unsigned)(lb.type << 8 | lb.ndim));
    else if (im.dims[1] < 1 || im.dims[2] < 1 || im.dims[1] > 65535 || im.dims[2] > 65535)
        dl__error("%s: absurd image size %d x %d", ipath, im.dims[1], im.dims[2]);
    else if (im.dims[0] != lb.dims[0])
        dl__error("%s has %d images but %s has %d labels", ipath, im.dims[0], lpath, lb.dims[0]);
    else
        rc = dl__idx_fill(ds, &im, &lb);
    dl_idx_free(&im);
    dl_idx_free(&lb);
    return rc;
}
