/* TEST DOUBLE ONLY - NOT the real QE kernels (those are libquantease_formats, formats/ crate).
 * Scalar stand-in of the QE C ABI for QE FORMAT VERSION 3, written from the value formula in
 * formats/SPEC.md, so the ggml patch can be built and tested without the real library. In-block
 * code packing as documented in formats/src/qe/mod.rs (so it also decodes files of the real
 * encoder: an independent second implementation); outlier pool layout per spec. Scalar and slow:
 * tests only. formats/tests/c_abi.rs runs formats/tests/c/test_quantease.c against it.
 *   block = u0, u1 (scale codes of weights 0..15, 16..31) + packed codes
 *   S(u) = (e ? (16 + m) << (e - 1) : m) * 2^-21,  e = u >> 4, m = u & 15
 *   w = S(u[i/16]) * T_b[c]  (+ h at outlier columns) */
#include "quantease.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) { bits = sign; }
        else { float v = ldexpf((float) man, -24); return (h & 0x8000) ? -v : v; }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f; memcpy(&f, &bits, 4); return f;
}

static uint16_t f32_to_f16(float f) { /* round to nearest even, no NaN handling needed here */
    uint32_t x; memcpy(&x, &f, 4);
    const uint16_t sign = (x >> 16) & 0x8000;
    float a = fabsf(f);
    if (a >= 65520.0f) return sign | 0x7C00;
    if (a < ldexpf(1.0f, -14)) { /* subnormal */
        return sign | (uint16_t) lrintf(a * ldexpf(1.0f, 24));
    }
    int e; float m = frexpf(a, &e);         /* a = m * 2^e, m in [0.5, 1) */
    uint32_t man = (uint32_t) lrintf((m * 2.0f - 1.0f) * 1024.0f);
    int exp = e - 1 + 15;
    if (man == 1024) { man = 0; exp++; }
    if (exp >= 31) return sign | 0x7C00;
    return sign | (uint16_t) (exp << 10) | (uint16_t) man;
}

typedef struct { int bits, pool; } fmt_t;
static fmt_t fmt_of(int type) { int q = type - 200; fmt_t f = { 2 + q/3, q%3 }; return f; }
static size_t block_bytes(fmt_t f) { return 2 + 4*f.bits; }

/* level tables T_b (ascending, symmetric) */
static const int8_t T2[4]  = { -127, -28, 28, 127 };
static const int8_t T3[8]  = { -127, -75, -40, -11, 11, 40, 75, 127 };
static const int8_t T4[16] = { -127, -102, -79, -60, -43, -29, -16, -5, 5, 16, 29, 43, 60, 79, 102, 127 };
static int level(fmt_t f, unsigned c) { return f.bits == 2 ? T2[c & 3] : f.bits == 3 ? T3[c & 7] : T4[c & 15]; }

/* "e4m4" scale code -> scale (exact) */
static float scale_value(unsigned u) {
    const unsigned e = (u >> 4) & 15, m = u & 15;
    return ldexpf((float) (e ? (16 + m) << (e - 1) : m), -21);
}
/* nearest scale code to v (v <= 0 -> 0, beyond the largest -> 255, ties -> lower code) */
static unsigned scale_code(float v) {
    if (!(v > 0)) return 0;
    unsigned best = 0; double be = fabs((double) v);
    for (unsigned u = 1; u < 256; ++u) {
        const double e = fabs((double) scale_value(u) - v);
        if (e < be) { be = e; best = u; }
    }
    return best;
}
/* code whose value s*T[c] is nearest to x (ties -> lower code), compared in double (exact here) */
static unsigned nearest_code(fmt_t f, float s, float x) {
    const unsigned L = 1u << f.bits; unsigned best = 0; double be = INFINITY;
    for (unsigned c = 0; c < L; ++c) {
        const double e = fabs((double) s*level(f, c) - x);
        if (e < be) { be = e; best = c; }
    }
    return best;
}

/* code packing of formats/src/qe/mod.rs (formats/SPEC.md), re-implemented independently:
 *   b = 2: qs[8]          byte j bits 2k..2k+1 = code of weight j + 8k   (j < 8, k < 4)
 *   b = 3: qs[12]         96-bit little-endian stream, code i = bits 3i..3i+2
 *   b = 4: qs[16]         byte j low nibble = weight j, high nibble = weight j + 16 */
