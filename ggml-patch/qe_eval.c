// qe_eval: perplexity of a GGUF model with the (QE-patched) llama.cpp, computed the way
// llama-perplexity and `quantease-gguf perplexity` compute it, plus a comparison of the logits
// with a reference model evaluated in the same process (e.g. the F16 dequantisation of the same
// file): mean KLD(ref||model), same-top-token rate, max |logit difference|.
//
// The llama-cpp-sys-2 crate does not vendor tools/perplexity, hence this small program on llama.h.
//
// usage: qe_eval -m MODEL.gguf -f TEXT [--ref REF.gguf] [-c 512] [--chunks N] [-t THREADS]
//
// Method: the text is tokenised once (with BOS if the model adds one) and cut into n_ctx chunks;
// each chunk is decoded from an empty KV cache with its first token replaced by BOS (if the model
// adds BOS); the logits at positions n_ctx/2 .. n_ctx-2 predict the next token and are scored.
#include "llama.h"
#include "ggml.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void quiet_log(enum ggml_log_level level, const char * text, void * ud) {
    (void) ud;
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN || getenv("QE_EVAL_VERBOSE")) {
        fputs(text, stderr);
    }
}

static char * read_file(const char * path, size_t * len) {
    FILE * f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "qe_eval: cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    char * buf = malloc((size_t) n + 1);
    if (fread(buf, 1, (size_t) n, f) != (size_t) n) { fprintf(stderr, "qe_eval: cannot read %s\n", path); exit(1); }
    buf[n] = 0; fclose(f); *len = (size_t) n;
    return buf;
}

typedef struct {
    struct llama_model   * model;
    struct llama_context * ctx;
    const struct llama_vocab * vocab;
} runner;

static runner open_model(const char * path, int n_ctx, int n_batch, int threads) {
    runner r;
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    r.model = llama_model_load_from_file(path, mp);
    if (!r.model) { fprintf(stderr, "qe_eval: llama.cpp could not load %s\n", path); exit(1); }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n_ctx; cp.n_batch = (uint32_t) n_batch; cp.n_ubatch = (uint32_t) n_batch;
    cp.n_seq_max = 1; cp.n_threads = threads; cp.n_threads_batch = threads; cp.no_perf = true;
    r.ctx = llama_init_from_model(r.model, cp);
    if (!r.ctx) { fprintf(stderr, "qe_eval: cannot create a context for %s\n", path); exit(1); }
    r.vocab = llama_model_get_vocab(r.model);
    return r;
}

static int32_t * tokenize(const runner * r, const char * text, size_t len, int32_t * n_out) {
    int32_t cap = (int32_t) len + 16;
    int32_t * toks = malloc(sizeof(int32_t) * (size_t) cap);
    int32_t n = llama_tokenize(r->vocab, text, (int32_t) len, toks, cap, true, false);
    if (n < 0) { cap = -n; toks = realloc(toks, sizeof(int32_t) * (size_t) cap); n = llama_tokenize(r->vocab, text, (int32_t) len, toks, cap, true, false); }
    *n_out = n;
    return toks;
}

// decodes tokens[0..n_ctx) of one chunk in sub-batches; logits are requested for positions >= first
static void decode_chunk(runner * r, const int32_t * tokens, int n_ctx, int n_batch, int first) {
    llama_memory_clear(llama_get_memory(r->ctx), true);
    struct llama_batch b = llama_batch_init(n_batch, 0, 1);
    for (int b0 = 0; b0 < n_ctx; b0 += n_batch) {
        const int b1 = b0 + n_batch < n_ctx ? b0 + n_batch : n_ctx;
        b.n_tokens = 0;
        for (int i = b0; i < b1; ++i) {
            b.token[b.n_tokens] = tokens[i]; b.pos[b.n_tokens] = i;
            b.n_seq_id[b.n_tokens] = 1; b.seq_id[b.n_tokens][0] = 0;
            b.logits[b.n_tokens] = i >= first;
            b.n_tokens++;
        }
        if (llama_decode(r->ctx, b) != 0) { fprintf(stderr, "qe_eval: llama_decode failed\n"); exit(1); }
        if (b1 < n_ctx) { fprintf(stderr, "qe_eval: n_ctx > n_batch is not supported\n"); exit(1); }
    }
    llama_batch_free(b);
}

static double log_softmax_at(const float * logits, int n_vocab, int tok, int * argmax) {
    float mx = logits[0]; int am = 0;
    for (int i = 1; i < n_vocab; ++i) if (logits[i] > mx) { mx = logits[i]; am = i; }
    double s = 0; for (int i = 0; i < n_vocab; ++i) s += exp((double) logits[i] - mx);
    *argmax = am;
    return (double) logits[tok] - mx - log(s);
}

