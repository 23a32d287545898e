#!/usr/bin/env python3
"""Write results/smollm2/qe-sweep.md (and .csv): the QE rows of the quality harness with their
layer objectives, next to the llama.cpp Q2_K / Q4_0 references (called by bench-qe.sh).

usage: qe_sweep_table.py WORK_DIR RESULTS_DIR CHUNKS
"""
import csv
import json
import os
import sys


def main():
    work, results, chunks = sys.argv[1:4]
    steps = {}
    for line in open(os.path.join(work, "manifest.tsv")):
        file, method, ty, secs = line.rstrip("\n").split("\t")
        steps[file] = (method, ty, float(secs))
    rows = []
    for file, (method, ty, secs) in steps.items():
        qe = file.startswith(("qe-", "mix-"))
        if not (qe or file in ("llama-Q2_K.gguf", "llama-Q4_0.gguf", "ours-Q4_0.gguf")):
            continue
        ev = os.path.join(work, f"{file}.eval-{chunks}.json")
        ins = os.path.join(work, f"{file}.inspect.json")
        if not (os.path.exists(ev) and os.path.exists(ins)):
            continue
        r, i = json.load(open(ev)), json.load(open(ins))
        row = {
            "file": file, "method": method, "type": ty,
            "MB": i["file_bytes"] / 1e6, "bpw": i["total"]["bpw"],
            "KLD": r["kl"]["kld_mean"]["value"], "KLD_err": r["kl"]["kld_mean"]["uncertainty"],
            "PPL_ratio": r["kl"]["ppl_ratio"]["value"], "same_top": 100 * r["kl"]["same_top"]["value"],
            "rel": "", "rtn_rel": "", "outliers_pct": "", "seconds": secs,
        }
        rep = os.path.join(work, f"{file}.report.json")
        if os.path.exists(rep):
            t = json.load(open(rep))["summary"]["tensors"]
            if t:
                row["rel"] = sum(x["rel_error"] for x in t) / len(t)
                row["rtn_rel"] = sum(x["rtn_rel_error"] for x in t) / len(t)
                n = sum(x["outliers"] / x["outlier_fraction"] for x in t if x["outlier_fraction"] > 0)
                o = sum(x["outliers"] for x in t)
                row["outliers_pct"] = 100 * o / n if n else 0.0
        rows.append(row)
    rows.sort(key=lambda x: x["MB"])
    cols = ["file", "method", "type", "MB", "bpw", "KLD", "KLD_err", "PPL_ratio", "same_top", "rel",
            "rtn_rel", "outliers_pct", "seconds"]
    with open(os.path.join(results, "qe-sweep.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for x in rows:
            w.writerow([x[c] for c in cols])
    fmt = lambda v, p: ("" if v == "" else f"{v:.{p}}")
    with open(os.path.join(results, "qe-sweep.md"), "w") as f:
        f.write("# QE formats on SmolLM2-135M: bits × outliers × method\n\n")
        f.write(f"wiki.dev.raw, {chunks} chunks × 512 tokens, KLD against ref-F32.gguf; calibration "
                "groups_merged.txt 16 × 512 tokens (full Gram for QuantEase, its diagonal as the "
                "imatrix for RTN). MB = 10^6 bytes. `rel err` = mean over tensors of "
                "‖(W−Ŵ−H)X‖²/‖WX‖² on the Σ the run used (full Gram for QuantEase rows, the imatrix "
                "diagonal for `--imatrix` RTN rows — not comparable across the two); `RTN rel err` the "
                "same for the formats crate's weighted RTN with outliers. Outliers % = pool entries "
                "used / weights of the QE tensors. "
                "Reproduce: `scripts/bench-qe.sh` (config `scripts/qe-sweep.txt`).\n\n")
        f.write("| file | method | types | MB | bpw | mean KLD | PPL ratio | same top % | rel err | RTN rel err | outliers % | convert s |\n")
        f.write("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for x in rows:
            f.write(f"| {x['file']} | {x['method']} | {x['type']} | {x['MB']:.2f} | {x['bpw']:.3f} | "
                    f"{x['KLD']:.4f} ± {x['KLD_err']:.4f} | {x['PPL_ratio']:.4f} | {x['same_top']:.1f} | "
                    f"{fmt(x['rel'], '3e')} | {fmt(x['rtn_rel'], '3e')} | {fmt(x['outliers_pct'], '3f')} | {x['seconds']:.0f} |\n")


if __name__ == "__main__":
    main()
