#!/usr/bin/python3
"""Draws the optimizers' trajectories on 2-D test functions, every step computed by vkoptim on the
device (the Python module: python/vkoptim), into docs/:

  trajectory_valley.png    a narrow valley: SGD zigzags, momentum and Nesterov go along it, Adam
  trajectory_scaling.png   badly scaled axes (x^2 + 100 y^2): SGD crawls along x, RMSprop and Adam
                           scale each axis
  trajectory_noise.png     noisy gradients at the optimum: SGD's steps shrink with the gradient,
                           RMSprop and Adam normalise the noise and keep jittering at their lr
  trajectory_gallery.png   every rule of the library on the same function

  scripts/plot_trajectories.py [--out DIR] [--tiny]     (--tiny: few steps, for the test)
Needs build/libvkoptim.so (scripts/build) and python3-matplotlib (scripts/bootstrap).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
os.environ.setdefault("VKOPTIM_LIBRARY", os.path.join(HERE, "..", "build", "libvkoptim.so"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import vkoptim  # noqa: E402


def trajectory(ctx, cls, options, grad, start, steps, noise=0.0, seed=0):
    """The points an optimizer visits from `start`, the gradient computed on the host each step
    (plus Gaussian noise of scale `noise`) and the step taken by vkoptim on the device."""
    rng = np.random.default_rng(seed)
    p = vkoptim.Parameter(ctx, np.array(start, np.float32))
    opt = cls([p], **options)
    points = [p.numpy().astype(np.float64)]
    for _ in range(steps):
        g = grad(points[-1]) + noise * rng.normal(size=2)
        p.grad = g.astype(np.float32)
        opt.step()
        points.append(p.numpy().astype(np.float64))
    return np.array(points)


def contours(ax, f, xlim, ylim, levels):
    x, y = np.meshgrid(np.linspace(*xlim, 300), np.linspace(*ylim, 300))
    ax.contour(x, y, f(x, y), levels=levels, colors="0.8", linewidths=0.7)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def paths(ax, runs):
    for label, pts in runs:
        ax.plot(pts[:, 0], pts[:, 1], "-o", ms=2, lw=1.2, label=f"{label} ({len(pts) - 1} steps)")
    ax.plot([0], [0], "k*", ms=10)
    ax.legend(fontsize=8, loc="lower right")


def contour_figure(runs, f, xlim, ylim, levels, title, path):
    """Paths over the contours of f, one figure."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    contours(ax, f, xlim, ylim, levels)
    paths(ax, runs)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def valley(ctx, steps, out):
    f = lambda x, y: 0.05 * x**2 + 5 * y**2  # noqa: E731
    grad = lambda p: np.array([0.1 * p[0], 10 * p[1]])  # noqa: E731
    start = (-9.0, 1.5)
    runs = [("SGD lr 0.19", trajectory(ctx, vkoptim.SGD, dict(lr=0.19), grad, start, steps)),
            ("momentum 0.9, lr 0.02", trajectory(ctx, vkoptim.SGD, dict(lr=0.02, momentum=0.9), grad, start, steps)),
            ("Nesterov 0.9, lr 0.02",
             trajectory(ctx, vkoptim.SGD, dict(lr=0.02, momentum=0.9, nesterov=True), grad, start, steps)),
            ("Adam lr 0.3", trajectory(ctx, vkoptim.Adam, dict(lr=0.3), grad, start, steps))]
    contour_figure(runs, f, (-10, 2), (-2, 2), np.geomspace(0.01, 20, 14),
                   "A narrow valley, f = 0.05 x² + 5 y²: SGD zigzags across it, momentum goes along it",
                   os.path.join(out, "trajectory_valley.png"))


def scaling(ctx, steps, out):
    f = lambda x, y: x**2 + 100 * y**2  # noqa: E731
    grad = lambda p: np.array([2 * p[0], 200 * p[1]])  # noqa: E731
    start = (-4.0, 1.0)
    runs = [("SGD lr 0.009 (stable for y)", trajectory(ctx, vkoptim.SGD, dict(lr=0.009), grad, start, steps)),
            ("RMSprop lr 0.05", trajectory(ctx, vkoptim.RMSprop, dict(lr=0.05), grad, start, steps)),
            ("Adam lr 0.1", trajectory(ctx, vkoptim.Adam, dict(lr=0.1), grad, start, steps))]
    contour_figure(runs, f, (-4.5, 1), (-1.2, 1.2), np.geomspace(0.05, 120, 14),
                   "Badly scaled axes, f = x² + 100 y²: RMSprop and Adam scale each axis, SGD crawls along x",
                   os.path.join(out, "trajectory_scaling.png"))


