/* TEST DOUBLE ONLY - NOT the real quantease.h.
 * A stand-in written from the QE contract (/work/cache/notes/qe-contract.md, "C ABI [fixed]") so the
 * ggml patch could be built and tested before formats/include/quantease.h existed. The shipped
 * header and library are formats/include/quantease.h and libquantease_formats.a. */
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

typedef void (*quantease_to_float_t)(const void *x, float *y, int64_t k);
typedef void (*quantease_from_float_t)(const float *x, void *y, int64_t k);
typedef void (*quantease_vec_dot_t)(int n, float *s, size_t bs, const void *x, size_t bx,
                                    const void *y, size_t by, int nrc);

typedef struct {
    const char *type_name; int64_t blck_size; size_t type_size; bool is_quantized;
    quantease_to_float_t to_float; quantease_from_float_t from_float;
    quantease_vec_dot_t vec_dot; int vec_dot_type;
} quantease_type_traits;

const quantease_type_traits *quantease_get_type_traits(int type);
size_t quantease_row_size(int type, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
