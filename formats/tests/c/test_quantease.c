/* C ABI test (QE format version 2): quantise a row with from_float, decode it with to_float, and check both and
 * vec_dot against a plain C reference written from the format spec (formats/SPEC.md).
 * Built and run by formats/tests/c_abi.rs. Exit status 0 = pass. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantease.h"

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    float v;
    if (exp == 0) {
        v = ldexpf((float)man, -24); /* subnormal (or zero) */
    } else if (exp == 31) {
        v = man ? NAN : INFINITY;
    } else {
        v = ldexpf((float)(man | 0x400), (int)exp - 25);
    }
    return sign ? -v : v;
}

/* Round to nearest even f16 (finite inputs within range are all we need here). */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    float a = fabsf(f);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00);
    if (a < ldexpf(1.0f, -14)) { /* subnormal f16: multiples of 2^-24 */
        float m = nearbyintf(ldexpf(a, 24));
        return (uint16_t)(sign | (uint16_t)m);
    }
    int e;
    float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
    float m = nearbyintf(ldexpf(fr, 11)); /* 11 significant bits */
    if (m >= 2048.0f) { m /= 2.0f; e += 1; }
    return (uint16_t)(sign | (uint16_t)((e + 14) << 10) | ((uint16_t)m & 0x3ff));
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Code i of a block's code bytes, per the spec's packing (format version 3). */
static int code_at(int bits, const uint8_t *qs, int i) {
    if (bits == 4) return (i < 16) ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
    if (bits == 3) {
        /* 96-bit little-endian stream: code i = bits 3i..3i+2 */
        int bit = 3 * i, c = 0;
        for (int t = 0; t < 3; t++, bit++) c |= ((qs[bit / 8] >> (bit % 8)) & 1) << t;
        return c;
    }
    return (qs[i % 8] >> (2 * (i / 8))) & 3;
}

/* Level tables T_b of format versions 2 and 3 (SPEC.md 3.3). */
static const int8_t T2[4] = {-127, -28, 28, 127};
static const int8_t T3[8] = {-127, -75, -40, -11, 11, 40, 75, 127};
static const int8_t T4[16] = {-127, -102, -79, -60, -43, -29, -16, -5, 5, 16, 29, 43, 60, 79, 102, 127};
static int level(int bits, int c) { return bits == 2 ? T2[c] : bits == 3 ? T3[c] : T4[c]; }

/* Scale code u ("e4m4"): e = u >> 4, m = u & 15, S = (e ? (16 + m) << (e - 1) : m) * 2^-21. */
static float scale_value(uint8_t u) {
    int e = u >> 4, m = u & 15;
    return ldexpf((float)(e ? (16 + m) << (e - 1) : m), -21);
}

/* Reference decode from the spec: value = S(u[i/16]) * T[c] (+ h from the pool). */
static void ref_decode(int bits, int pool, const uint8_t *row, int n, float *y) {
    int nb = n / 32, bb = 2 + 4 * bits;
    for (int k = 0; k < nb; k++) {
        const uint8_t *b = row + k * bb;
        for (int i = 0; i < 32; i++) y[32 * k + i] = scale_value(b[i / 16]) * (float)level(bits, code_at(bits, b + 2, i));
    }
    const uint8_t *p = row + nb * bb;
    int cap = nb * pool / 4;
    for (int e = 0; e < cap; e++) {
        uint16_t col = rd16(p + 4 * e);
        if (col >= n) break;
        y[col] += f16_to_f32(rd16(p + 4 * e + 2));
    }
}

static int failures = 0;
#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            failures++;                                    \
        }                                                  \
    } while (0)

