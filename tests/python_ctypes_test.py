"""Loads the shared library with ctypes (no C++ involved) and runs SGD with momentum,
checked against a scalar computation in Python floats (double)."""
import ctypes
import math
import random
import sys

lib = ctypes.CDLL(sys.argv[1])


class ContextDesc(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("device_index", ctypes.c_int32),
                ("enable_validation", ctypes.c_uint32), ("force_staging", ctypes.c_uint32),
                ("addressing", ctypes.c_uint32)]


class Hyper(ctypes.Structure):
    # Mirrors vko_hyperparams in include/vkoptim/vkoptim.h, field by field.
    _fields_ = [("struct_size", ctypes.c_uint32), ("lr", ctypes.c_double), ("momentum", ctypes.c_double),
                ("dampening", ctypes.c_double), ("weight_decay", ctypes.c_double), ("beta1", ctypes.c_double),
                ("beta2", ctypes.c_double), ("eps", ctypes.c_double), ("nesterov", ctypes.c_uint32),
                ("maximize", ctypes.c_uint32), ("amsgrad", ctypes.c_uint32), ("momentum_form", ctypes.c_uint32)] + \
        [(name, ctypes.c_double) for name in (
            "alpha", "rho", "lr_decay", "initial_accumulator_value", "momentum_decay", "lambd", "t0", "etaminus",
            "etaplus", "step_size_min", "step_size_max", "r", "weight_lr_power", "min_trust_ratio",
            "max_trust_ratio")] + \
        [(name, ctypes.c_uint32) for name in (
            "warmup_steps", "decay_at_z", "centered", "eps_in_sqrt", "decoupled_weight_decay", "bias_correction")] + \
        [(name, ctypes.c_double) for name in ("beta2_decay", "eps2", "d")] + \
        [(name, ctypes.c_uint32) for name in ("state_dtype", "master_weights", "rounding")] + \
        [(name, ctypes.c_uint64) for name in ("seed", "min_8bit_elements")] + \
        [("slot_dtypes", ctypes.c_void_p), ("slot_dtype_count", ctypes.c_size_t), ("eps_root", ctypes.c_double)] + \
        [(name, ctypes.c_uint32) for name in ("amsgrad_max", "decay_order", "dampen_first_step", "lookahead_k")] + \
        [("lookahead_alpha", ctypes.c_double), ("sam_rho", ctypes.c_double)]


class ParamGroup(ctypes.Structure):
    _fields_ = [("hyper", Hyper), ("params", ctypes.POINTER(ctypes.c_void_p)),
                ("grads", ctypes.POINTER(ctypes.c_void_p)), ("count", ctypes.c_size_t)]


lib.vko_context_desc_defaults.restype = ContextDesc
lib.vko_hyperparams_defaults.restype = Hyper
lib.vko_hyperparams_defaults.argtypes = [ctypes.c_int]
assert lib.vko_hyperparams_defaults(0).struct_size == ctypes.sizeof(Hyper), "Hyper does not mirror vko_hyperparams"
lib.vko_last_error.restype = ctypes.c_char_p
lib.vko_context_validation_message_count.restype = ctypes.c_uint64
lib.vko_context_validation_message_count.argtypes = [ctypes.c_void_p]
for name in ("vko_tensor_write", "vko_tensor_read"):
    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
lib.vko_tensor_create.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                                  ctypes.POINTER(ctypes.c_void_p)]
lib.vko_optimizer_create.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ParamGroup), ctypes.c_size_t,
                                     ctypes.POINTER(ctypes.c_void_p)]
lib.vko_optimizer_step.argtypes = [ctypes.c_void_p]
lib.vko_optimizer_set_lr.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_double]
for name in ("vko_optimizer_destroy", "vko_tensor_destroy", "vko_context_destroy"):
    getattr(lib, name).argtypes = [ctypes.c_void_p]


def ok(status):
    if status != 0:
        raise RuntimeError(f"vkoptim status {status}: {lib.vko_last_error().decode()}")


desc = lib.vko_context_desc_defaults()
desc.enable_validation = 1
ctx = ctypes.c_void_p()
ok(lib.vko_context_create(ctypes.byref(desc), ctypes.byref(ctx)))

n = 1001
FloatN = ctypes.c_float * n
rng = random.Random(7)
p0 = [rng.uniform(-1, 1) for _ in range(n)]
p_host = FloatN(*p0)
p_ref = [float(x) for x in p_host]
param, grad = ctypes.c_void_p(), ctypes.c_void_p()
ok(lib.vko_tensor_create(ctx, p_host, n, ctypes.byref(param)))
ok(lib.vko_tensor_create(ctx, None, n, ctypes.byref(grad)))

hyper = lib.vko_hyperparams_defaults(0)  # VKO_RULE_SGD
hyper.lr, hyper.momentum, hyper.nesterov = 0.05, 0.9, 1
params, grads = (ctypes.c_void_p * 1)(param), (ctypes.c_void_p * 1)(grad)
group = ParamGroup(hyper, params, grads, 1)
opt = ctypes.c_void_p()
ok(lib.vko_optimizer_create(ctx, 0, ctypes.byref(group), 1, ctypes.byref(opt)))

buf = [0.0] * n
lr = 0.05
for step in range(30):
    if step == 15:
        lr = 0.01
        ok(lib.vko_optimizer_set_lr(opt, 0, lr))
    g_host = FloatN(*[rng.gauss(0, 1) for _ in range(n)])
    ok(lib.vko_tensor_write(grad, g_host, n))
    ok(lib.vko_optimizer_step(opt))
    for i in range(n):
        g = float(g_host[i])
        buf[i] = g if step == 0 else 0.9 * buf[i] + g
        p_ref[i] -= lr * (g + 0.9 * buf[i])

out = FloatN()
ok(lib.vko_tensor_read(param, out, n))
worst = max(abs(out[i] - p_ref[i]) for i in range(n))
assert worst < 1e-4, f"max |gpu - reference| = {worst}"
assert lib.vko_optimizer_set_lr(opt, 0, -1.0) == 1 and b"lr" in lib.vko_last_error()
assert lib.vko_context_validation_message_count(ctx) == 0
lib.vko_optimizer_destroy(opt)
lib.vko_tensor_destroy(param)
lib.vko_tensor_destroy(grad)
lib.vko_context_destroy(ctx)
print(f"ctypes test passed: 30 SGD-Nesterov steps, max |gpu - reference| = {worst:.3g}")
