#!/usr/bin/python3
"""Trains the engine's network in torch from the engine's start and compares the results.

The engine (samples/engine/engine.cpp) exports its initial weights, every step's batch and its
curves (--export DIR). This script builds the same 784-256-10 MLP in torch (CPU, float32), loads
those weights, feeds the same batches in the same order through torch.optim with the same rule,
lr schedule and hyperparameters, and checks that the final test accuracy is within
--accuracy-tolerance (percentage points) and that every point of the train-loss curve and every
epoch's test loss is within --loss-tolerance (relative) of the engine's.

  torch_check.py --export DIR                 # check an export made before
  torch_check.py --engine BIN [--epochs 2 --train-limit 10000 --test-limit 2000 --rule adamw]
                                              # run the engine (with --validate) first, then check
"""
import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path, header):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def load(prefix, count, mean, std):
    images = read_idx(f"{DATA}/{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 784)[:count]
    labels = read_idx(f"{DATA}/{prefix}-labels-idx1-ubyte.gz", 8)[:count]
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) * (1.0 / std)
    return x, torch.from_numpy(labels.astype(np.int64))


def make_optimizer(run, params):
    rule, lr = run["rule"], run["lr"]
    if rule == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    if rule == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if rule == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    sys.exit(f"torch_check: torch.optim has no counterpart of the engine's '{rule}' here (adamw, adam, sgd)")


def train_in_torch(export):
    with open(os.path.join(export, "run.json")) as f:
        run = json.load(f)
    mean, std = np.float32(run["pixel_mean"]), np.float32(run["pixel_std"])
    train_x, train_y = load("train", run["train_images"], mean, std)
    test_x, test_y = load("t10k", run["test_images"], mean, std)

    init = np.fromfile(os.path.join(export, "init.bin"), dtype=np.float32)
    order = np.fromfile(os.path.join(export, "order.bin"), dtype=np.uint32).astype(np.int64)
    batch = run["batch"]
    steps_per_epoch = run["train_images"] // batch
    total_steps = steps_per_epoch * run["epochs"]
    if order.size != total_steps * batch:
        sys.exit(f"torch_check: order.bin holds {order.size} indices, expected {total_steps * batch}")

    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    with torch.no_grad():
        at = 0
        for p in model.parameters():  # fc1.weight, fc1.bias, fc2.weight, fc2.bias, as exported
            p.copy_(torch.from_numpy(init[at:at + p.numel()].copy()).view_as(p))
            at += p.numel()
        if at != init.size:
            sys.exit(f"torch_check: init.bin holds {init.size} floats, the model {at}")
    opt = make_optimizer(run, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()

    curve, per_epoch, interval = [], [], []
    for step in range(1, total_steps + 1):
        if run["cosine"]:  # torch's CosineAnnealingLR(t_max = total_steps, eta_min = 0), closed form
            for g in opt.param_groups:
                g["lr"] = run["lr"] * (1 + math.cos(math.pi * (step - 1) / total_steps)) / 2
        idx = torch.from_numpy(order[(step - 1) * batch:step * batch])
        loss = loss_fn(model(train_x[idx]), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        interval.append(loss.item())
        if len(interval) == run["log_every"]:
            curve.append(sum(interval) / len(interval))
            interval = []
        if step % steps_per_epoch == 0:
            with torch.no_grad():
                logits = model(test_x)
                test_loss = torch.nn.functional.cross_entropy(logits, test_y).item()
                accuracy = (logits.argmax(1) == test_y).float().mean().item()
            per_epoch.append({"test_loss": test_loss, "test_accuracy": accuracy})
    return run, curve, per_epoch


def compare(run, curve, per_epoch, accuracy_tolerance, loss_tolerance):
    ok = True
    engine_curve = [c["train_loss"] for c in run["curve"]]
    if len(engine_curve) != len(curve):
        print(f"curve lengths differ: engine {len(engine_curve)}, torch {len(curve)}")
        return False
    worst = max(abs(a - b) / b for a, b in zip(engine_curve, curve))
    print(f"train-loss curve: {len(curve)} points, largest relative difference {worst:.2e} (tolerance {loss_tolerance})")
    ok &= worst <= loss_tolerance
    for e, (mine, theirs) in enumerate(zip(run["per_epoch"], per_epoch), 1):
        dl = abs(mine["test_loss"] - theirs["test_loss"]) / theirs["test_loss"]
        da = 100 * abs(mine["test_accuracy"] - theirs["test_accuracy"])
        print(f"epoch {e}: test loss engine {mine['test_loss']:.4f} torch {theirs['test_loss']:.4f}; "
              f"test accuracy engine {100 * mine['test_accuracy']:.2f} % torch {100 * theirs['test_accuracy']:.2f} %")
        ok &= dl <= loss_tolerance
    final = 100 * abs(run["per_epoch"][-1]["test_accuracy"] - per_epoch[-1]["test_accuracy"])
    print(f"final test accuracy differs by {final:.2f} points (tolerance {accuracy_tolerance})")
    ok &= final <= accuracy_tolerance
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", help="a directory the engine wrote with --export")
    ap.add_argument("--engine", help="the vkoptim-engine binary: run it first (with --validate)")
    ap.add_argument("--rule", default="adamw")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--accuracy-tolerance", type=float, default=1.0)
    ap.add_argument("--loss-tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    if not args.export and not args.engine:
        ap.error("give --export or --engine")
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        export = args.export
        if args.engine:
            export = export or tmp
            cmd = [args.engine, "--rule", args.rule, "--epochs", str(args.epochs), "--train-limit",
                   str(args.train_limit), "--test-limit", str(args.test_limit), "--export", export, "--validate"]
            print("running", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        run, curve, per_epoch = train_in_torch(export)
        if not compare(run, curve, per_epoch, args.accuracy_tolerance, args.loss_tolerance):
            print("torch_check: FAILED")
            return 1
    print("torch_check: the engine's training matches torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
