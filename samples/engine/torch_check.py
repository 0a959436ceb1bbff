#!/usr/bin/python3
"""Trains the engine's network in torch from the engine's start and compares the results.

The engine (samples/engine/engine.cpp) exports its initial and final weights, every step's batch,
its options and its curves (--export DIR). This script builds the same 784-256-10 MLP in torch
(CPU, float32), loads the initial weights, feeds the same batches in the same order through
torch.optim with the options the engine used and the same lr schedule, and checks that
  - the final weights agree: the median elementwise difference is within --weight-tolerance and
    the largest within 5 lr (a unit whose ReLU input sits within rounding of 0 for a sample
    may take a gradient in one and none in the other; Adam turns that into a step of about lr
    on the unit's weights, which float32 runs of torch against float64 show too),
  - every point of the train-loss curve and every epoch's test loss agree within
    --loss-tolerance (relative),
  - the final test accuracy agrees within --accuracy-tolerance (percentage points).
--negative-control then trains torch once more with one option changed (weight decay, momentum
or beta2) and requires the comparison to fail: the check can tell the options apart.
--long compares a long run (thousands of steps): the weights of two float32 trainings part there
(Adam and ReLU amplify rounding), so it compares the curves within 2 % and the accuracy only.

  torch_check.py --export DIR                 # check an export made before
  torch_check.py --engine BIN [--epochs 2 --train-limit 10000 --test-limit 2000 --rule adamw]
                                              # run the engine (with --validate) first, then check
Rules: adamw, adam, sgd (torch.optim has no Lion, 8-bit Adam or Schedule-Free AdamW).
"""
import argparse
import functools
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

def read_idx(path, header, count, item):
    """The first `count` items (of `item` bytes) of a gzip-compressed IDX file."""
    with gzip.open(path, "rb") as f:
        raw = f.read(header + count * item)
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


@functools.lru_cache(maxsize=None)
def load(data, prefix, count, mean, std):
    images = read_idx(f"{data}/{prefix}-images-idx3-ubyte.gz", 16, count, 784).reshape(-1, 784)
    labels = read_idx(f"{data}/{prefix}-labels-idx1-ubyte.gz", 8, count, 1)
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) * (1.0 / std)
    return x, torch.from_numpy(labels.astype(np.int64))


def make_optimizer(rule, o, params):
    """torch.optim's optimizer for the engine's rule and options (run.json's "options")."""
    if o["state"] != "f32":
        sys.exit(f"torch_check: torch.optim keeps no {o['state']} state")
    if rule in ("adamw", "adam"):
        cls = torch.optim.AdamW if o["decoupled_weight_decay"] else torch.optim.Adam
        return cls(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"],
                   amsgrad=o["amsgrad"])
    if rule == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"],
                               nesterov=o["nesterov"], weight_decay=o["weight_decay"])
    sys.exit(f"torch_check: torch.optim has no counterpart of the engine's '{rule}' (adamw, adam, sgd)")


def perturbed(rule, o):
    """The options with one changed by an amount a wrong implementation could differ by."""
    o = dict(o)
    if rule == "adamw":
        o["weight_decay"] = 0.0
    elif rule == "adam":
        o["betas"] = [o["betas"][0], 0.99]
    else:
        o["momentum"] = o["momentum"] - 0.01
    return o


def train_in_torch(export, run, options):
    data = run["data_dir"]
    mean, std = np.float32(run["pixel_mean"]), np.float32(run["pixel_std"])
    train_x, train_y = load(data, "train", run["train_images"], mean, std)
    test_x, test_y = load(data, "t10k", run["test_images"], mean, std)

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
    opt = make_optimizer(run["rule"], options, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()

    curve, per_epoch, interval = [], [], []
    for step in range(1, total_steps + 1):
        if run["cosine"]:  # torch's CosineAnnealingLR(t_max = total_steps, eta_min = 0), closed form
            for g in opt.param_groups:
                g["lr"] = options["lr"] * (1 + math.cos(math.pi * (step - 1) / total_steps)) / 2
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
    final = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    return curve, per_epoch, final


def compare(export, run, curve, per_epoch, final, args):
    ok = True
    engine_final = np.fromfile(os.path.join(export, "final.bin"), dtype=np.float32)
    if engine_final.shape != final.shape:
        print(f"final weights: engine {engine_final.size}, torch {final.size} values")
        return False
    diff = np.abs(engine_final - final)
    median, largest, lr = float(np.median(diff)), float(diff.max()), run["options"]["lr"]
    moved = float(np.median(np.abs(final - np.fromfile(os.path.join(export, "init.bin"), dtype=np.float32))))
    print(f"final weights: median difference {median:.2e} (tolerance {args.weight_tolerance}; the median change "
          f"over the run is {moved:.2e}), largest {largest:.2e} (tolerance 5 lr = {5 * lr:.2e})")
    if not args.long:
        ok &= median <= args.weight_tolerance and largest <= 5 * lr
    engine_curve = [c["train_loss"] for c in run["curve"]]
    if len(engine_curve) != len(curve):
        print(f"curve lengths differ: engine {len(engine_curve)}, torch {len(curve)}")
        return False
    if curve:
        worst = max(abs(a - b) / b for a, b in zip(engine_curve, curve))
        print(f"train-loss curve: {len(curve)} points, largest relative difference {worst:.2e} "
              f"(tolerance {args.loss_tolerance})")
        ok &= worst <= args.loss_tolerance
    for e, (mine, theirs) in enumerate(zip(run["per_epoch"], per_epoch), 1):
        dl = abs(mine["test_loss"] - theirs["test_loss"]) / theirs["test_loss"]
        da = 100 * abs(mine["test_accuracy"] - theirs["test_accuracy"])
        print(f"epoch {e}: test loss engine {mine['test_loss']:.4f} torch {theirs['test_loss']:.4f}; "
              f"test accuracy engine {100 * mine['test_accuracy']:.2f} % torch {100 * theirs['test_accuracy']:.2f} %")
        ok &= dl <= args.loss_tolerance
    accuracy = 100 * abs(run["per_epoch"][-1]["test_accuracy"] - per_epoch[-1]["test_accuracy"])
    print(f"final test accuracy differs by {accuracy:.2f} points (tolerance {args.accuracy_tolerance})")
    ok &= accuracy <= args.accuracy_tolerance
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
    ap.add_argument("--loss-tolerance", type=float, default=1e-4)
    ap.add_argument("--weight-tolerance", type=float, default=1e-5)
    ap.add_argument("--negative-control", action="store_true")
    ap.add_argument("--long", action="store_true", help="a long run: curves within 2 %% and accuracy only")
    args = ap.parse_args()
    if args.long:
        args.loss_tolerance = max(args.loss_tolerance, 0.02)
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
        with open(os.path.join(export, "run.json")) as f:
            run = json.load(f)
        options = run["options"]
        print(f"torch: {run['rule']} with {options}", flush=True)
        curve, per_epoch, final = train_in_torch(export, run, options)
        if not compare(export, run, curve, per_epoch, final, args):
            print("torch_check: FAILED")
            return 1
        print("torch_check: the engine's training matches torch")
        if args.negative_control:
            wrong = perturbed(run["rule"], options)
            print(f"negative control: torch with {wrong}", flush=True)
            curve, per_epoch, final = train_in_torch(export, run, wrong)
            if compare(export, run, curve, per_epoch, final, args):
                print("torch_check: FAILED: the comparison does not tell the changed option apart")
                return 1
            print("negative control: told apart, as it must be")
    return 0


if __name__ == "__main__":
    sys.exit(main())
