#!/usr/bin/python3
"""Trains the engine's network (samples/engine) from the same start with each rule and draws the
train loss and the test accuracy of all of them in one figure, docs/loss_curves.png.

  scripts/plot_loss_curves.py [--epochs 5] [--out docs/loss_curves.png] [--results DIR]
                              [--plot-only] [--tiny]

Every run is the engine's: same initial weights and batch order (--seed), each rule with the
settings engine.cpp lists (a cosine lr to 0, except Schedule-Free AdamW). --results keeps each
run's JSON (--plot-only redraws from them); --tiny trains one short epoch on a few images with
the validation layer on, for the test. Needs build/samples/vkoptim-engine (scripts/build) and
python3-matplotlib (scripts/bootstrap).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = [  # (engine --rule, label)
    ("sgd", "SGD, momentum 0.9"),
    ("adam", "Adam"),
    ("adamw", "AdamW"),
    ("lion", "Lion"),
    ("adam8bit", "Adam, 8-bit state"),
    ("sfadamw", "Schedule-Free AdamW"),
]


def train(engine, rule, args, path):
    cmd = [engine, "--rule", rule, "--epochs", str(args.epochs), "--seed", str(args.seed), "--json", path]
    if args.tiny:
        cmd += ["--train-limit", "5120", "--test-limit", "1000", "--validate"]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def check(label, run):
    """What every run must show: a curve of finite losses that fell from the start (ln 10 = 2.3)."""
    losses = [c["train_loss"] for c in run["curve"]]
    if len(losses) < 2 or not all(0 < x < 10 for x in losses) or not losses[-1] < 2.0:
        sys.exit(f"plot_loss_curves: {label}: the run did not learn (train-loss curve {losses})")


def draw(results, out):
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, run in results:
        curve = run["curve"]
        ax_loss.plot([c["epoch"] for c in curve], [c["train_loss"] for c in curve], label=label, linewidth=1.2)
        epochs = [e["epoch"] for e in run["per_epoch"]]
        ax_acc.plot(epochs, [100 * e["test_accuracy"] for e in run["per_epoch"]], marker="o", label=label)
    first = results[0][1]
    ax_loss.set_title(f"Train loss (mean of every {first['log_every']} steps)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    # From the lowest loss to the highest after the first tenth of the run: the first steps (2.3
    # down) would flatten the rest.
    later = [c["train_loss"] for _, r in results for c in r["curve"] if c["epoch"] >= 0.1 * r["epochs"]]
    ax_loss.set_ylim(0.95 * min(later), 1.05 * max(later))
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend()
    ax_acc.set_title(f"Test accuracy ({first['test_images']} images)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.suptitle(f"784-256-10 MLP on Fashion-MNIST, batch {first['batch']}, same start and batch order "
                 f"(samples/engine on {first['device']})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    print("wrote", out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default=os.path.join(HERE, "..", "build", "samples", "vkoptim-engine"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "loss_curves.png"))
    ap.add_argument("--results", help="directory for each run's JSON (default: a temporary one)")
    ap.add_argument("--plot-only", action="store_true", help="draw from --results without training")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    if args.tiny:
        args.epochs = 1
    if args.plot_only and not args.results:
        ap.error("--plot-only needs --results")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.results or tmp
        os.makedirs(folder, exist_ok=True)
        results = []
        for rule, label in RULES:
            path = os.path.join(folder, f"{rule}.json")
            if not args.plot_only:
                train(args.engine, rule, args, path)
            with open(path) as f:
                results.append((label, json.load(f)))
            check(label, results[-1][1])
        draw(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
