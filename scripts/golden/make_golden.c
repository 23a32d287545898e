// Golden-fixture generator: runs ggml's own reference quantisers/dequantisers (ggml-quants.c from
// the llama.cpp sources vendored by llama-cpp-sys-2 0.1.161) on deterministic pseudo-random rows
// and writes raw little-endian arrays. Built and run by scripts/make-golden-fixtures.sh.
//
// Usage: make_golden <output-dir>

#include "ggml.h"
#include "ggml-quants.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NROWS 8
#define NCOLS 512
#define SEED 0x5EED0001u

// ---- the four symbols ggml-quants.c needs from ggml.c --------------------------------------

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    va_list ap;
    fprintf(stderr, "ggml_abort at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

struct type_info {
    enum ggml_type type;
    const char * name;
    int64_t blck;
    size_t bytes;
};

// Block sizes and bytes from ggml.c's type_traits (only the types used here).
static const struct type_info TYPES[] = {
    {GGML_TYPE_Q4_0, "Q4_0", 32, 18},   {GGML_TYPE_Q4_1, "Q4_1", 32, 20},
    {GGML_TYPE_Q5_0, "Q5_0", 32, 22},   {GGML_TYPE_Q5_1, "Q5_1", 32, 24},
    {GGML_TYPE_Q8_0, "Q8_0", 32, 34},   {GGML_TYPE_Q2_K, "Q2_K", 256, 84},
    {GGML_TYPE_Q3_K, "Q3_K", 256, 110}, {GGML_TYPE_Q4_K, "Q4_K", 256, 144},
    {GGML_TYPE_Q5_K, "Q5_K", 256, 176}, {GGML_TYPE_Q6_K, "Q6_K", 256, 210},
    {GGML_TYPE_IQ4_NL, "IQ4_NL", 32, 18}, {GGML_TYPE_IQ4_XS, "IQ4_XS", 256, 136},
};
#define NTYPES (sizeof(TYPES) / sizeof(TYPES[0]))

static const struct type_info * info(enum ggml_type t) {
    for (size_t i = 0; i < NTYPES; ++i) {
        if (TYPES[i].type == t) return &TYPES[i];
    }
    fprintf(stderr, "make_golden: type %d not in table\n", (int) t);
    abort();
}

size_t ggml_type_size(enum ggml_type type) { return info(type)->bytes; }
const char * ggml_type_name(enum ggml_type type) { return info(type)->name; }
size_t ggml_row_size(enum ggml_type type, int64_t ne) {
    const struct type_info * ti = info(type);
    return ti->bytes * (size_t) (ne / ti->blck);
}

// ---- deterministic generator: xorshift64* plus Box-Muller -----------------------------------

static uint64_t rng_state;

static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }

static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

// Uniform in (0, 1), never exactly 0 or 1.
static double rng_uniform(void) { return ((double) (rng_next() >> 11) + 0.5) / 9007199254740992.0; }

static double rng_gauss(void) {
    double u1 = rng_uniform(), u2 = rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Fill 8 rows with different distributions.
static void make_rows(float * x, uint64_t seed) {
    rng_seed(seed);
    for (int r = 0; r < NROWS; ++r) {
        float * row = x + r * NCOLS;
        for (int j = 0; j < NCOLS; ++j) {
            double v;
            switch (r) {
            case 0: v = rng_gauss(); break;                               // standard gaussian
            case 1: v = 0.02 * rng_gauss(); break;                        // typical weight scale
            case 2: v = 0.05 * rng_gauss() / sqrt(rng_uniform()); break;  // heavy tailed (t-like)
            case 3:                                                       // gaussian + outliers
                v = 0.03 * rng_gauss();
                if (rng_uniform() < 0.02) v *= 25.0;
                break;
            case 4: v = 0.0; break;                                       // all zeros
            case 5: v = 1.0e-5 * rng_gauss(); break;                      // tiny (f16-subnormal scales)
            case 6: v = -0.3 + 1.3 * rng_uniform(); break;                // asymmetric uniform
            default: {                                                    // laplace, block-varying scale
                double scale = pow(10.0, -3.0 + 3.0 * (double) ((j / 32) % 7) / 6.0);
                double u = rng_uniform() - 0.5;
                v = -scale * (u < 0 ? -1.0 : 1.0) * log(1.0 - 2.0 * fabs(u));
                break;
            }
            }
            row[j] = (float) v;
        }
    }
}

static void make_imatrix(float * w) {
    rng_seed(SEED ^ 0xABCDEFull);
    for (int j = 0; j < NCOLS; ++j) {
        double v = exp(1.2 * rng_gauss());
        if (rng_uniform() < 0.03) v *= 50.0;  // a few very important columns
        w[j] = (float) v;
    }
}

// ---- output ------------------------------------------------------------------------------

static void write_file(const char * dir, const char * name, const char * suffix, const void * data, size_t n) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s%s", dir, name, suffix);
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_golden: cannot write %s\n", path);
        exit(1);
    }
}

typedef size_t (*quantize_fn)(const float *, void *, int64_t, int64_t, const float *);
typedef void (*dequantize_fn)(const void *, float *, int64_t);

struct entry {
    enum ggml_type type;
    quantize_fn quantize;
    dequantize_fn dequantize;
};

#define E(T, t) {GGML_TYPE_##T, quantize_##t, (dequantize_fn) dequantize_row_##t}
static const struct entry ENTRIES[] = {
    E(Q4_0, q4_0), E(Q4_1, q4_1), E(Q5_0, q5_0), E(Q5_1, q5_1), E(Q8_0, q8_0), E(Q2_K, q2_K),
    E(Q3_K, q3_K), E(Q4_K, q4_K), E(Q5_K, q5_K), E(Q6_K, q6_K), E(IQ4_NL, iq4_nl), E(IQ4_XS, iq4_xs),
};

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <output-dir>\n", argv[0]);
        return 2;
    }
    const char * dir = argv[1];
    static float src[NROWS * NCOLS], imat[NCOLS], deq[NROWS * NCOLS];
    static uint8_t q[NROWS * NCOLS * 2];

    make_imatrix(imat);
    write_file(dir, "imatrix", ".f32", imat, sizeof(imat));

    for (size_t e = 0; e < sizeof(ENTRIES) / sizeof(ENTRIES[0]); ++e) {
        const struct entry * en = &ENTRIES[e];
        const char * name = ggml_type_name(en->type);
        make_rows(src, SEED + e);
        write_file(dir, name, ".src.f32", src, sizeof(src));

        const size_t row_bytes = ggml_row_size(en->type, NCOLS);
        for (int pass = 0; pass < 2; ++pass) {
            memset(q, 0, sizeof(q));
            size_t n = en->quantize(src, q, NROWS, NCOLS, pass ? imat : NULL);
            if (n != NROWS * row_bytes) {
                fprintf(stderr, "make_golden: %s wrote %zu bytes, expected %zu\n", name, n, NROWS * row_bytes);
                return 1;
            }
            for (int r = 0; r < NROWS; ++r) {
                en->dequantize(q + r * row_bytes, deq + r * NCOLS, NCOLS);
            }
            write_file(dir, name, pass ? ".imat.q" : ".ref.q", q, n);
            write_file(dir, name, pass ? ".imat.deq.f32" : ".ref.deq.f32", deq, sizeof(deq));
        }
    }
    return 0;
}
