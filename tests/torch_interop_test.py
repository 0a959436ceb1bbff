"""torch <-> vkoptim checkpoints (python/vkoptim/torch_convert.py) with Debian's python3-torch:
for torch's Adam, AdamW and SGD with momentum, 20 steps in torch -> torch.save -> convert -> load
into vkoptim -> 20 more steps equals 40 steps in torch, and 20 steps in vkoptim -> save ->
convert -> torch load_state_dict -> 20 more steps equals 40 steps in vkoptim (float32 tolerance).
Run with PYTHONPATH=python and VKOPTIM_LIBRARY=<libvkoptim.so>."""
import io
import sys

import numpy as np
import torch

import vkoptim
from vkoptim import torch_convert

torch.manual_seed(3)
ctx = vkoptim.Context(validation=True)
SHAPES = [(7,), (5, 3)]
STEPS = 20
CASES = {
    "adam": (torch.optim.Adam, vkoptim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01)),
    "adamw": (torch.optim.AdamW, vkoptim.AdamW, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
    "sgd": (torch.optim.SGD, vkoptim.SGD, dict(lr=5e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
}
failures = []


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.allclose(a, b, rtol=2e-5, atol=2e-6):
        failures.append(what)
        err = np.abs(a - b).max() if a.shape == b.shape else f"shapes {a.shape} {b.shape}"
        print(f"FAILED: {what}: max error {err}", file=sys.stderr)


def torch_run(cls, options, start, grads, state=None):
    params = [torch.nn.Parameter(torch.tensor(p)) for p in start]
    opt = cls(params, **options)
    if state is not None:
        opt.load_state_dict(state)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi)
        opt.step()
    return [p.detach().numpy().copy() for p in params], opt


def vkoptim_run(cls, options, start, grads, checkpoint=None, names=None):
    params = [vkoptim.Parameter(ctx, p, names[i] if names else None) for i, p in enumerate(start)]
    opt = cls(params, **options)
    if checkpoint is not None:
        opt.load_bytes(checkpoint)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi
        opt.step()
    return [p.numpy() for p in params], opt


for rule, (torch_cls, vk_cls, options) in CASES.items():
    p0 = [np.random.default_rng(1).uniform(-1, 1, s).astype(np.float32) for s in SHAPES]
    grads = [[np.random.default_rng(100 + t).normal(size=s).astype(np.float32) for s in SHAPES]
             for t in range(2 * STEPS)]

    # torch 20 steps -> torch.save -> vkoptim 20 steps == torch 40 steps
    p20, t_opt = torch_run(torch_cls, options, p0, grads[:STEPS])
    buffer = io.BytesIO()
    torch.save(t_opt.state_dict(), buffer)
    buffer.seek(0)
    # (AdamW's tensors are named, as a model's named_parameters() would name them.)
    names = ["layer.weight", "layer.bias"] if rule == "adamw" else None
    checkpoint = torch_convert.torch_to_vkoptim(torch.load(buffer), rule, ctx, names)
    if names and b'"state.layer.weight.exp_avg"' not in checkpoint:
        failures.append("names: the checkpoint has no state.layer.weight.exp_avg")
    p40_torch, _ = torch_run(torch_cls, options, p0, grads)
    p40_vk, _ = vkoptim_run(vk_cls, options, p20, grads[STEPS:], checkpoint, names)
    for i in range(len(SHAPES)):
        close(p40_vk[i], p40_torch[i], f"{rule}: torch 20 + vkoptim 20 vs torch 40, parameter {i}")

    # vkoptim 20 steps -> save -> torch 20 steps == vkoptim 40 steps
    v20, v_opt = vkoptim_run(vk_cls, options, p0, grads[:STEPS], names=names)
    state = torch_convert.vkoptim_to_torch(v_opt.state_bytes(), rule, {i: s for i, s in enumerate(SHAPES)})
    p40_vk_only, _ = vkoptim_run(vk_cls, options, p0, grads)
    p40_back, _ = torch_run(torch_cls, options, v20, grads[STEPS:], state)
    for i in range(len(SHAPES)):
        close(p40_back[i], p40_vk_only[i], f"{rule}: vkoptim 20 + torch 20 vs vkoptim 40, parameter {i}")

if ctx.validation_messages:
    failures.append(f"{ctx.validation_messages} validation messages")
if failures:
    sys.exit(f"{len(failures)} failures")
print(f"torch interop ({torch.__version__}): {', '.join(CASES)} ok both ways")