static unsigned get_code(const uint8_t *qs, int bits, int i) {
    if (bits == 4) return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4);
    if (bits == 3) {
        unsigned c = 0;
        for (int t = 0; t < 3; t++) c |= ((qs[(3*i + t) >> 3] >> ((3*i + t) & 7)) & 1u) << t;
        return c;
    }
    return (qs[i & 7] >> (2*(i >> 3))) & 3u;
}
static void put_code(uint8_t *qs, int bits, int i, unsigned v) {
    if (bits == 4) { if (i < 16) qs[i] |= (uint8_t) (v & 0x0F); else qs[i - 16] |= (uint8_t) ((v & 0x0F) << 4); return; }
    if (bits == 3) {
        for (int t = 0; t < 3; t++) qs[(3*i + t) >> 3] |= (uint8_t) (((v >> t) & 1u) << ((3*i + t) & 7));
        return;
    }
    qs[i & 7] |= (uint8_t) ((v & 3u) << (2*(i >> 3)));
}

static int valid_width(int64_t k) { return k > 0 && k % 32 == 0 && k <= 65504; }

static void to_float_impl(fmt_t f, const void *vx, float *y, int64_t k) {
    if (!y || k <= 0) return;
    if (!vx || !valid_width(k)) { for (int64_t i = 0; i < k; ++i) y[i] = NAN; return; }
    const uint8_t *x = vx; const int64_t nb = k/32;
    for (int64_t i = 0; i < nb; ++i) {
        const uint8_t *blk = x + i*block_bytes(f);
        for (int j = 0; j < 32; ++j) y[i*32 + j] = scale_value(blk[j/16]) * (float) level(f, get_code(blk + 2, f.bits, j));
    }
    const uint8_t *pool = x + nb*block_bytes(f); const int64_t n_ent = nb*f.pool/4;
    for (int64_t e = 0; e < n_ent; ++e) {
        const unsigned col = pool[4*e] | (pool[4*e + 1] << 8);
        if (col >= (unsigned) k) break;
        y[col] += f16_to_f32((uint16_t) (pool[4*e + 2] | (pool[4*e + 3] << 8)));
    }
}

/* RTN: per 16-weight sub-block u = nearest code to amax/127, codes nearest; outliers = largest
 * |residual| entries (sorted by column) whose f16 correction lowers the error */
static void from_float_impl(fmt_t f, const float *x, void *vy, int64_t k) {
    if (!x || !vy || !valid_width(k)) return;
    uint8_t *y = vy; const int64_t nb = k/32;
    memset(y, 0, nb*(block_bytes(f) + f.pool));
    float *deq = malloc(sizeof(float)*k);
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t *blk = y + i*block_bytes(f);
        for (int h = 0; h < 2; ++h) {
            float amax = 0; for (int j = 16*h; j < 16*h + 16; ++j) amax = fmaxf(amax, fabsf(x[i*32 + j]));
            /* the scale code with the least squared error among those near amax/127 */
            const int u0 = (int) scale_code(amax / 127.0f); int bu = u0; double berr = INFINITY;
            for (int u = u0 - 12; u <= u0 + 4; ++u) {
                if (u < 0 || u > 255) continue;
                const float su = scale_value((unsigned) u); double err = 0;
                for (int j = 16*h; j < 16*h + 16; ++j) {
                    const double d = x[i*32 + j] - su*(float) level(f, nearest_code(f, su, x[i*32 + j]));
                    err += d*d;
                }
                if (err < berr) { berr = err; bu = u; }
            }
            const unsigned u = (unsigned) bu; const float s = scale_value(u);
            blk[h] = (uint8_t) u;
            for (int j = 16*h; j < 16*h + 16; ++j) {
                const unsigned c = nearest_code(f, s, x[i*32 + j]);
                put_code(blk + 2, f.bits, j, c); deq[i*32 + j] = s*(float) level(f, c);
            }
        }
    }
    uint8_t *pool = y + nb*block_bytes(f); const int64_t n_ent = nb*f.pool/4;
    int64_t used = 0;
    if (n_ent > 0) {
        char *taken = calloc(k, 1);
        int64_t *cols = malloc(sizeof(int64_t)*n_ent);
        for (int64_t e = 0; e < n_ent; ++e) {
            int64_t best = -1; float bv = 0;
            for (int64_t j = 0; j < k; ++j) { float r = fabsf(x[j] - deq[j]); if (!taken[j] && r > bv) { bv = r; best = j; } }
            if (best < 0) break;
            taken[best] = 1;
            const float h = f16_to_f32(f32_to_f16(x[best] - deq[best]));
            if (fabsf(x[best] - (deq[best] + h)) < bv) cols[used++] = best;
        }
        for (int64_t a = 1; a < used; ++a) { int64_t v = cols[a], b = a; while (b > 0 && cols[b-1] > v) { cols[b] = cols[b-1]; --b; } cols[b] = v; }
        for (int64_t e = 0; e < used; ++e) {
            const uint16_t h = f32_to_f16(x[cols[e]] - deq[cols[e]]);
            pool[4*e] = cols[e] & 0xFF; pool[4*e + 1] = (uint8_t) (cols[e] >> 8); pool[4*e + 2] = h & 0xFF; pool[4*e + 3] = h >> 8;
        }
        free(taken); free(cols);
    }
    for (int64_t e = used; e < n_ent; ++e) { pool[4*e] = 0xFF; pool[4*e + 1] = 0xFF; }
    free(deq);
}

