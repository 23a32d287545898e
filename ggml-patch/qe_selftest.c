// Self-test of the ggml QE patch: quantize -> validate -> mul_mat / get_rows / cpy through ggml's
// CPU backend, compared with a row-wise to_float reference; supports_op refusals; gguf round trip
// and the 65504-width limit. Works with the real libquantease_formats or the test double.
#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-backend.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail = 0;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); n_fail++; } } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { // uniform in [-1, 1)
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float) ((rng >> 40) / (double) (1ull << 24)) * 2.0f - 1.0f;
}

static void test_type(enum ggml_type type, int64_t ne0, int64_t nrows, int64_t ncols_x, int nth) {
    const size_t row_size = ggml_row_size(type, ne0);
    float * w  = malloc(sizeof(float)*ne0*nrows);
    float * wd = malloc(sizeof(float)*ne0*nrows);
    for (int64_t i = 0; i < ne0*nrows; ++i) {
        w[i] = 0.02f*frand();
        if (i % 97 == 5) w[i] *= 20.0f; // a few outliers for the pool
    }

    struct ggml_init_params ip = { 64*1024*1024, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    struct ggml_tensor * W = ggml_new_tensor_2d(ctx, type, ne0, nrows);
    const size_t written = ggml_quantize_chunk(type, w, W->data, 0, nrows, ne0, NULL);
    CHECK(written == row_size*nrows, "%s: quantize_chunk wrote %zu bytes, expected %zu", ggml_type_name(type), written, row_size*nrows);
    CHECK(ggml_quantease_validate_rows(type, W->data, ggml_nbytes(W), ne0), "%s: validate_rows rejected its own output", ggml_type_name(type));
    CHECK(ggml_validate_row_data(type, W->data, ggml_nbytes(W)), "%s: validate_row_data", ggml_type_name(type));

    const struct ggml_type_traits * tt = ggml_get_type_traits(type);
    double werr = 0, wnorm = 0;
    for (int64_t r = 0; r < nrows; ++r) {
        tt->to_float((const char *) W->data + r*row_size, wd + r*ne0, ne0);
        for (int64_t j = 0; j < ne0; ++j) { double e = wd[r*ne0 + j] - w[r*ne0 + j]; werr += e*e; wnorm += (double) w[r*ne0 + j]*w[r*ne0 + j]; }
    }
    const double wrel = sqrt(werr/wnorm);

    // corrupt copy: an outlier column out of range must be rejected
    {
        const int s = (type - GGML_TYPE_QE2_0) % 3;
        if ((ne0/32)*s >= 4) {
            char * bad = malloc(row_size);
            memcpy(bad, W->data, row_size);
            const size_t pool = (ne0/32)*(ggml_type_size(type) - s);
            bad[pool] = (char) 0xFE; bad[pool + 1] = (char) 0xFF; // column 0xFFFE >= ne0, before unused ones
            CHECK(!ggml_quantease_validate_rows(type, bad, row_size, ne0), "%s: corrupt pool accepted", ggml_type_name(type));
            free(bad);
        }
    }

    struct ggml_tensor * X = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, ncols_x);
    for (int64_t i = 0; i < ne0*ncols_x; ++i) ((float *) X->data)[i] = frand();
    struct ggml_tensor * ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 3);
    ((int32_t *) ids->data)[0] = (int32_t) nrows - 1; ((int32_t *) ids->data)[1] = 0; ((int32_t *) ids->data)[2] = (int32_t) nrows/2;

    struct ggml_tensor * Y  = ggml_mul_mat(ctx, W, X);
    struct ggml_tensor * G  = ggml_get_rows(ctx, W, ids);
    struct ggml_tensor * C  = ggml_cpy(ctx, W, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, nrows));
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, Y);
    ggml_build_forward_expand(gf, G);
    ggml_build_forward_expand(gf, C);
    ggml_graph_compute_with_ctx(ctx, gf, nth);

    // mul_mat vs the dequantized weights times f32 activations (ggml quantizes X to Q8_0)
    double err = 0, norm = 0, maxabs = 0;
    for (int64_t c = 0; c < ncols_x; ++c) {
        for (int64_t r = 0; r < nrows; ++r) {
            double ref = 0;
            for (int64_t j = 0; j < ne0; ++j) ref += (double) wd[r*ne0 + j]*((float *) X->data)[c*ne0 + j];
            const double got = ((float *) Y->data)[c*nrows + r];
            err += (got - ref)*(got - ref); norm += ref*ref; if (fabs(got - ref) > maxabs) maxabs = fabs(got - ref);
        }
    }
    const double rel = sqrt(err/norm);
    CHECK(rel < 1e-2, "%s ne0=%lld: mul_mat rel err %.3g", ggml_type_name(type), (long long) ne0, rel);

    int gbad = 0, cbad = 0;
    for (int k = 0; k < 3; ++k) {
        const int64_t r = ((int32_t *) ids->data)[k];
        gbad += memcmp((float *) G->data + k*ne0, wd + r*ne0, sizeof(float)*ne0) != 0;
    }
    cbad = memcmp(C->data, wd, sizeof(float)*ne0*nrows) != 0;
    CHECK(gbad == 0, "%s: get_rows differs from row-wise to_float", ggml_type_name(type));
    CHECK(cbad == 0, "%s: cpy QE->F32 differs from row-wise to_float", ggml_type_name(type));

    printf("%-6s ne0=%-5lld rows=%-3lld  weight rel.err %.4f  mul_mat rel.err vs f32 %.2e (max abs %.2e)  get_rows/cpy exact: %s\n",
           ggml_type_name(type), (long long) ne0, (long long) nrows, wrel, rel, maxabs, (gbad == 0 && cbad == 0) ? "yes" : "NO");

    // the CPU backend must refuse ops that would touch partial QE rows or write QE
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    struct ggml_tensor * F = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0, nrows);
    CHECK(ggml_backend_dev_supports_op(dev, Y), "%s: supports_op(mul_mat) false", ggml_type_name(type));
    CHECK(ggml_backend_dev_supports_op(dev, G), "%s: supports_op(get_rows) false", ggml_type_name(type));
    CHECK(!ggml_backend_dev_supports_op(dev, ggml_add(ctx, W, F)), "%s: supports_op(add) true", ggml_type_name(type));
    CHECK(!ggml_backend_dev_supports_op(dev, ggml_cpy(ctx, F, W)), "%s: supports_op(cpy f32->QE) true", ggml_type_name(type));
    struct ggml_tensor * half_rows = ggml_view_2d(ctx, W, ne0/2, nrows, W->nb[1], 0);
    CHECK(!ggml_backend_dev_supports_op(dev, ggml_mul_mat(ctx, half_rows, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, ne0/2, 1))),
          "%s: supports_op(mul_mat on a half-row view) true", ggml_type_name(type));

    ggml_free(ctx);
    free(w); free(wd);
}

