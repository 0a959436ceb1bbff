#!/usr/bin/env python3
"""Writes the seed inputs of the C API fuzzer (tests/fuzz/corpus/) in the format c_api_fuzz.cpp
reads: one operation after another, each an opcode byte and its argument bytes. The seeds cover
every rule and every kind of bad argument once; libFuzzer mutates them from there.

Usage: tests/fuzz/make_corpus.py [output dir]   (default: tests/fuzz/corpus next to this file)
"""
import hashlib
import os
import sys

# Opcodes (Session::run_op).
CREATE, DESTROY, WRITE, READ, SET_ROWS, COUNT = 0, 2, 3, 4, 5, 6
OPT_CREATE, OPT_DESTROY, STEP, SET_LR, SET_HYPER = 7, 9, 10, 12, 13
READ_STATE, WRITE_STATE, MEMORY, CTX_QUERY, CTX_BAD, DEFAULTS = 14, 15, 16, 17, 18, 19

# Indices into the harness's tables.
STATE_NAMES = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "step", "sum", "square_avg",
               "grad_avg", "acc_delta", "exp_inf", "ax", "eta", "mu", "mu_product", "prev", "step_size", "z", "x",
               "lr_max", "weight_sum", "row_var", "col_var", "variance", "master_param", "slow_param", "sam_e", "",
               "bogus", None]
FIRST_SLOT = {0: "momentum_buffer", 1: "exp_avg", 2: "exp_avg_sq", 3: "sum", 4: "square_avg", 5: "acc_delta",
              6: "exp_inf", 7: "mu_product", 8: "exp_avg", 9: "ax", 10: "step_size", 11: "exp_avg", 12: "z",
              13: "exp_avg_sq", 14: "variance"}
U32_FIELDS = ["nesterov", "maximize", "amsgrad", "momentum_form", "warmup_steps", "decay_at_z", "centered",
              "eps_in_sqrt", "decoupled_weight_decay", "bias_correction", "state_dtype", "master_weights",
              "rounding"]
DOUBLES = [0.0, -0.0, 1e-3, 0.1, 0.5, 0.9, 0.999, 1.0, 1.5, 2.0, 10.0, -1.0, -1e-3, 1e-8, 1e308, 5e-324, "inf",
           "-inf", "nan", 1e6]
DOUBLE_FIELDS = ["lr", "momentum", "dampening", "weight_decay", "beta1", "beta2", "eps", "alpha", "rho", "lr_decay",
                 "initial_accumulator_value", "momentum_decay", "lambd", "t0", "etaminus", "etaplus",
                 "step_size_min", "step_size_max", "r", "weight_lr_power", "min_trust_ratio", "max_trust_ratio",
                 "beta2_decay", "eps2", "d"]
U32S = [0, 1, 2, 3, 4, 255, 0x7FFFFFFF, 0xFFFFFFFF]
U64_FIELDS = ["seed", "min_8bit_elements"]
U64S = [0, 1, 255, 256, 4096, 1 << 32, (1 << 64) - 1]


