#!/usr/bin/python3
"""Draws a vkoptim-bench JSON (vkoptim-bench --json FILE) as one picture of three panels:

  1. every rule's throughput (G elements/s) at the largest single-tensor size, next to the copy
     roofline: vkCmdCopyBuffer moving the rule's bytes in the same run;
  2. multi-tensor scaling: the same rule over one tensor and over many small ones;
  3. precision: time of the bf16 / 8-bit variants over their fp32 rule (median, min-max bars).

  scripts/plot_bench.py [JSON] [--out PNG]    (default: bench/results-lavapipe.json -> docs/bench.png)
Needs python3-matplotlib (scripts/bootstrap).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def draw(bench, out):
    rows = bench["results"]
    largest = max(r["elements_per_tensor"] for r in rows if r["tensors"] == 1)
    single = [r for r in rows if r["tensors"] == 1 and r["elements_per_tensor"] == largest]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [3, 1.2, 1.4]})

    # 1. Throughput against the copy roofline.
    names = [r["rule"] for r in single]
    gels = [r["elements_per_s"] * 1e-9 for r in single]
    # ratio_to_copy = copy time / rule time: the copy of the rule's bytes moves elements / copy time.
    roof = [r["elements_per_s"] * 1e-9 / r["ratio_to_copy"] for r in single]
    x = range(len(single))
    a.bar(x, gels, color="C0", label="rule (median)")
    a.scatter(x, roof, color="C3", marker="_", s=300, linewidths=2.5, label="copy of the same bytes")
    a.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
    a.set_ylabel("G elements / s")
    a.set_title(f"Throughput at {largest} elements ({bench['runs']} runs)")
    a.legend(fontsize=8)

    # 2. One tensor against many small ones, per rule that has both.
    groups = {}
    for r in rows:
        groups.setdefault(r["rule"], []).append(r)
    pairs = [(rule, rs) for rule, rs in groups.items() if len({r["tensors"] for r in rs}) > 1]
    labels, values = [], []
    for rule, rs in pairs:
        for r in sorted(rs, key=lambda r: r["tensors"]):
            labels.append(f"{rule}\n{r['tensors']} x {r['elements_per_tensor']}")
            values.append(r["elements_per_s"] * 1e-9)
    b.bar(range(len(values)), values, color="C2")
    b.set_xticks(range(len(values)), labels, fontsize=7)
    b.set_ylabel("G elements / s")
    b.set_title("Many tensors, one dispatch")

    # 3. Precision variants over their fp32 rule.
    prec = [r for r in rows if r.get("ratio_to_fp32")]
    med = [r["ratio_to_fp32"]["median"] for r in prec]
    err = [[m - r["ratio_to_fp32"]["min"] for m, r in zip(med, prec)],
           [r["ratio_to_fp32"]["max"] - m for m, r in zip(med, prec)]]
    c.bar(range(len(prec)), med, yerr=err, color="C1", capsize=3)
    c.axhline(1.0, color="k", lw=0.8)
    c.set_xticks(range(len(prec)), [f"{r['rule']}\n{r['state_bytes_per_element']:.1f} B/el state" for r in prec],
                 fontsize=8, rotation=30, ha="right")
    c.set_ylabel("time / fp32 rule's time")
    c.set_title("Mixed precision and 8-bit state")
    fig.suptitle(f"vkoptim-bench on {bench['device']}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="?", default=os.path.join(HERE, "..", "bench", "results-lavapipe.json"))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "bench.png"))
    args = ap.parse_args()
    with open(args.json) as f:
        draw(json.load(f), args.out)
    print(f"{args.out} from {args.json}")


if __name__ == "__main__":
    main()