int main(void) {
    const int n = 576;
    const int nb = n / 32;
    float *x = malloc(sizeof(float) * n), *act = malloc(sizeof(float) * n);
    float *y = malloc(sizeof(float) * n), *yref = malloc(sizeof(float) * n);
    uint8_t *q8 = malloc(34 * nb);
    uint32_t s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float u = (float)(s >> 8) / 16777216.0f - 0.5f;
        x[i] = 0.05f * u * (i % 97 == 0 ? 12.0f : 1.0f); /* a few outliers */
        s = s * 1664525u + 1013904223u;
        act[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    /* block_q8_0 activations built here: d = amax/127 (f16), q = round(x/d). */
    for (int k = 0; k < nb; k++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(act[32 * k + i]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16(d);
        q8[34 * k] = (uint8_t)(dh & 0xff);
        q8[34 * k + 1] = (uint8_t)(dh >> 8);
        for (int i = 0; i < 32; i++) q8[34 * k + 2 + i] = (uint8_t)(int8_t)lroundf(act[32 * k + i] * id);
    }

    CHECK(quantease_get_type_traits(8) == NULL, "type 8 must have no QE traits");
    CHECK(quantease_get_type_traits(209) == NULL, "type 209 must have no QE traits");
    CHECK(quantease_row_size(QUANTEASE_TYPE_QE3_1, 576) == 18 * 15, "row size");
    CHECK(quantease_row_size(QUANTEASE_TYPE_QE3_1, 33) == 0, "row size of 33");

    for (int t = QUANTEASE_TYPE_FIRST; t < QUANTEASE_TYPE_FIRST + QUANTEASE_TYPE_COUNT; t++) {
        const quantease_type_traits *tr = quantease_get_type_traits(t);
        CHECK(tr != NULL, "traits of %d", t);
        if (!tr) continue;
        int bits = 2 + (t - 200) / 3, pool = (t - 200) % 3;
        char name[8];
        snprintf(name, sizeof name, "QE%d_%d", bits, pool);
        CHECK(strcmp(tr->type_name, name) == 0, "name %s vs %s", tr->type_name, name);
        CHECK(tr->blck_size == 32 && tr->type_size == (size_t)(2 + 4 * bits + pool) && tr->is_quantized,
              "%s sizes", name);
        CHECK(tr->vec_dot_type == 8, "%s vec_dot_type", name);

        size_t rs = quantease_row_size(t, n);
        uint8_t *row = malloc(rs);
        tr->from_float(x, row, n);
        tr->to_float(row, y, n);
        ref_decode(bits, pool, row, n, yref);
        double err = 0, norm = 0;
        for (int i = 0; i < n; i++) {
            CHECK(y[i] == yref[i], "%s to_float[%d] = %g, spec formula gives %g", name, i, y[i], yref[i]);
            err += (double)(x[i] - y[i]) * (x[i] - y[i]);
            norm += (double)x[i] * x[i];
        }
        double rel = sqrt(err / norm);
        /* The test row has 1 % outliers x12: pool-less formats must clip them. */
        double bound = pool ? (bits == 2 ? 0.5 : bits == 3 ? 0.25 : 0.12)
                            : (bits == 2 ? 0.8 : bits == 3 ? 0.5 : 0.3);
        CHECK(rel < bound, "%s relative error %g >= %g", name, rel, bound);

        /* vec_dot against the spec: sum_k d_q * sum_j S(u_j) * sum_{i in j} T[c_i]*q_i + sum_pool h*d_q*q. */
        float got = NAN;
        tr->vec_dot(n, &got, 0, row, 0, q8, 0, 1);
        double ref = 0, absum = 0;
        int bb = 2 + 4 * bits;
        for (int k = 0; k < nb; k++) {
            const uint8_t *b = row + k * bb;
            double dq = f16_to_f32(rd16(q8 + 34 * k));
            for (int j = 0; j < 2; j++) {
                double sj = scale_value(b[j]);
                long isum = 0, iabs = 0;
                for (int i = 16 * j; i < 16 * j + 16; i++) {
                    long v = (long)level(bits, code_at(bits, b + 2, i)) * (int8_t)q8[34 * k + 2 + i];
                    isum += v;
                    iabs += labs(v);
                }
                ref += dq * sj * (double)isum;
                absum += fabs(dq * sj) * (double)iabs;
            }
        }
        const uint8_t *p = row + nb * bb;
        for (int e = 0; e < nb * pool / 4; e++) {
            uint16_t col = rd16(p + 4 * e);
            if (col >= n) break;
            double h = f16_to_f32(rd16(p + 4 * e + 2));
            double a = f16_to_f32(rd16(q8 + 34 * (col / 32))) * (int8_t)q8[34 * (col / 32) + 2 + col % 32];
            ref += h * a;
            absum += fabs(h * a);
        }
        /* f32 accumulation in the library vs double here: (terms + 2) * 2^-23 of the sum of |terms|. */
        double tol = (8.0 * nb + nb * pool / 4 + 2) * ldexp(1.0, -23) * absum;
        CHECK(fabs(got - ref) <= tol, "%s vec_dot %.9g vs reference %.9g (tol %g)", name, got, ref, tol);

        /* Dequantised dot with the f32 activations: close (8-bit activation error only). */
        double deq = 0;
        for (int i = 0; i < n; i++) deq += (double)y[i] * act[i];
        CHECK(fabs(got - deq) <= 0.02 * absum + 1e-6, "%s vec_dot %g vs dequantised dot %g", name, got, deq);

        /* Bad arguments are reported in-band, never crash. */
        float bad = 0;
        tr->vec_dot(n, &bad, 0, row, 0, q8, 0, 2);
        CHECK(isnan(bad), "%s nrc=2 must give NaN", name);
        tr->vec_dot(40, &bad, 0, row, 0, q8, 0, 1);
        CHECK(isnan(bad), "%s n=40 must give NaN", name);
        printf("%s: row %zu bytes, rel. error %.4f, vec_dot %.6f (ref %.6f)\n", name, rs, rel, got, ref);
        free(row);
    }
    free(x); free(act); free(y); free(yref); free(q8);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all C ABI checks passed\n");
    return 0;
}