class Seed:
    def __init__(self):
        self.b = bytearray()

    def u8(self, *values):
        self.b += bytes(v & 0xFF for v in values)
        return self

    def u16(self, v):
        return self.u8(v, v >> 8)

    # Tensors: ctx 0 or 1 (3: NULL); dtype 0 f32, 1 f16, 2 bf16, 240+: not a dtype.
    def create(self, count, ctx=0, dtype=0, data=True, pattern=0):
        # Selector 0: 1 + v % 300; 160: 1 + v % 65536.
        self.u8(CREATE, ctx, dtype, 0 if count <= 300 else 160).u16(count - 1)
        self.u8(1 if data else 0)
        if data:
            self.u8(pattern)
        return self.u8(1)  # out is not NULL

    def create_sel(self, sel, v=0, ctx=0, dtype=0):
        """A count chosen by selector: 200-209 zero, 210-234 overflowing, 235+ huge."""
        return self.u8(CREATE, ctx, dtype, sel).u16(v).u8(0, 1)

    def destroy(self, t):
        return self.u8(DESTROY, t)

    def write(self, t, count_sel=0, pattern=0, readback=1):
        return self.u8(WRITE, t, count_sel, pattern, 1, readback)

    def read(self, t, count_sel=0):
        return self.u8(READ, t, count_sel, 1)

    def set_rows(self, t, v):
        return self.u8(SET_ROWS, t, 8).u16(v - 1)  # choice 8: v % 64 + 1

    def hyper(self, edits=(), other_rule=None):
        head = len(edits) | (0x80 if other_rule is not None else 0)
        self.u8(head)
        if other_rule is not None:
            self.u8(other_rule)
        for e in edits:
            self.u8(*e)
        return self

    def optimizer(self, rule, groups, ctx=0, edits=()):
        """groups: lists of (param, grad) tensor selectors."""
        self.u8(OPT_CREATE, ctx, rule, len(groups))
        for pairs in groups:
            self.hyper(edits)
            self.u8(len(pairs))
            for p, g in pairs:
                self.u8(p, g)
        return self

    def step(self, o=0, n=1):
        return self.u8(STEP, o, n - 1)

    def read_state(self, o, t, name, count_sel=0):
        return self.u8(READ_STATE, o, t, STATE_NAMES.index(name), count_sel, 1)

    def write_state(self, o, t, name, count_sel=0, pattern=0):
        return self.u8(WRITE_STATE, o, t, STATE_NAMES.index(name), count_sel, pattern, 1)


def dbl(field, value):
    return (0, DOUBLE_FIELDS.index(field), DOUBLES.index(value))


def u32(field, value):
    return (3, U32_FIELDS.index(field), U32S.index(value))


def u64(field, value):
    return (5, U64_FIELDS.index(field), U64S.index(value))


def pair(s, n=257, ctx=0, dtypes=(0, 0)):
    """Creates a parameter and a gradient; the gradient gets ordinary values."""
    s.create(n, ctx, dtypes[0], pattern=0)
    s.create(n, ctx, dtypes[1], pattern=4)
    return s