def noise(ctx, steps, out):
    grad = lambda p: 2 * p  # noqa: E731  (f = x^2 + y^2)
    start = (1.5, 1.0)
    runs = [(name, trajectory(ctx, cls, dict(lr=0.05), grad, start, steps, noise=0.2))
            for name, cls in (("SGD lr 0.05", vkoptim.SGD), ("RMSprop lr 0.05", vkoptim.RMSprop),
                              ("Adam lr 0.05", vkoptim.Adam))]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    for label, pts in runs:
        ax.plot(pts[:, 0], pts[:, 1], lw=0.8, label=label)
        bx.semilogy(np.linalg.norm(pts, axis=1), lw=0.8, label=label)
    ax.plot([0], [0], "k*", ms=10)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("f = x² + y², gradient noise σ = 0.2")
    ax.legend(fontsize=8)
    bx.set_xlabel("step")
    bx.set_ylabel("distance to the optimum")
    bx.set_title("SGD's steps shrink with g; RMSprop's stay ≈ lr")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "trajectory_noise.png"), dpi=110)
    plt.close(fig)


# Every rule on one function (the Rosenbrock valley), with an lr that suits it.
GALLERY = [("SGD momentum", vkoptim.SGD, dict(lr=5e-4, momentum=0.9)), ("Adam", vkoptim.Adam, dict(lr=0.05)),
           ("AdamW", vkoptim.AdamW, dict(lr=0.05)), ("Adagrad", vkoptim.Adagrad, dict(lr=0.5)),
           ("RMSprop", vkoptim.RMSprop, dict(lr=0.01)), ("Adadelta", vkoptim.Adadelta, dict(lr=10.0)),
           ("Adamax", vkoptim.Adamax, dict(lr=0.1)), ("NAdam", vkoptim.NAdam, dict(lr=0.05)),
           ("RAdam", vkoptim.RAdam, dict(lr=3e-3)), ("ASGD", vkoptim.ASGD, dict(lr=8e-4)),
           ("Rprop", vkoptim.Rprop, dict(lr=0.01)), ("Lion", vkoptim.Lion, dict(lr=0.005)),
           ("Schedule-Free AdamW", vkoptim.ScheduleFreeAdamW, dict(lr=0.05)), ("LAMB", vkoptim.LAMB, dict(lr=0.05)),
           ("Adafactor", vkoptim.Adafactor, dict(lr=0.05))]


def gallery(ctx, steps, out):
    f = lambda x, y: (1 - x)**2 + 100 * (y - x**2)**2  # noqa: E731
    grad = lambda p: np.array([-2 * (1 - p[0]) - 400 * p[0] * (p[1] - p[0]**2), 200 * (p[1] - p[0]**2)])  # noqa
    start = (-1.5, 2.0)
    cols = 5
    fig, axes = plt.subplots(3, cols, figsize=(15, 8.5), sharex=True, sharey=True)
    for ax, (name, cls, options) in zip(axes.flat, GALLERY):
        pts = trajectory(ctx, cls, options, grad, start, steps)
        contours(ax, f, (-2, 2), (-1, 3), np.geomspace(0.5, 2000, 12))
        ax.plot(pts[:, 0], pts[:, 1], "-", lw=1.2, color="C3")
        ax.plot([1], [1], "k*", ms=9)
        end = pts[-1]
        ax.set_title(f"{name}, lr {options['lr']:g}\nends at ({end[0]:.2f}, {end[1]:.2f})", fontsize=9)
    fig.suptitle(f"Every rule on the Rosenbrock function from (-1.5, 2), {steps} steps on the device "
                 "(optimum ★ at (1, 1))")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "trajectory_gallery.png"), dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs"))
    ap.add_argument("--tiny", action="store_true", help="few steps (the test)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ctx = vkoptim.Context()
    n = 5 if args.tiny else 1
    valley(ctx, 60 // n, args.out)
    scaling(ctx, 80 // n, args.out)
    noise(ctx, 300 // n, args.out)
    gallery(ctx, 500 // n, args.out)
    print(f"trajectories written to {os.path.abspath(args.out)} on {ctx.device_name}")


if __name__ == "__main__":
    main()