static float f16_table[65536];
static void init_table(void) {
    for (unsigned i = 0; i < 65536; ++i) f16_table[i] = f16_to_f32((uint16_t) i);
}
#define F16(lo, hi) f16_table[(uint16_t) ((lo) | ((hi) << 8))]

/* y: block_q8_0[n/32] = { f16 d; int8 qs[32] } (34 bytes);
 * per block d_q * (S(u0)*isum0 + S(u1)*isum1), isum_j = sum over sub-block j of T[c]*q (exact) */
static void vec_dot_impl(fmt_t f, int n, float *s, const void *vx, const void *vy, int nrc) {
    if (!s) return;
    if (!vx || !vy || nrc != 1 || !valid_width(n)) { *s = NAN; return; }
    const uint8_t *x = vx, *y = vy; const int nb = n/32;
    float sum = 0;
    for (int i = 0; i < nb; ++i) {
        const uint8_t *blk = x + i*block_bytes(f); const uint8_t *qb = y + i*34;
        const int8_t *q = (const int8_t *) (qb + 2);
        int isum[2] = { 0, 0 };
        for (int j = 0; j < 32; ++j) isum[j/16] += level(f, get_code(blk + 2, f.bits, j)) * q[j];
        sum += F16(qb[0], qb[1]) * (scale_value(blk[0])*(float) isum[0] + scale_value(blk[1])*(float) isum[1]);
    }
    const uint8_t *pool = x + nb*block_bytes(f); const int n_ent = nb*f.pool/4;
    for (int e = 0; e < n_ent; ++e) {
        const unsigned col = pool[4*e] | (pool[4*e + 1] << 8);
        if (col >= (unsigned) n) break;
        const uint8_t *qb = y + (col/32)*34;
        sum += F16(pool[4*e + 2], pool[4*e + 3]) * F16(qb[0], qb[1]) * (float) (int8_t) qb[2 + col%32];
    }
    *s = sum;
}

#define TD(T) \
    static void tf_##T(const void *x, float *y, int64_t k) { to_float_impl(fmt_of(T), x, y, k); } \
    static void ff_##T(const float *x, void *y, int64_t k) { from_float_impl(fmt_of(T), x, y, k); } \
    static void vd_##T(int n, float *s, size_t bs, const void *x, size_t bx, const void *y, size_t by, int nrc) { \
        (void) bs; (void) bx; (void) by; vec_dot_impl(fmt_of(T), n, s, x, y, nrc); }
TD(200) TD(201) TD(202) TD(203) TD(204) TD(205) TD(206) TD(207) TD(208)

#define TR(T, NAME, B, S) { NAME, 32, 2 + 4*(B) + (S), true, tf_##T, ff_##T, vd_##T, 8 }
static const quantease_type_traits traits[9] = {
    TR(200, "QE2_0", 2, 0), TR(201, "QE2_1", 2, 1), TR(202, "QE2_2", 2, 2),
    TR(203, "QE3_0", 3, 0), TR(204, "QE3_1", 3, 1), TR(205, "QE3_2", 3, 2),
    TR(206, "QE4_0", 4, 0), TR(207, "QE4_1", 4, 1), TR(208, "QE4_2", 4, 2),
};

const quantease_type_traits *quantease_get_type_traits(int type) {
    static int init = 0;
    if (!init) { init_table(); init = 1; } /* first call comes from ggml_init, before any kernel */
    return (type >= 200 && type <= 208) ? &traits[type - 200] : NULL;
}

size_t quantease_row_size(int type, int64_t n) {
    const quantease_type_traits *t = quantease_get_type_traits(type);
    return (t && n >= 0 && n % 32 == 0) ? (size_t) (n/32) * t->type_size : 0;
}
