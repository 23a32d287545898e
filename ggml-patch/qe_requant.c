// qe_requant: runtime-side helper for tests. Re-quantises the 2-D weights of a GGUF to a QE type
// through ggml's own traits (i.e. through the QE C ABI the patched ggml links: the library's
// from_float = its RTN with outliers) and/or writes the F16 dequantisation of a QE file through
// the same library's to_float. The real producer of QE files is `quantease-gguf convert`; this
// exists so the patch can be tested end to end with whatever library it is linked with.
//
//   qe_requant quant   IN.gguf OUT.gguf qe4_1    (2-D *.weight tensors with ne0 % 32 == 0, not norms)
//   qe_requant dequant IN.gguf OUT.gguf          (QE tensors -> F16, others copied)
#include "ggml.h"
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum ggml_type parse_type(const char * s) {
    for (int t = GGML_TYPE_QE2_0; t <= GGML_TYPE_QE4_2; ++t) {
        if (strcmp(ggml_type_name((enum ggml_type) t), s) == 0) return (enum ggml_type) t;
    }
    fprintf(stderr, "qe_requant: unknown QE type %s (qe2_0 .. qe4_2)\n", s);
    exit(2);
}

static void to_f32_rows(const struct ggml_tensor * t, float * out) {
    const int64_t ne0 = t->ne[0], nr = ggml_nrows(t);
    const size_t rs = ggml_row_size(t->type, ne0);
    if (t->type == GGML_TYPE_F32) { memcpy(out, t->data, sizeof(float) * ne0 * nr); return; }
    const struct ggml_type_traits * tt = ggml_get_type_traits(t->type);
    if (!tt->to_float) { fprintf(stderr, "qe_requant: no to_float for %s\n", ggml_type_name(t->type)); exit(1); }
    for (int64_t r = 0; r < nr; ++r) tt->to_float((const char *) t->data + r * rs, out + r * ne0, ne0);
}

int main(int argc, char ** argv) {
    if (argc < 4 || (strcmp(argv[1], "quant") && strcmp(argv[1], "dequant")) || (!strcmp(argv[1], "quant") && argc < 5)) {
        fprintf(stderr, "usage: qe_requant quant IN OUT qeB_S | qe_requant dequant IN OUT\n");
        return 2;
    }
    const int quant = !strcmp(argv[1], "quant");
    const enum ggml_type qt = quant ? parse_type(argv[4]) : GGML_TYPE_F16;
    if (!ggml_quantease_enabled()) { fprintf(stderr, "qe_requant: ggml built without GGML_QUANTEASE\n"); return 1; }

    struct ggml_context * in_ctx = NULL;
    struct gguf_init_params ip = { false, &in_ctx };
    struct gguf_context * in = gguf_init_from_file(argv[2], ip);
    if (!in) { fprintf(stderr, "qe_requant: cannot read %s\n", argv[2]); return 1; }

    struct gguf_context * out = gguf_init_empty();
    gguf_set_kv(out, in);
    if (quant) {
        gguf_set_val_u32(out, "quantease.format_version", GGML_QUANTEASE_FORMAT_VERSION); // formats/SPEC.md §6
        gguf_set_val_u32(out, "general.file_type", 0); // no llama ftype for QE mixes (contract: 0)
    } else {
        gguf_remove_key(out, "quantease.format_version");
        gguf_set_val_u32(out, "general.file_type", 1); // MOSTLY_F16
    }

    const int64_t n_t = gguf_get_n_tensors(in);
    size_t total = 0;
    for (int64_t i = 0; i < n_t; ++i) { const struct ggml_tensor * t = ggml_get_tensor(in_ctx, gguf_get_tensor_name(in, i)); total += ggml_nbytes(t) + ggml_nelements(t) * sizeof(float) + ggml_tensor_overhead() + 64; }
    struct ggml_init_params op = { total, NULL, false };
    struct ggml_context * out_ctx = ggml_init(op);

    int n_conv = 0;
    for (int64_t i = 0; i < n_t; ++i) {
        const char * name = gguf_get_tensor_name(in, i);
        const struct ggml_tensor * t = ggml_get_tensor(in_ctx, name);
        const size_t nl = strlen(name);
        int conv;
        if (quant) {
            conv = ggml_n_dims(t) == 2 && t->ne[0] % 32 == 0 && nl > 7 && !strcmp(name + nl - 7, ".weight") &&
                   !strstr(name, "norm") && (ggml_is_quantized(t->type) || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_F32);
        } else {
            conv = GGML_TYPE_IS_QUANTEASE(t->type);
        }
        struct ggml_tensor * o;
        if (!conv) {
            o = ggml_dup_tensor(out_ctx, t);
            memcpy(o->data, t->data, ggml_nbytes(t));
        } else {
            const int64_t ne0 = t->ne[0], nr = ggml_nrows(t);
            float * f = malloc(sizeof(float) * ne0 * nr);
            to_f32_rows(t, f);
            o = ggml_new_tensor(out_ctx, qt, ggml_n_dims(t), t->ne);
            if (quant) {
                ggml_quantize_chunk(qt, f, o->data, 0, nr, ne0, NULL);
            } else {
                ggml_fp32_to_fp16_row(f, (ggml_fp16_t *) o->data, ne0 * nr);
            }
            free(f);
            n_conv++;
        }
        ggml_set_name(o, name);
        gguf_add_tensor(out, o);
    }
    if (!gguf_write_to_file(out, argv[3], false)) { fprintf(stderr, "qe_requant: cannot write %s\n", argv[3]); return 1; }
    printf("qe_requant: %s -> %s: %d tensors %s %s\n", argv[2], argv[3], n_conv, quant ? "quantised to" : "dequantised to",
           ggml_type_name(qt));
    gguf_free(in); gguf_free(out); ggml_free(in_ctx); ggml_free(out_ctx);
    return 0;
}