int main(int argc, char ** argv) {
    const char * model_path = NULL, * text_path = NULL, * ref_path = NULL;
    int n_ctx = 512, n_chunks = -1, threads = 2;
    for (int i = 1; i < argc; ++i) {
        if      (!strcmp(argv[i], "-m") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "-f") && i + 1 < argc) text_path  = argv[++i];
        else if (!strcmp(argv[i], "--ref") && i + 1 < argc) ref_path = argv[++i];
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) n_ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunks") && i + 1 < argc) n_chunks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else { fprintf(stderr, "usage: %s -m MODEL.gguf -f TEXT [--ref REF.gguf] [-c 512] [--chunks N] [-t THREADS]\n", argv[0]); return 2; }
    }
    if (!model_path || !text_path || n_ctx < 4 || n_ctx > 512) {
        fprintf(stderr, "usage: %s -m MODEL.gguf -f TEXT [--ref REF.gguf] [-c N<=512] [--chunks N] [-t THREADS]\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    printf("qe_eval: ggml QuantEase types %s\n", ggml_quantease_enabled() ? "enabled" : "NOT enabled");

    const int n_batch = n_ctx;
    runner m = open_model(model_path, n_ctx, n_batch, threads);
    runner ref = { 0 };
    if (ref_path) ref = open_model(ref_path, n_ctx, n_batch, threads);

    size_t len; char * text = read_file(text_path, &len);
    int32_t n_tok; int32_t * toks = tokenize(&m, text, len, &n_tok);
    if (ref_path) {
        int32_t n_rtok; int32_t * rtoks = tokenize(&ref, text, len, &n_rtok);
        if (n_rtok != n_tok || memcmp(toks, rtoks, sizeof(int32_t) * (size_t) n_tok) != 0) {
            fprintf(stderr, "qe_eval: model and reference tokenise the text differently\n"); return 1;
        }
        free(rtoks);
    }
    int max_chunks = n_tok / n_ctx;
    if (n_chunks < 0 || n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks < 1) { fprintf(stderr, "qe_eval: the text has %d tokens, fewer than n_ctx %d\n", n_tok, n_ctx); return 1; }

    const int n_vocab = llama_vocab_n_tokens(m.vocab);
    const int first = n_ctx / 2;
    const int add_bos = llama_vocab_get_add_bos(m.vocab);
    printf("qe_eval: %s\n  %d tokens, %d chunks of %d, scoring positions %d..%d, %d threads%s%s\n",
           model_path, n_tok, n_chunks, n_ctx, first, n_ctx - 2, threads, ref_path ? ", reference " : "", ref_path ? ref_path : "");

    double nll = 0, nll_ref = 0, kld = 0, checksum = 0, max_diff = 0;
    long n_scored = 0, same_top = 0;
    int32_t * chunk = malloc(sizeof(int32_t) * (size_t) n_ctx);
    double * pm = malloc(sizeof(double) * (size_t) n_vocab);
    const clock_t t0 = clock();
    struct timespec w0, w1; clock_gettime(CLOCK_MONOTONIC, &w0);
    for (int c = 0; c < n_chunks; ++c) {
        memcpy(chunk, toks + (size_t) c * n_ctx, sizeof(int32_t) * (size_t) n_ctx);
        if (add_bos) chunk[0] = llama_vocab_bos(m.vocab);
        decode_chunk(&m, chunk, n_ctx, n_batch, first);
        if (ref_path) decode_chunk(&ref, chunk, n_ctx, n_batch, first);
        double chunk_nll = 0;
        for (int i = first; i < n_ctx - 1; ++i) {
            const float * lg = llama_get_logits_ith(m.ctx, i);
            const int tgt = toks[(size_t) c * n_ctx + i + 1];
            int am; const double lp = log_softmax_at(lg, n_vocab, tgt, &am);
            chunk_nll -= lp;
            for (int v = 0; v < n_vocab; ++v) checksum += lg[v];
            if (ref_path) {
                const float * lr = llama_get_logits_ith(ref.ctx, i);
                int amr; nll_ref -= log_softmax_at(lr, n_vocab, tgt, &amr);
                same_top += am == amr;
                // KLD(ref || model) over the full vocabulary in double
                float mx = lg[0], mr = lr[0];
                for (int v = 1; v < n_vocab; ++v) { if (lg[v] > mx) mx = lg[v]; if (lr[v] > mr) mr = lr[v]; }
                double sm = 0, sr = 0;
                for (int v = 0; v < n_vocab; ++v) { sm += exp((double) lg[v] - mx); sr += exp((double) lr[v] - mr); }
                const double lsm = log(sm), lsr = log(sr);
                double k = 0;
                for (int v = 0; v < n_vocab; ++v) {
                    const double lpr = (double) lr[v] - mr - lsr, lpm = (double) lg[v] - mx - lsm;
                    k += exp(lpr) * (lpr - lpm);
                    const double d = fabs((double) lg[v] - lr[v]); if (d > max_diff) max_diff = d;
                }
                kld += k;
            }
            n_scored++;
        }
        nll += chunk_nll;
        printf("[%d] chunk ppl %.4f  running ppl %.4f\n", c + 1, exp(chunk_nll / (n_ctx - 1 - first)), exp(nll / n_scored));
        fflush(stdout);
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    const double secs = (double) (w1.tv_sec - w0.tv_sec) + 1e-9 * (double) (w1.tv_nsec - w0.tv_nsec);
    (void) t0;
    printf("PPL = %.4f over %ld scored tokens (%d chunks)\n", exp(nll / n_scored), n_scored, n_chunks);
    printf("logits checksum (sum of scored logits) = %.6e\n", checksum);
    if (ref_path) {
        printf("reference PPL = %.4f\n", exp(nll_ref / n_scored));
        printf("mean KLD(ref||model) = %.6f\n", kld / n_scored);
        printf("same top token = %.3f %%\n", 100.0 * (double) same_top / (double) n_scored);
        printf("max |logit difference| = %.4f\n", max_diff);
    }
    printf("time %.1f s\n", secs);

    free(chunk); free(pm); free(toks); free(text);
    llama_free(m.ctx); llama_model_free(m.model);
    if (ref_path) { llama_free(ref.ctx); llama_model_free(ref.model); }
    llama_backend_free();
    return 0;
}
