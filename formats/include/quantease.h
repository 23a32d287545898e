/*
 * quantease.h — C ABI of the QuantEase (QE) block formats (quantease-formats).
 *
 * Link with libquantease_formats.a (static; also needs -lpthread -ldl -lm) or
 * libquantease_formats.so, both built by `cargo build --release -p quantease-formats`.
 * Format specification: formats/SPEC.md.
 *
 * QE FORMAT VERSION 3 (GGUF metadata quantease.format_version = 3; files of versions 1 and 2 are
 * refused: version 3 changed the packing of 3-bit codes to a bit stream).
 * Types QE{b}_{s}: b = code bits (2, 3, 4), s = outlier-pool bytes per 32-weight block (0, 1, 2).
 * Type id = 200 + 3*(b-2) + s (ggml's own ids are all below 64). Block size 32 weights,
 * type_size = 2 + 4*b + s bytes. A row of n weights (n a multiple of 32, n <= 65504) takes
 * n/32 * type_size bytes: n/32 blocks of (2 + 4*b) bytes, then the row's outlier pool
 * (n/32*s bytes). A block is two 8-bit scale codes u0, u1 (weights 0..15 and 16..31) and the
 * 32 packed b-bit codes c; weight value = S(u) * T_b[c] (+ the pool's h at its column), with
 * S(u) = (e ? (16 + m) << (e - 1) : m) * 2^-21, e = u >> 4, m = u & 15, and the level tables
 *   T_2 = {-127, -28, 28, 127}
 *   T_3 = {-127, -75, -40, -11, 11, 40, 75, 127}
 *   T_4 = {-127, -102, -79, -60, -43, -29, -16, -5, 5, 16, 29, 43, 60, 79, 102, 127}. Because the pool belongs to the whole row, every function below works on
 * exactly ONE row: k (to_float, from_float) and n (vec_dot) must be the row width
 * (this is how ggml calls them for weights: get_rows and mul_mat pass ne00).
 *
 * Nothing here aborts or unwinds into C. Invalid arguments (NULL pointers, k or n not a
 * positive multiple of 32 or above 65504, nrc != 1) are reported in-band: to_float writes NaN,
 * vec_dot stores NaN in *s, from_float writes nothing (k invalid) or an all-zero row (non-finite
 * input). Kernels never read outside the row, even for corrupt data; they do not validate the
 * outlier pool (use the Rust decode_row for untrusted files).
 */
#ifndef QUANTEASE_H
#define QUANTEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QUANTEASE_TYPE_QE2_0 200
#define QUANTEASE_TYPE_QE2_1 201
#define QUANTEASE_TYPE_QE2_2 202
#define QUANTEASE_TYPE_QE3_0 203
#define QUANTEASE_TYPE_QE3_1 204
#define QUANTEASE_TYPE_QE3_2 205
#define QUANTEASE_TYPE_QE4_0 206
#define QUANTEASE_TYPE_QE4_1 207
#define QUANTEASE_TYPE_QE4_2 208
#define QUANTEASE_TYPE_FIRST 200
#define QUANTEASE_TYPE_COUNT 9

/* The QE format version these kernels implement (GGUF key quantease.format_version). */
#define QUANTEASE_FORMAT_VERSION 3

/* Decode one row of k weights (x: the packed row, y: k floats). */
typedef void (*quantease_to_float_t)(const void *x, float *y, int64_t k);

/* Quantise one row of k weights (x: k floats, y: quantease_row_size(type, k) bytes) with the
 * reference round-to-nearest quantiser (outliers chosen by magnitude, no importance weights). */
typedef void (*quantease_from_float_t)(const float *x, void *y, int64_t k);

/* ggml's vec_dot shape: *s = dot(row x of n weights, y), y = n/32 ggml block_q8_0
 * (f16 d + int8 qs[32], 34 bytes each). Only nrc == 1 is supported (bs, bx, by unused). */
typedef void (*quantease_vec_dot_t)(int n, float *s, size_t bs, const void *x, size_t bx,
                                    const void *y, size_t by, int nrc);

typedef struct {
    const char *type_name;          /* "QE2_0" ... "QE4_2" */
    int64_t blck_size;              /* 32 */
    size_t type_size;               /* 2 + 4*b + s */
    bool is_quantized;              /* true */
    quantease_to_float_t to_float;
    quantease_from_float_t from_float;
    quantease_vec_dot_t vec_dot;
    int vec_dot_type;               /* 8 = GGML_TYPE_Q8_0: y is block_q8_0[n/32] */
} quantease_type_traits;

/* Traits of a QE type, or NULL unless 200 <= type <= 208. Static storage, never freed. */
const quantease_type_traits *quantease_get_type_traits(int type);

/* Bytes of a row of n weights: n/32 * type_size; 0 for an unknown type or n not a
 * non-negative multiple of 32. */
size_t quantease_row_size(int type, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* QUANTEASE_H */