def seeds():
    out = {}
    for rule in range(15):
        s = pair(Seed())
        s.optimizer(rule, [[(0, 1)]]).step(0, 3).read_state(0, 0, FIRST_SLOT[rule]).read_state(0, 0, "step")
        s.write_state(0, 0, "step", pattern=1).step(0, 1)
        out[f"rule{rule:02d}"] = s
    # Adafactor on a 2-D tensor, two groups of SGD with momentum.
    s = pair(Seed(), 12).set_rows(0, 3).optimizer(14, [[(0, 1)]]).step(0, 2).read_state(0, 0, "row_var", 255)
    out["adafactor_2d"] = s
    s = pair(pair(Seed()), 40).optimizer(0, [[(0, 1)], [(2, 3)]], edits=[dbl("momentum", 0.9)])
    out["two_groups"] = s.step(0, 2).u8(SET_LR, 0, 1, 3).step(0, 1)
    # Mixed precision: bf16 parameters, f16 gradients, masters, 8-bit state for small tensors.
    s = pair(Seed(), 300, dtypes=(2, 1))
    s.optimizer(1, [[(0, 1)]], edits=[u32("master_weights", 1), u32("state_dtype", 3), u64("min_8bit_elements", 0)])
    out["adam_q8_bf16"] = s.step(0, 2).read_state(0, 0, "exp_avg").read_state(0, 0, "master_param")
    s = pair(Seed(), 256, dtypes=(1, 1)).optimizer(11, [[(0, 1)]], edits=[u32("state_dtype", 2), u32("rounding", 1)])
    out["lion_bf16_stochastic"] = s.step(0, 2)
    s = pair(Seed(), 64).optimizer(1, [[(0, 1)]], edits=[(7, 0, 1), u64("min_8bit_elements", 0)])  # slot dtypes
    out["adam_slot_dtypes"] = s.step(0, 1)
    # Destroyed handles: tensors, then an optimizer, used and destroyed again.
    s = Seed().create(10).destroy(0).write(0).read(0).destroy(0).u8(COUNT, 0).set_rows(0, 2)
    out["dead_tensor"] = s
    s = pair(Seed(), 10).destroy(1).optimizer(0, [[(0, 1)]])
    out["dead_tensor_in_optimizer"] = s
    s = pair(Seed(), 10).optimizer(1, [[(0, 1)]]).u8(OPT_DESTROY, 0).step(0).u8(SET_LR, 0, 0, 3)
    s.read_state(0, 0, "exp_avg").write_state(0, 0, "step").u8(MEMORY, 0, 0).u8(OPT_DESTROY, 0)
    s.u8(SET_HYPER, 0, 0).hyper().u8(1)
    out["dead_optimizer"] = s
    # Tensors destroyed while their optimizer lives: steps keep working.
    s = pair(Seed(), 100).optimizer(2, [[(0, 1)]]).destroy(0).destroy(1).step(0, 3).read_state(0, 0, "exp_avg")
    out["orphaned_tensors"] = s.write_state(0, 0, "exp_avg_sq")
    # Tensors of the other context.
    out["foreign_param"] = Seed().create(10, ctx=1).create(10).optimizer(0, [[(0, 1)]])
    out["foreign_grad"] = Seed().create(10).create(10, ctx=1).optimizer(0, [[(0, 1)]])
    out["foreign_context"] = pair(Seed(), 10).optimizer(0, [[(0, 1)]], ctx=1)
    out["second_context"] = pair(Seed(), 33, ctx=1).optimizer(13, [[(0, 1)]], ctx=1).step(0, 2)
    # Sizes: zero, every overflowing and huge count, each dtype.
    s = Seed()
    for dtype in (0, 1, 2):
        s.create_sel(200, dtype=dtype)
        for k in range(6):
            s.create_sel(210, k, dtype=dtype)
        for k in range(5):
            s.create_sel(235, k, dtype=dtype)
    out["sizes"] = s
    out["bad_dtype"] = Seed().u8(CREATE, 0, 240, 0).u16(5).u8(0, 1).u8(CREATE, 0, 250, 0).u16(5).u8(0, 1)
    # Wrong counts for tensors and state.
    s = Seed().create(20)
    for sel in (176, 192, 208, 216, 217, 218, 219, 220, 221):
        s.write(0, sel).read(0, sel)
    out["wrong_tensor_counts"] = s
    s = pair(Seed(), 20).optimizer(1, [[(0, 1)]])
    for sel in (176, 192, 208, 216, 217, 218):
        s.read_state(0, 0, "exp_avg", sel).write_state(0, 0, "exp_avg", sel).write_state(0, 0, "step", sel)
    s.read_state(0, 230, "exp_avg").write_state(0, 240, "step").read_state(0, 0, "bogus").read_state(0, 0, None)
    out["wrong_state_counts"] = s
    # Bad hyperparameters at creation and later, bad struct sizes, bad rules.
    for field, value in [("lr", "nan"), ("lr", -1.0), ("beta1", 1.0), ("eps", "-inf"), ("weight_decay", "inf")]:
        s = pair(Seed(), 8).optimizer(1, [[(0, 1)]], edits=[dbl(field, value)])
        out[f"bad_{field}_{value}"] = s
    s = pair(Seed(), 8).optimizer(0, [[(0, 1)]])
    for lr in range(len(DOUBLES)):
        s.u8(SET_LR, 0, 0, lr)
    s.u8(SET_LR, 0, 200, 0).u8(SET_HYPER, 0, 0).hyper([(6, 0, 0)]).u8(1)
    s.u8(SET_HYPER, 0, 0).hyper([u32("state_dtype", 2)]).u8(1).u8(SET_HYPER, 0, 0).hyper([], other_rule=1).u8(1)
    out["set_hyperparameters"] = s.step(0, 1)
    s = Seed()
    for rule in (0, 14, 228):  # 228: kRules, the first value past the rules
        s.u8(DEFAULTS, rule)
    out["bad_rules"] = s.u8(OPT_CREATE, 0, 228, 1).hyper().u8(0)
    # Context calls.
    s = Seed()
    for b in range(0, 40):
        s.u8(CTX_QUERY, b % 4, b)
    for b in (0, 1, 2, 3):
        s.u8(CTX_BAD, b)
    out["contexts"] = s
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    os.makedirs(target, exist_ok=True)
    for name, seed in seeds().items():
        data = bytes(seed.b)
        path = os.path.join(target, f"seed-{name}-{hashlib.sha1(data).hexdigest()[:8]}")
        with open(path, "wb") as f:
            f.write(data)
    print(f"{len(seeds())} seeds in {target}")


if __name__ == "__main__":
    main()
