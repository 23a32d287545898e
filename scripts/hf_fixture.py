#!/usr/bin/env python3
"""Test fixtures for Hugging Face safetensors input.

  hf_fixture.py make GGUF OUT_DIR [--layers N] [--shards K] [--dtypes f32,f16,bf16]
      Turn a llama.cpp GGUF (any type the gguf package can dequantise) into a Hugging Face model
      directory: sharded safetensors (written by hand: 8-byte header length, JSON, data) with an
      index, config.json, tokenizer.json (vocabulary, merges, added tokens and the pre-tokenizer
      of the GGUF's `tokenizer.ggml.pre`), tokenizer_config.json. llama-arch Q/K rows are put back
      into Hugging Face's rotary layout (the inverse of the permutation llama.cpp's converter
      applies), so a converter that re-applies it gives back the original. With --layers N only
      the first N blocks are kept (the vocabulary is kept whole). A sidecar fixture_dtypes.json
      records the dtype each GGUF tensor was stored as, for `compare`.

      A SentencePiece vocabulary (`tokenizer.ggml.model = llama`) is written as llama.cpp's
      converter reads it: tokenizer.model (a sentencepiece ModelProto written by hand from the
      GGUF's tokens, scores and types: BPE, byte_fallback) and tokenizer.json in the byte_fallback
      BPE form transformers makes of it (vocabulary in id order, merges from the pieces ordered by
      score, normalizer Prepend/Replace or with --metaspace a Metaspace pre-tokenizer);
      --no-tokenizer-model leaves tokenizer.model out.

  hf_fixture.py derive GGUF OUT.gguf [--layers N] [--vocab VOCAB.gguf]
      A GGUF with GGUF's first N blocks (block_count N) and, with --vocab, the tokenizer of
      VOCAB.gguf (e.g. llama.cpp's vocab-only ggml-vocab-llama-spm.gguf) in place of its own, the
      embedding and output rows cut to the new vocabulary size. Tensors are copied as stored. This
      is the reference a truncated or re-vocabularied fixture is compared with.

  hf_fixture.py compare ORIGINAL.gguf CONVERTED.gguf HF_DIR
      Check that CONVERTED (made from HF_DIR) has the hyper-parameters and tokenizer metadata of
      ORIGINAL (block_count as truncated) and tensors equal to ORIGINAL's dequantised values within
      the rounding of the fixture dtype and of CONVERTED's type. Exits 1 on any mismatch.

Needs the `gguf` Python package and numpy.
"""

import argparse
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import quants

PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ]},
    "qwen2": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]},
}

HF_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def layer_of(name):
    return int(name.split(".")[1]) if name.startswith("blk.") else None


def dequant(t):
    a = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    return a.reshape([int(d) for d in reversed(t.shape.tolist())])


def hf_rotary(w, heads):
    """Inverse of llama.cpp's permutation: GGUF row h*d + 2i + j holds HF row h*d + j*d/2 + i."""
    d = w.shape[0] // heads
    return w.reshape(heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    bits = a.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
    return rounded.tobytes()


def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_bpe_tokenizer(r, out, args, tokens, ttypes, merges, pre):
    """Byte-level BPE: tokenizer.json with vocabulary, merges, added tokens, pre-tokenizer."""
    # NORMAL tokens in the vocabulary, CONTROL / USER_DEFINED ones also as added
    # tokens; UNUSED [PADn] placeholders are left out (the converter recreates them).
    vocab, added = {}, []
    for i, (tok, tt) in enumerate(zip(tokens, ttypes)):
        if tt == 5:
            continue
        vocab[tok] = i
        if tt in (3, 4):
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": tt == 3})
    merges_out = [m.split(" ", 1) for m in merges] if args.merge_pairs else merges
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                 "normalizer": None, "pre_tokenizer": PRE_TOKENIZERS[pre], "post_processor": None,
                 "decoder": {"type": "ByteLevel"},
                 "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                           "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                           "vocab": vocab, "merges": merges_out}}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    tcfg = {"add_bos_token": field(r, "tokenizer.ggml.add_bos_token", False),
            "chat_template": field(r, "tokenizer.chat_template")}
    for typ, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("pad", "padding_token_id")]:
        tid = field(r, f"tokenizer.ggml.{key}")
        # Leave bos to config.json's bos_token_id when asked, as Qwen's files do.
        if tid is not None and not (typ == "bos" and args.bos_from_config):
            tcfg[f"{typ}_token"] = tokens[tid]
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, ensure_ascii=False))


SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED, SPM_UNUSED, SPM_BYTE = 1, 2, 3, 4, 5, 6


def pb_varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, wire, payload):
    key = pb_varint((num << 3) | wire)
    if wire == 2:
        return key + pb_varint(len(payload)) + payload
    return key + payload


def spm_model_proto(tokens, scores, types, unk, bos, eos, add_dummy_prefix):
    """A sentencepiece ModelProto (BPE, byte_fallback) with these pieces."""
    out = bytearray()
    for t, sc, ty in zip(tokens, scores, types):
        piece = pb_field(1, 2, t.encode()) + pb_field(2, 5, struct.pack("<f", sc)) + pb_field(3, 0, pb_varint(ty))
        out += pb_field(1, 2, piece)
    trainer = (pb_field(3, 0, pb_varint(2)) + pb_field(4, 0, pb_varint(len(tokens)))
               + pb_field(35, 0, pb_varint(1)))
    for num, tid in [(40, unk), (41, bos), (42, eos)]:
        trainer += pb_field(num, 0, pb_varint(-1 if tid is None else tid))
    out += pb_field(2, 2, trainer)
    normalizer = (pb_field(1, 2, b"identity") + pb_field(3, 0, pb_varint(int(add_dummy_prefix)))
                  + pb_field(4, 0, pb_varint(0)) + pb_field(5, 0, pb_varint(1)))
    out += pb_field(3, 2, normalizer)
    return bytes(out)


def spm_merges(tokens, scores, types):
    """Merges as transformers derives them from a sentencepiece BPE model: every split of a piece
    into two pieces of the vocabulary, ordered by the piece's score (highest first), splits of one
    piece by the ids of their halves."""
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == SPM_NORMAL}
    merges = []
    for piece, pid in vocab.items():
        local = []
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in vocab and b in vocab:
                local.append((vocab[a], vocab[b], a, b))
        local.sort()
        merges.extend((-scores[pid], pid, a, b) for _, _, a, b in local)
    merges.sort(key=lambda m: (m[0], m[1]))
    return [[a, b] for _, _, a, b in merges]