static void test_gguf(void) {
    const char * fname = "qe_selftest.gguf";
    struct ggml_init_params ip = { 16*1024*1024, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    struct ggml_tensor * a = ggml_new_tensor_2d(ctx, GGML_TYPE_QE3_1, 576, 4);
    ggml_set_name(a, "a");
    float * src = malloc(sizeof(float)*576*4);
    for (int i = 0; i < 576*4; ++i) src[i] = frand();
    ggml_quantize_chunk(GGML_TYPE_QE3_1, src, a->data, 0, 4, 576, NULL);
    struct gguf_context * g = gguf_init_empty();
    gguf_set_val_u32(g, "quantease.format_version", GGML_QUANTEASE_FORMAT_VERSION); // formats/SPEC.md §6
    gguf_add_tensor(g, a);
    CHECK(gguf_write_to_file(g, fname, false), "gguf write");
    gguf_free(g);

    struct ggml_context * rctx = NULL;
    struct gguf_init_params gp = { false, &rctx };
    struct gguf_context * r = gguf_init_from_file(fname, gp);
    CHECK(r != NULL, "gguf read of a QE3_1 tensor failed");
    if (r) {
        struct ggml_tensor * b = ggml_get_tensor(rctx, "a");
        CHECK(b && b->type == GGML_TYPE_QE3_1 && ggml_nbytes(b) == ggml_nbytes(a) && memcmp(a->data, b->data, ggml_nbytes(a)) == 0,
              "gguf round trip of a QE3_1 tensor differs");
        gguf_free(r); ggml_free(rctx);
    }
    // width 65536 > 65504: must be rejected at load
    struct ggml_tensor * wide = ggml_new_tensor_2d(ctx, GGML_TYPE_QE2_0, 65536, 1);
    ggml_set_name(wide, "wide");
    memset(wide->data, 0, ggml_nbytes(wide));
    g = gguf_init_empty();
    gguf_add_tensor(g, wide);
    gguf_write_to_file(g, fname, false);
    gguf_free(g);
    struct gguf_init_params gp2 = { true, NULL };
    r = gguf_init_from_file(fname, gp2);
    CHECK(r == NULL, "gguf accepted a QE row of width 65536");
    if (r) gguf_free(r);
    printf("gguf: QE3_1 round trip and the 65504-width limit checked\n");
    remove(fname);
    free(src);
    ggml_free(ctx);
}

int main(void) {
    if (!ggml_quantease_enabled()) {
        printf("FAIL: ggml was built without GGML_QUANTEASE\n");
        return 1;
    }
    for (int t = GGML_TYPE_QE2_0; t <= GGML_TYPE_QE4_2; ++t) {
        test_type((enum ggml_type) t, 576, 37, 5, 2);
        test_type((enum ggml_type) t, 160, 9, 1, 1);
    }
    test_type(GGML_TYPE_QE3_1, 1536, 64, 17, 2); // batch > 1 with chunked mul_mat
    test_gguf();
    printf(n_fail ? "%d FAILED\n" : "all QE self-tests passed\n", n_fail);
    return n_fail ? 1 : 0;
}
