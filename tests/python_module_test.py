"""The Python module (python/vkoptim): torch-like classes over the C API, numpy in and out.
AdamW, SGD-Nesterov, AdEMAMix and cautious AdamW against float64 numpy computations over 20 steps,
two param groups, option names and refusals, state by name, and checkpoints through files and bytes.
Run with PYTHONPATH=python and VKOPTIM_LIBRARY=<libvkoptim.so>."""
import os
import sys
import tempfile

import numpy as np

import vkoptim

rng = np.random.default_rng(11)
ctx = vkoptim.Context(validation=True)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAILED:", what, file=sys.stderr)


def adamw_reference(p, grads, lr, betas, eps, wd, cautious=False):
    """cautious: timm's caution=True, m masked where it disagrees with g, rescaled per tensor."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        mask = np.ones_like(m)
        if cautious:
            mask = (m * g > 0).astype(np.float64)
            mask /= max(mask.mean(), 1e-3)
        p = p - lr / (1 - betas[0] ** t) * (m * mask) / (np.sqrt(v) / np.sqrt(1 - betas[1] ** t) + eps)
    return p, m


# AdamW, two groups (the second with its own lr), a 1-D and a 2-D parameter.
p0 = [rng.uniform(-1, 1, 257).astype(np.float32), rng.uniform(-1, 1, (16, 9)).astype(np.float32)]
params = [vkoptim.Parameter(ctx, p) for p in p0]
opt = vkoptim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "lr": 3e-3}], lr=1e-2, betas=(0.8, 0.99),
                    weight_decay=0.05)
grads = [[rng.normal(size=p.shape).astype(np.float32) for _ in range(20)] for p in p0]
for t in range(20):
    for p, g in zip(params, grads):
        p.grad = g[t]
    opt.step()
for i, (lr, p) in enumerate(zip((1e-2, 3e-3), params)):
    want, m = adamw_reference(p0[i].astype(np.float64), [g.astype(np.float64) for g in grads[i]], lr, (0.8, 0.99),
                              1e-8, 0.05)
    got = p.numpy()
    check(got.shape == p0[i].shape, f"parameter {i} keeps its shape {p0[i].shape}, got {got.shape}")
    check(np.allclose(got, want, rtol=1e-4, atol=1e-5), f"AdamW parameter {i}: max error {np.abs(got - want).max()}")
    check(np.allclose(opt.state(p, "exp_avg"), m, rtol=1e-4, atol=1e-6), f"AdamW exp_avg {i}")
    check(opt.state(p, "step")[0] == 20, f"step of parameter {i}")

# Checkpoints: bytes and files round trip; a second optimizer continues where the first stopped.
blob = opt.state_bytes()
check(blob[8:9] == b"{", "a checkpoint is safetensors (JSON header after the length)")
twin = [vkoptim.Parameter(ctx, p.numpy()) for p in params]
opt2 = vkoptim.AdamW([{"params": [twin[0]]}, {"params": [twin[1]], "lr": 3e-3}], lr=1e-2, betas=(0.8, 0.99),
                     weight_decay=0.05)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "adamw.safetensors")
    opt.save(path)
    opt2.load(path)
check(opt2.state_bytes() == blob, "a loaded optimizer saves the same checkpoint")
for p, q in zip(params, twin):
    g = rng.normal(size=p.shape).astype(np.float32)
    p.grad = g
    q.grad = g
opt.step()
opt2.step()
for i, (p, q) in enumerate(zip(params, twin)):
    check(np.array_equal(p.numpy(), q.numpy()), f"continued parameter {i} equals the original's")
try:
    opt2.load_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    check(False, "garbage loaded")
except vkoptim.Error as e:
    check(e.status == "invalid_argument", f"garbage refused as invalid_argument, got {e.status}")
check(opt2.state_bytes() != b"", "still usable")

# SGD with Nesterov momentum, torch's names.
w = vkoptim.Parameter(ctx, np.ones(33, np.float32))
sgd = vkoptim.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
buf, ref = None, np.ones(33)
for t in range(5):
    g = rng.normal(size=33).astype(np.float32)
    w.grad = g
    sgd.step()
    buf = g.astype(np.float64) if buf is None else 0.9 * buf + g
    ref = ref - 0.1 * (g + 0.9 * buf)
check(np.allclose(w.numpy(), ref, rtol=1e-5, atol=1e-6), "SGD nesterov")
check(np.allclose(sgd.state(w, "momentum_buffer"), buf, rtol=1e-5, atol=1e-6), "momentum_buffer")

# AdEMAMix: three betas, warmups as the reference takes them (None: none).
def ademamix_reference(p, grads, lr, betas, alpha, beta3_warmup, alpha_warmup, eps, wd):
    b1, b2, b3_final = betas
    half_life = lambda b: np.log(0.5) / np.log(b + 1e-8) - 1
    m1, m2, v = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        a_alpha = t / alpha_warmup if alpha_warmup and t < alpha_warmup else 1.0
        b3 = b3_final
        if beta3_warmup and t < beta3_warmup:
            a = t / beta3_warmup
            b3 = 0.5 ** (1 / ((1 - a) * half_life(b1) + a * half_life(b3_final) + 1))
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b3 * m2 + (1 - b3) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
        p = p - lr * ((m1 / (1 - b1 ** t) + a_alpha * alpha * m2) / denom + wd * p)
    return p


for warmups in ((None, None), (12, 8)):
    a0 = rng.uniform(-1, 1, 300).astype(np.float32)
    a = vkoptim.Parameter(ctx, a0)
    ademamix = vkoptim.AdEMAMix([a], lr=1e-2, betas=(0.9, 0.99, 0.999), alpha=5.0, beta3_warmup=warmups[0],
                                alpha_warmup=warmups[1], weight_decay=0.1)
    a_grads = [rng.normal(size=a0.shape).astype(np.float32) for _ in range(20)]
    for g in a_grads:
        a.grad = g
        ademamix.step()
    want = ademamix_reference(a0.astype(np.float64), a_grads, 1e-2, (0.9, 0.99, 0.999), 5.0, warmups[0], warmups[1],
                              1e-8, 0.1)
    check(np.allclose(a.numpy(), want, rtol=1e-4, atol=1e-5),
          f"AdEMAMix warmups {warmups}: max error {np.abs(a.numpy() - want).max()}")

# Cautious AdamW (timm's caution=True).
c0 = rng.uniform(-1, 1, 300).astype(np.float32)
c = vkoptim.Parameter(ctx, c0)
cadamw = vkoptim.AdamW([c], lr=1e-2, weight_decay=0.1, cautious=True)
c_grads = [rng.normal(size=c0.shape).astype(np.float32) for _ in range(20)]
for g in c_grads:
    c.grad = g
    cadamw.step()
want = adamw_reference(c0.astype(np.float64), c_grads, 1e-2, (0.9, 0.999), 1e-8, 0.1, cautious=True)[0]
plain = adamw_reference(c0.astype(np.float64), c_grads, 1e-2, (0.9, 0.999), 1e-8, 0.1)[0]
check(np.allclose(c.numpy(), want, rtol=1e-4, atol=1e-5),
      f"cautious AdamW: max error {np.abs(c.numpy() - want).max()}")
check(np.abs(want - plain).max() > 1e-3, "cautious AdamW differs from plain AdamW")

# Muon in float32 on a 2-D parameter (transposed: 12 > 5), AdamW on a bias in the same optimizer.
def newton_schulz(u, steps=5, a=3.4445, b=-4.775, c=2.0315, eps=1e-7):
    x = u.T if u.shape[0] > u.shape[1] else u
    x = x / max(np.linalg.norm(x), eps)
    for _ in range(steps):
        g = x @ x.T
        x = a * x + (b * g + c * g @ g) @ x
    return x.T if u.shape[0] > u.shape[1] else x


m0 = rng.uniform(-1, 1, (12, 5)).astype(np.float32)
b0 = rng.uniform(-1, 1, 7).astype(np.float32)
mw, bias = vkoptim.Parameter(ctx, m0), vkoptim.Parameter(ctx, b0)
muon = vkoptim.Muon([{"params": [mw]}, {"params": [bias], "use_muon": False, "lr": 1e-2}], lr=0.02, ns_bf16=False,
                    adjust_lr_fn="match_rms_adamw")
want_m, buf = m0.astype(np.float64), np.zeros(m0.shape)
m_grads = [rng.normal(size=m0.shape).astype(np.float32) for _ in range(5)]
b_grads = [rng.normal(size=b0.shape).astype(np.float32) for _ in range(5)]
for gm, gb in zip(m_grads, b_grads):
    mw.grad, bias.grad = gm, gb
    muon.step()
    buf = buf + 0.05 * (gm - buf)
    u = gm + 0.95 * (buf - gm)
    want_m = want_m * (1 - 0.02 * 0.1) - 0.02 * 0.2 * np.sqrt(12) * newton_schulz(u)
check(np.allclose(mw.numpy(), want_m, rtol=1e-4, atol=1e-5), f"Muon: max error {np.abs(mw.numpy() - want_m).max()}")
check(np.allclose(muon.state(mw, "momentum_buffer"), buf, rtol=1e-5, atol=1e-6), "Muon momentum_buffer")
want_b = adamw_reference(b0.astype(np.float64), b_grads, 1e-2, (0.9, 0.95), 1e-10, 0.1)[0]
check(np.allclose(bias.numpy(), want_b, rtol=1e-4, atol=1e-5), f"Muon's AdamW group: {np.abs(bias.numpy() - want_b).max()}")
try:
    vkoptim.Muon([vkoptim.Parameter(ctx, np.ones(4, np.float32))])
    check(False, "Muon took a 1-D parameter")
except vkoptim.Error as e:
    check("2-D" in str(e), f"a 1-D parameter refused naming why: {e}")

# SparseAdam on an embedding table: duplicate rows summed (float32, position order), padding
# skipped, untouched rows kept, against numpy float64; an out-of-range row refused, nothing changed.
t0 = rng.standard_normal((50, 6)).astype(np.float32)
table = vkoptim.EmbeddingTable(ctx, t0, capacity=8, name="emb")
sparse = vkoptim.SparseAdam([table], lr=0.05, betas=(0.8, 0.99))
want_t, m_t, v_t = t0.astype(np.float64), np.zeros((50, 6)), np.zeros((50, 6))
for t in range(1, 4):
    rows = np.array([3, 17, 3, 49, 3], np.uint32)
    vals = rng.standard_normal((5, 6)).astype(np.float32)
    table.set_grad(rows, vals)
    sparse.step()
    for r in np.unique(rows):
        g = np.zeros(6, np.float32)
        for i in np.nonzero(rows == r)[0]:
            g += vals[i]  # float32, in position order
        g = g.astype(np.float64)
        m_t[r] += 0.2 * (g - m_t[r])
        v_t[r] += 0.01 * (g * g - v_t[r])
        want_t[r] -= 0.05 * np.sqrt(1 - 0.99 ** t) / (1 - 0.8 ** t) * m_t[r] / (np.sqrt(v_t[r]) + 1e-8)
got_t = table.numpy()
check(np.allclose(got_t, want_t, rtol=1e-5, atol=1e-6), f"SparseAdam: max error {np.abs(got_t - want_t).max()}")
check(np.array_equal(got_t[[0, 1, 2, 4]], t0[[0, 1, 2, 4]]), "SparseAdam changed untouched rows")
check(np.allclose(sparse.state(table, "exp_avg"), m_t, rtol=1e-5, atol=1e-7), "SparseAdam exp_avg")
check(sparse.report()["rows_updated"] == 3, f"rows updated: {sparse.report()}")
sparse.set_options(lr=0.05)  # (the same lr: the binding, and the options kept)
try:
    table.set_grad([-1], np.ones((1, 6), np.float32))
    check(False, "a negative row was taken")
except ValueError:
    pass
table.set_grad([2, 50], np.ones((2, 6), np.float32))
try:
    sparse.step()
    check(False, "row 50 of 50 taken")
except vkoptim.Error as e:
    check("indices[1] = 50" in str(e), f"the bad index is named: {e}")
check(np.array_equal(table.numpy(), got_t), "a refused sparse step changed the table")

# Refusals: unknown options (TypeError, as torch), bad values (vkoptim.Error naming the field).
try:
    vkoptim.Adam([w], lr=1e-3, momentum=0.9)
    check(False, "Adam took momentum")
except TypeError as e:
    check("momentum" in str(e), f"the unknown option is named: {e}")
try:
    vkoptim.Adam([w], lr=-1.0)
    check(False, "a negative lr was taken")
except vkoptim.Error as e:
    check(e.status == "invalid_argument" and "lr" in str(e), f"bad lr refused naming it: {e}")
try:
    vkoptim.Adam([w], betas=(0.9,))
    check(False, "one beta was taken")
except ValueError:
    pass
check(ctx.validation_messages == 0, f"validation messages: {ctx.validation_messages}")

if failures:
    sys.exit(f"{len(failures)} failures")
print(f"python module: ok on {ctx.device_name}")