def write_spm_tokenizer(r, out, args):
    tokens = field(r, "tokenizer.ggml.tokens")
    scores = [float(x) for x in field(r, "tokenizer.ggml.scores")]
    types = field(r, "tokenizer.ggml.token_type")
    ids = {k: field(r, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    add_bos = field(r, "tokenizer.ggml.add_bos_token", True)
    add_eos = field(r, "tokenizer.ggml.add_eos_token", False)
    add_prefix = field(r, "tokenizer.ggml.add_space_prefix", True)
    if not args.no_tokenizer_model:
        proto = spm_model_proto(tokens, scores, types, ids["unknown"], ids["bos"], ids["eos"], add_prefix)
        (out / "tokenizer.model").write_bytes(proto)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": tt != SPM_USER_DEFINED}
             for i, (t, tt) in enumerate(zip(tokens, types)) if tt in (SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED)]
    if args.metaspace:
        normalizer = None
        pre = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first" if add_prefix else "never",
               "split": False}
    else:
        normalizer = {"type": "Sequence", "normalizers": ([{"type": "Prepend", "prepend": "\u2581"}] if add_prefix else [])
                      + [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre = None
    post = None
    if add_bos and ids["bos"] is not None:
        b = tokens[ids["bos"]]
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b: {"id": b, "ids": [ids["bos"]], "tokens": [b]}}}
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                 "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post,
                 "decoder": {"type": "Sequence", "decoders": [
                     {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                     {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
                 "model": {"type": "BPE", "dropout": None,
                           "unk_token": tokens[ids["unknown"]] if ids["unknown"] is not None else None,
                           "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                           "byte_fallback": True, "ignore_merges": False,
                           "vocab": {t: i for i, t in enumerate(tokens)},
                           "merges": spm_merges(tokens, scores, types)}}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    tcfg = {"add_bos_token": add_bos, "add_eos_token": add_eos, "legacy": False,
            "chat_template": field(r, "tokenizer.chat_template")}
    for typ, key in [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")]:
        if ids[key] is not None:
            tcfg[f"{typ}_token"] = tokens[ids[key]]
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, ensure_ascii=False))


def copy_field(w, r, key, value=None):
    f = r.fields[key]
    vtype = f.types[0]
    if value is None:
        value = field(r, key)
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(key, value, vtype, f.types[1] if len(f.types) > 1 else None)
    else:
        w.add_key_value(key, value, vtype)


def derive(args):
    r = gguf.GGUFReader(args.gguf)
    arch = field(r, "general.architecture")
    n_layer = field(r, f"{arch}.block_count")
    if args.layers is not None:
        n_layer = min(n_layer, args.layers)
    v = gguf.GGUFReader(args.vocab) if args.vocab else r
    n_vocab = len(field(v, "tokenizer.ggml.tokens"))
    w = gguf.GGUFWriter(args.out, arch)
    for key in r.fields:
        if key.startswith("GGUF.") or key == "general.architecture" or (args.vocab and key.startswith("tokenizer.")):
            continue
        if key == f"{arch}.block_count":
            copy_field(w, r, key, n_layer)
        elif key == f"{arch}.vocab_size":
            copy_field(w, r, key, n_vocab)
        else:
            copy_field(w, r, key)
    if args.vocab:
        for key in v.fields:
            if key.startswith("tokenizer."):
                copy_field(w, v, key)
    for t in r.tensors:
        l = layer_of(t.name)
        if l is not None and l >= n_layer:
            continue
        data = t.data
        if t.name in ("token_embd.weight", "output.weight"):
            if data.shape[0] < n_vocab:
                sys.exit(f"{args.gguf}: {t.name} has {data.shape[0]} rows, fewer than the {n_vocab} tokens")
            data = data[:n_vocab]
        w.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{args.out}: {n_layer} layers, {n_vocab} tokens")


def make(args):
    r = gguf.GGUFReader(args.gguf)
    arch = field(r, "general.architecture")
    if arch not in HF_CLASS:
        sys.exit(f"{args.gguf}: architecture {arch} not handled by this fixture generator")
    a = lambda k, d=None: field(r, f"{arch}.{k}", d)
    n_layer = a("block_count") if args.layers is None else min(args.layers, a("block_count"))
    n_head, n_head_kv = a("attention.head_count"), a("attention.head_count_kv", a("attention.head_count"))
    tokens = field(r, "tokenizer.ggml.tokens")
    ttypes = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    pre = field(r, "tokenizer.ggml.pre")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    names = {t.name: t for t in r.tensors}
    config = {
        "architectures": [HF_CLASS[arch]], "model_type": arch,
        "hidden_size": a("embedding_length"), "intermediate_size": a("feed_forward_length"),
        "num_hidden_layers": n_layer, "num_attention_heads": n_head, "num_key_value_heads": n_head_kv,
        "max_position_embeddings": a("context_length"), "rms_norm_eps": a("attention.layer_norm_rms_epsilon"),
        "rope_theta": a("rope.freq_base"), "vocab_size": a("vocab_size", len(tokens)),
        "tie_word_embeddings": "output.weight" not in names, "torch_dtype": "float32",
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"), "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))

    if field(r, "tokenizer.ggml.model") == "llama":
        write_spm_tokenizer(r, out, args)
    else:
        write_bpe_tokenizer(r, out, args, tokens, ttypes, merges, pre)

    # Tensors, in HF names and layout.
    items = []
    for t in r.tensors:
        l = layer_of(t.name)
        if l is not None and l >= n_layer:
            continue
        if l is None:
            hf = TOP_NAMES[t.name]
        else:
            hf = f"model.layers.{l}." + LAYER_NAMES[t.name.split(".", 2)[2]]
        items.append((t.name, hf))
    shard_of = {}
    dtypes = [d.upper() for d in args.dtypes.split(",")]
    # Balance shards by element count, keeping GGUF order.
    sizes = [int(np.prod(names[g].shape)) for g, _ in items]
    total, acc, k = sum(sizes), 0, 0
    for (g, hf), n in zip(items, sizes):
        shard_of[g] = min(k, args.shards - 1)
        acc += n
        if acc >= total * (k + 1) / args.shards:
            k += 1
    weight_map, stored = {}, {}
    for s in range(args.shards):
        fname = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
        dt = dtypes[s % len(dtypes)]
        tensors = []
        for g, hf in items:
            if shard_of[g] != s:
                continue
            w = dequant(names[g])
            if arch == "llama" and g.split(".")[-2] in ("attn_q", "attn_k"):
                w = hf_rotary(w, n_head if ".attn_q." in g else n_head_kv)
            tensors.append((hf, dt, w.shape, encode(w, dt)))
            weight_map[hf] = fname
            stored[g] = dt
        write_safetensors(out / fname, tensors)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    (out / "fixture_dtypes.json").write_text(json.dumps(stored))
    print(f"{out}: {len(items)} tensors in {args.shards} shards ({','.join(dtypes)}), {n_layer} layers, {len(tokens)} tokens")


def compare(args):
    o, c = gguf.GGUFReader(args.original), gguf.GGUFReader(args.converted)
    stored = json.loads((Path(args.hf_dir) / "fixture_dtypes.json").read_text())
    n_layer = json.loads((Path(args.hf_dir) / "config.json").read_text())["num_hidden_layers"]
    arch = field(o, "general.architecture")
    errors = []

    def check(cond, msg):
        if not cond:
            errors.append(msg)

    check(field(c, "general.architecture") == arch, "general.architecture")
    # Every hyper-parameter and tokenizer key of the original must be in the output, equal.
    skip = {"general.file_type", "general.quantization_version",
            # llama.cpp forces add_space_prefix off for BPE vocabularies; the HF files have no such field.
            "tokenizer.ggml.add_space_prefix"}
    if field(o, "tokenizer.ggml.model") == "llama" and not (Path(args.hf_dir) / "tokenizer.model").exists():
        # From tokenizer.json alone the scores are derived from merge ranks, not the originals;
        # llama.cpp's tokenisation of the two files is compared instead.
        skip.add("tokenizer.ggml.scores")
    keys = [k for k in o.fields if (k.startswith(arch + ".") or k.startswith("tokenizer.")) and k not in skip]
    for k in keys:
        want = n_layer if k == f"{arch}.block_count" else field(o, k)
        got = field(c, k)
        if isinstance(want, float):
            check(got is not None and np.float32(got) == np.float32(want), f"{k}: {got} != {want}")
        else:
            check(got == want, f"{k}: {str(got)[:80]} != {str(want)[:80]}")
    extra = [k for k in c.fields if (k.startswith(arch + ".") or k.startswith("tokenizer.")) and k not in o.fields]
    check(not extra, f"keys not in the original: {extra}")

    want_t = {t.name: t for t in o.tensors if layer_of(t.name) is None or layer_of(t.name) < n_layer}
    got_t = {t.name: t for t in c.tensors}
    check(set(want_t) == set(got_t), f"tensor sets differ: missing {sorted(set(want_t) - set(got_t))[:5]}, extra {sorted(set(got_t) - set(want_t))[:5]}")
    # Relative rounding of each storage step (fixture dtype, then output type); absolute floor for
    # F16 subnormals.
    eps = {"F32": 0.0, "F16": 2.0 ** -11, "BF16": 2.0 ** -8}
    worst = 0.0
    for name in sorted(set(want_t) & set(got_t)):
        wt, gt = want_t[name], got_t[name]
        check(wt.shape.tolist() == gt.shape.tolist(), f"{name}: shape {gt.shape.tolist()} != {wt.shape.tolist()}")
        if wt.shape.tolist() != gt.shape.tolist():
            continue
        w, g = dequant(wt), dequant(gt)
        rel = eps[stored[name]] + eps.get(gt.tensor_type.name, 1.0)
        tol = rel * np.abs(w) + 2.0 ** -24
        bad = np.abs(w - g) > tol * 1.0001
        if bad.any():
            i = int(np.argmax(bad.ravel()))
            errors.append(f"{name}: {int(bad.sum())} values off, e.g. [{i}] {g.ravel()[i]} vs {w.ravel()[i]}")
        worst = max(worst, float(np.max(np.abs(w - g) / (np.abs(w) + 2.0 ** -24))))
    print(f"compared {len(keys)} metadata keys and {len(got_t)} tensors; worst relative difference {worst:.3g}")
    for e in errors:
        print("MISMATCH", e)
    sys.exit(1 if errors else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("gguf")
    m.add_argument("out")
    m.add_argument("--layers", type=int)
    m.add_argument("--shards", type=int, default=2)
    m.add_argument("--dtypes", default="f32,f16")
    m.add_argument("--merge-pairs", action="store_true", help="write merges as [a, b] pairs (transformers >= 4.45)")
    m.add_argument("--bos-from-config", action="store_true", help="leave bos_token out of tokenizer_config.json")
    m.add_argument("--no-tokenizer-model", action="store_true", help="SentencePiece: leave tokenizer.model out")
    m.add_argument("--metaspace", action="store_true", help="SentencePiece: Metaspace pre-tokenizer instead of a normalizer")
    d = sub.add_parser("derive")
    d.add_argument("gguf")
    d.add_argument("out")
    d.add_argument("--layers", type=int)
    d.add_argument("--vocab")
    c = sub.add_parser("compare")
    c.add_argument("original")
    c.add_argument("converted")
    c.add_argument("hf_dir")
    args = p.parse_args()
    {"make": make, "derive": derive, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
