#!/usr/bin/env python3
"""Tabulate and plot the quality harness results (called by scripts/bench-quality.sh).

usage: quality_report.py MODEL WORK_DIR RESULTS_DIR EVAL_CHUNKS CALIB_CHUNKS
Reads WORK_DIR/manifest.tsv (file, method, type, seconds), <file>.eval-<chunks>.json (perplexity
--json) and <file>.inspect.json; writes RESULTS_DIR/results.md, results.csv, size_vs_kld.png.
"""
import csv
import json
import os
import sys


def main():
    model, work, results, chunks, calib_chunks = sys.argv[1:6]
    rows = []
    steps = {}
    with open(os.path.join(work, "manifest.tsv")) as f:
        for line in f:
            file, method, ty, secs = line.rstrip("\n").split("\t")
            steps[file] = (method, ty, float(secs))
    for file, (method, ty, secs) in steps.items():
        if method in ("reference", "calibrate"):
            continue
        ev = os.path.join(work, f"{file}.eval-{chunks}.json")
        ins = os.path.join(work, f"{file}.inspect.json")
        if not (os.path.exists(ev) and os.path.exists(ins)):
            continue
        r = json.load(open(ev))
        i = json.load(open(ins))
        kl = r["kl"]
        rows.append({
            "file": file,
            "method": method,
            "type": ty,
            "MiB": i["file_bytes"] / 1048576,
            "MB": i["file_bytes"] / 1e6,
            "bpw": i["total"]["bpw"],
            "PPL": r["ppl"]["value"],
            "PPL_err": r["ppl"]["uncertainty"],
            "PPL_ratio": kl["ppl_ratio"]["value"],
            "mean_KLD": kl["kld_mean"]["value"],
            "KLD_err": kl["kld_mean"]["uncertainty"],
            "same_top_pct": 100 * kl["same_top"]["value"],
            "seconds": secs,
            "ppl_ref": kl["ppl_base"]["value"],
            "chunks": r["n_chunks"],
            "scored": r["n_scored"],
        })
    rows.sort(key=lambda x: (x["type"], x["method"]))
    cols = ["file", "method", "type", "MiB", "MB", "bpw", "PPL", "PPL_ratio", "mean_KLD", "same_top_pct",
            "seconds"]
    with open(os.path.join(results, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ["PPL_err", "KLD_err", "ppl_ref", "chunks", "scored"])
        for x in rows:
            w.writerow([x[c] for c in cols + ["PPL_err", "KLD_err", "ppl_ref", "chunks", "scored"]])
    with open(os.path.join(results, "results.md"), "w") as f:
        ref = [s for s in steps.items() if s[1][0] == "reference"]
        cal = [s for s in steps.items() if s[1][0] == "calibrate" and s[1][1] == "gram"]
        f.write(f"# Quality: {model}\n\n")
        if rows:
            f.write(f"Evaluation: wiki.dev.raw, {rows[0]['chunks']} chunks × 512 tokens "
                    f"({rows[0]['scored']} scored tokens), against {ref[0][0] if ref else 'the reference'} "
                    f"(PPL {rows[0]['ppl_ref']:.3f}). ")
        f.write(f"Calibration: groups_merged.txt, {calib_chunks} chunks × 512 tokens"
                + (f" ({cal[0][1][2]:.0f} s for the full Gram file {cal[0][0]})" if cal else "")
                + ". llama.cpp and `ours` use the plain imatrix (as llama-imatrix computes it); "
                "`gptq`/`quantease` use the Gram file (first token of each chunk weighted, "
                "docs/CALIBRATION.md).\n\n")
        f.write("MiB = 2^20 bytes, MB = 10^6 bytes (file sizes).\n\n")
        f.write("| file | method | type | MiB | MB | bpw | PPL | PPL ratio | mean KLD | same top % | time per step (s) |\n")
        f.write("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for x in rows:
            f.write(f"| {x['file']} | {x['method']} | {x['type']} | {x['MiB']:.2f} | {x['MB']:.2f} | {x['bpw']:.3f} | "
                    f"{x['PPL']:.3f} ± {x['PPL_err']:.3f} | {x['PPL_ratio']:.4f} | "
                    f"{x['mean_KLD']:.4f} ± {x['KLD_err']:.4f} | {x['same_top_pct']:.1f} | {x['seconds']:.1f} |\n")
        f.write("\n![size vs KLD](size_vs_kld.png)\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in sorted({x["method"] for x in rows}):
        pts = [x for x in rows if x["method"] == method]
        ax.errorbar([x["MiB"] for x in pts], [x["mean_KLD"] for x in pts],
                    yerr=[x["KLD_err"] for x in pts], fmt="o", label=method, capsize=3)
        for x in pts:
            ax.annotate(x["type"], (x["MiB"], x["mean_KLD"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    if model == "smollm2" and any(x["type"].startswith("QE") for x in rows):
        # The QE target: at most 70 MB (10^6 bytes) with a KLD below llama.cpp's Q2_K + imatrix.
        ax.axvline(70e6 / 1048576, color="gray", linestyle="--", linewidth=0.8)
        ax.axhline(0.2730, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("file size (MiB)")
    ax.set_ylabel("mean KLD vs reference")
    ax.set_yscale("log")
    ax.set_title(f"{model}: size vs KL divergence")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(results, "size_vs_kld.png"), dpi=120)
    print(open(os.path.join(results, "results.md")).read())


if __name__ == "__main__":
    main()
