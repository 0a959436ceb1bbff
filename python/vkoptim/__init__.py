"""vkoptim from Python: ctypes over the C API (include/vkoptim/vkoptim.h), numpy arrays in and
out, and torch-like optimizer classes and option names:

    import numpy as np, vkoptim
    ctx = vkoptim.Context()
    w = vkoptim.Parameter(ctx, np.zeros(1000, np.float32))
    opt = vkoptim.AdamW([w], lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2)
    w.grad = gradient            # a numpy array (float32), written to the device
    opt.step()
    w.numpy()                    # the updated parameter

Parameters and gradients live on the device; `Parameter.numpy()` and `Optimizer.state(p, name)`
read them back. Param groups are dicts as in torch: [{"params": [w1], "lr": 1e-2}, {"params": [w2]}].
The shared library is VKOPTIM_LIBRARY, else libvkoptim.so from the loader's search path.
"""
import ctypes
import os

import numpy as np

__all__ = ["Error", "Context", "Parameter", "Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta",
           "Adamax", "NAdam", "RAdam", "ASGD", "Rprop", "Lion", "ScheduleFreeAdamW", "LAMB", "Adafactor",
           "ADOPT", "Ftrl", "StableAdamW", "AdEMAMix", "Muon", "EmbeddingTable", "SparseAdam", "SparseAdagrad",
           "SparseFtrl"]


class Error(RuntimeError):
    """A refused C API call: `status` is its vko_status, the message names the argument."""

    STATUS = {1: "invalid_argument", 2: "unsupported", 3: "out_of_memory", 4: "vulkan_error", 5: "invalid_state",
              6: "not_found", 7: "internal_error", 8: "io_error"}

    def __init__(self, status, message):
        super().__init__(f"{self.STATUS.get(status, status)}: {message}")
        self.status = self.STATUS.get(status, str(status))


class _ContextDesc(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("device_index", ctypes.c_int32),
                ("enable_validation", ctypes.c_uint32), ("force_staging", ctypes.c_uint32),
                ("addressing", ctypes.c_uint32)]


class _Hyper(ctypes.Structure):
    """vko_hyperparams, field by field (checked against the library's struct_size on load)."""
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
        [("lookahead_alpha", ctypes.c_double), ("sam_rho", ctypes.c_double), ("use_nvlamb", ctypes.c_uint32),
         ("use_clipping", ctypes.c_uint32), ("clip_exponent", ctypes.c_double)] + \
        [(name, ctypes.c_double) for name in ("learning_rate_power", "l1", "l2", "l2_shrinkage", "beta")] + \
        [("beta3", ctypes.c_double), ("beta3_warmup", ctypes.c_uint32), ("alpha_warmup", ctypes.c_uint32),
         ("kahan_summation", ctypes.c_uint32), ("ema_decay", ctypes.c_double), ("ema_warmup", ctypes.c_uint32),
         ("ema_update_after_step", ctypes.c_uint32)] + \
        [(name, ctypes.c_double) for name in ("ema_inv_gamma", "ema_power", "ema_min_decay")] + \
        [("cautious", ctypes.c_uint32)] + \
        [(name, ctypes.c_double) for name in ("ns_a", "ns_b", "ns_c")] + \
        [(name, ctypes.c_uint32) for name in ("ns_steps", "adjust_lr", "ns_bf16", "use_muon")] + \
        [("adam_eps", ctypes.c_double), ("rank1_second_moment", ctypes.c_uint32)]


class _SparseTable(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("param", ctypes.c_void_p), ("indices", ctypes.c_void_p),
                ("values", ctypes.c_void_p), ("dim", ctypes.c_uint32)]


class _SparseReport(ctypes.Structure):
    _fields_ = [("step", ctypes.c_uint64)] + [(name, ctypes.c_uint32) for name in (
        "skipped", "bad_indices", "bad_table", "first_bad_position", "first_bad_index", "rows_updated")]


class _ParamGroup(ctypes.Structure):
    _fields_ = [("hyper", _Hyper), ("params", ctypes.POINTER(ctypes.c_void_p)),
                ("grads", ctypes.POINTER(ctypes.c_void_p)), ("count", ctypes.c_size_t)]


_lib = None
_P, _F = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)


def _library():
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(os.environ.get("VKOPTIM_LIBRARY", "libvkoptim.so"))
    signatures = {
        "vko_last_error": (ctypes.c_char_p, []),
        "vko_context_desc_defaults": (_ContextDesc, []),
        "vko_context_create": (ctypes.c_int, [ctypes.POINTER(_ContextDesc), ctypes.POINTER(_P)]),
        "vko_context_destroy": (None, [_P]),
        "vko_context_device_name": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t]),
        "vko_context_validation_message_count": (ctypes.c_uint64, [_P]),
        "vko_tensor_create": (ctypes.c_int, [_P, _F, ctypes.c_size_t, ctypes.POINTER(_P)]),
        "vko_tensor_destroy": (None, [_P]),
        "vko_tensor_set_rows": (ctypes.c_int, [_P, ctypes.c_uint64]),
        "vko_tensor_set_name": (ctypes.c_int, [_P, ctypes.c_char_p]),
        "vko_tensor_write": (ctypes.c_int, [_P, _F, ctypes.c_size_t]),
        "vko_tensor_read": (ctypes.c_int, [_P, _F, ctypes.c_size_t]),
        "vko_hyperparams_defaults": (_Hyper, [ctypes.c_int]),
        "vko_optimizer_create": (ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(_ParamGroup), ctypes.c_size_t,
                                                ctypes.POINTER(_P)]),
        "vko_optimizer_destroy": (None, [_P]),
        "vko_optimizer_set_hyperparams": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(_Hyper)]),
        "vko_optimizer_step": (ctypes.c_int, [_P]),
        "vko_optimizer_read_state": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_char_p, _F, ctypes.c_size_t]),
        "vko_optimizer_write_state": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_char_p, _F, ctypes.c_size_t]),
        "vko_optimizer_save": (ctypes.c_int, [_P, ctypes.c_char_p]),
        "vko_optimizer_load": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint32]),
        "vko_optimizer_save_to_memory": (ctypes.c_int, [_P, ctypes.c_void_p, ctypes.c_size_t,
                                                        ctypes.POINTER(ctypes.c_size_t)]),
        "vko_optimizer_load_from_memory": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]),
        "vko_tensor_create_typed": (ctypes.c_int, [_P, ctypes.c_int, _F, ctypes.c_size_t, ctypes.POINTER(_P)]),
        "vko_tensor_write_indices": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint32), ctypes.c_size_t]),
        "vko_sparse_optimizer_create": (ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(_Hyper),
                                                       ctypes.POINTER(_SparseTable), ctypes.c_size_t,
                                                       ctypes.POINTER(_P)]),
        "vko_sparse_optimizer_destroy": (None, [_P]),
        "vko_sparse_optimizer_step": (ctypes.c_int, [_P]),
        "vko_sparse_optimizer_set_hyperparams": (ctypes.c_int, [_P, ctypes.POINTER(_Hyper)]),
        "vko_sparse_optimizer_last_report": (ctypes.c_int, [_P, ctypes.POINTER(_SparseReport)]),
        "vko_sparse_optimizer_read_state": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_char_p, _F,
                                                           ctypes.c_size_t]),
        "vko_sparse_optimizer_write_state": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_char_p, _F,
                                                            ctypes.c_size_t]),
    }
    for name, (restype, argtypes) in signatures.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes
    if lib.vko_hyperparams_defaults(0).struct_size != ctypes.sizeof(_Hyper):
        raise ImportError("this module's vko_hyperparams does not match the library's")
    _lib = lib
    return lib


def _check(status):
    if status != 0:
        raise Error(status, _library().vko_last_error().decode())


def _floats(array):
    """A C-contiguous float32 copy of `array` and a pointer to it."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    return a, a.ctypes.data_as(_F)


class Context:
    """A Vulkan device (the default one: VKOPTIM_DEVICE, then GPU > iGPU > CPU)."""

    def __init__(self, device=None, validation=False):
        lib = _library()
        desc = lib.vko_context_desc_defaults()
        if device is not None:
            desc.device_index = int(device)
        desc.enable_validation = 1 if validation else 0
        self._handle = _P()
        _check(lib.vko_context_create(ctypes.byref(desc), ctypes.byref(self._handle)))

    @property
    def device_name(self):
        name = ctypes.create_string_buffer(256)
        _check(_library().vko_context_device_name(self._handle, name, 256))
        return name.value.decode()

    @property
    def validation_messages(self):
        return _library().vko_context_validation_message_count(self._handle)

    def __del__(self):
        if getattr(self, "_handle", None):
            _library().vko_context_destroy(self._handle)
            self._handle = None


class _DeviceArray:
    def __init__(self, ctx, values):
        self._ctx = ctx  # kept alive while the tensor is
        values, ptr = _floats(values)
        self.shape, self.size = values.shape, values.size
        self._handle = _P()
        _check(_library().vko_tensor_create(ctx._handle, ptr, values.size, ctypes.byref(self._handle)))

    def write(self, values):
        values, ptr = _floats(values)
        if values.size != self.size:
            raise ValueError(f"{values.size} values for a tensor of {self.size}")
        _check(_library().vko_tensor_write(self._handle, ptr, values.size))

    def numpy(self):
        out = np.empty(self.size, np.float32)
        _check(_library().vko_tensor_read(self._handle, out.ctypes.data_as(_F), out.size))
        return out.reshape(self.shape)

    def __del__(self):
        if getattr(self, "_handle", None):
            _library().vko_tensor_destroy(self._handle)
            self._handle = None


class Parameter(_DeviceArray):
    """A float32 parameter on the device with its gradient beside it (`grad`: assign a numpy
    array). 2-D parameters keep their shape (Adafactor factors them). `name` is the key of its
    state in checkpoints ("state.<name>.exp_avg"; default: its index in the optimizer)."""

    def __init__(self, ctx, values, name=None):
        super().__init__(ctx, values)
        self.name = name
        if name:
            _check(_library().vko_tensor_set_name(self._handle, name.encode()))
        self._grad = _DeviceArray(ctx, np.zeros(self.shape, np.float32))
        if len(self.shape) == 2:
            _check(_library().vko_tensor_set_rows(self._handle, self.shape[0]))

    @property
    def grad(self):
        return self._grad.numpy()

    @grad.setter
    def grad(self, values):
        self._grad.write(values)


# torch's option names -> vko_hyperparams fields (tuples: several fields).
_OPTION_FIELDS = {
    "lr": ("lr",), "momentum": ("momentum",), "dampening": ("dampening",), "weight_decay": ("weight_decay",),
    "betas": ("beta1", "beta2"), "eps": ("eps",), "nesterov": ("nesterov",), "maximize": ("maximize",),
    "amsgrad": ("amsgrad",), "alpha": ("alpha",), "rho": ("rho",), "lr_decay": ("lr_decay",),
    "initial_accumulator_value": ("initial_accumulator_value",), "momentum_decay": ("momentum_decay",),
    "lambd": ("lambd",), "t0": ("t0",), "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"), "r": ("r",), "weight_lr_power": ("weight_lr_power",),
    "warmup_steps": ("warmup_steps",), "centered": ("centered",),
    "decoupled_weight_decay": ("decoupled_weight_decay",), "bias_correction": ("bias_correction",),
    "beta2_decay": ("beta2_decay",), "d": ("d",), "trust_clip": ("min_trust_ratio", "max_trust_ratio"),
    "use_nvlamb": ("use_nvlamb",), "use_clipping": ("use_clipping",), "clip_exponent": ("clip_exponent",),
    "learning_rate_power": ("learning_rate_power",), "l1": ("l1",), "l2": ("l2",), "l2_shrinkage": ("l2_shrinkage",),
    "beta": ("beta",), "beta3_warmup": ("beta3_warmup",), "alpha_warmup": ("alpha_warmup",),
    "cautious": ("cautious",),
    "ns_coefficients": ("ns_a", "ns_b", "ns_c"), "ns_steps": ("ns_steps",), "adjust_lr_fn": ("adjust_lr",),
    "ns_bf16": ("ns_bf16",), "use_muon": ("use_muon",), "adam_eps": ("adam_eps",),
}

# torch.optim.Muon's adjust_lr_fn names -> vkoptim::MuonLrAdjust.
_ADJUST_LR = {None: 0, "original": 0, "match_rms_adamw": 1, "spectral_unclamped": 2}


class _Options:
    """Options by torch's names -> vko_hyperparams for rule RULE, which takes OPTIONS."""
    RULE = None
    OPTIONS = ()
    FIELDS = {}  # the rule's own meaning of an option name, over _OPTION_FIELDS

    def _hyper(self, options, where):
        lib = _library()
        hyper = lib.vko_hyperparams_defaults(self.RULE)
        for name, value in options.items():
            if name not in self.OPTIONS:
                raise TypeError(f"{type(self).__name__}: {where}: unknown option {name!r} "
                                f"(it takes {', '.join(self.OPTIONS)})")
            fields = {**_OPTION_FIELDS, **self.FIELDS}[name]
            values = tuple(value) if len(fields) > 1 else (value,)
            if len(values) != len(fields):
                raise ValueError(f"{type(self).__name__}: {name} takes {len(fields)} values, got {value!r}")
            for f, v in zip(fields, values):
                if v is None and f in ("beta3_warmup", "alpha_warmup"):
                    v = 0  # the reference's None: no warmup
                if f == "adjust_lr":
                    if v not in _ADJUST_LR:
                        raise ValueError(f"{type(self).__name__}: adjust_lr_fn must be one of {list(_ADJUST_LR)}")
                    v = _ADJUST_LR[v]
                setattr(hyper, f, type(getattr(hyper, f))(v) if not isinstance(v, bool) else int(v))
        return hyper


class Optimizer(_Options):
    """An optimizer of rule RULE over param groups; the subclasses name the rule and the options
    it takes (OPTIONS), with the library's defaults (torch's)."""

    def __init__(self, params, **options):
        lib = _library()
        groups = list(params)
        if not groups:
            raise ValueError("an optimizer needs parameters")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups, self._params = [], []
        c_groups = (_ParamGroup * len(groups))()
        self._arrays = []
        ctx = None
        for g, group in enumerate(groups):
            group = dict(group)
            ps = list(group.pop("params"))
            hyper = self._hyper({**options, **group}, f"param group {g}")
            handles = (_P * len(ps))(*[p._handle for p in ps])
            grads = (_P * len(ps))(*[p._grad._handle for p in ps])
            self._arrays += [handles, grads]
            c_groups[g] = _ParamGroup(hyper, handles, grads, len(ps))
            self.param_groups.append({**options, **group, "params": ps})
            self._params += ps
        self._handle = _P()
        _check(lib.vko_optimizer_create(self._params[0]._ctx._handle, self.RULE, c_groups, len(groups),
                                        ctypes.byref(self._handle)))

    def step(self):
        _check(_library().vko_optimizer_step(self._handle))

    def _index(self, param):
        for i, p in enumerate(self._params):
            if p is param:
                return i
        raise ValueError("not a parameter of this optimizer")

    def state(self, param, name):
        """The state `name` (torch's: "exp_avg", "momentum_buffer", "step", ...) of `param`."""
        i = self._index(param)
        n = 1 if name == "step" else param.size
        out = np.empty(n, np.float32)
        _check(_library().vko_optimizer_read_state(self._handle, i, name.encode(), out.ctypes.data_as(_F), n))
        return out if name == "step" else out.reshape(param.shape)

    def set_state(self, param, name, values):
        values, ptr = _floats(values)
        _check(_library().vko_optimizer_write_state(self._handle, self._index(param), name.encode(), ptr, values.size))

    def save(self, path):
        """A checkpoint (safetensors; README "Checkpoints"), replacing `path` atomically."""
        _check(_library().vko_optimizer_save(self._handle, os.fsencode(path)))

    def load(self, path, convert_storage=False):
        _check(_library().vko_optimizer_load(self._handle, os.fsencode(path), 1 if convert_storage else 0))

    def state_bytes(self):
        """The checkpoint as bytes."""
        size = ctypes.c_size_t()
        _check(_library().vko_optimizer_save_to_memory(self._handle, None, 0, ctypes.byref(size)))
        out = ctypes.create_string_buffer(size.value)
        _check(_library().vko_optimizer_save_to_memory(self._handle, out, size.value, ctypes.byref(size)))
        return out.raw[:size.value]

    def load_bytes(self, data, convert_storage=False):
        data = bytes(data)
        _check(_library().vko_optimizer_load_from_memory(self._handle, data, len(data), 1 if convert_storage else 0))

    def __del__(self):
        if getattr(self, "_handle", None):
            _library().vko_optimizer_destroy(self._handle)
            self._handle = None


def _rule(name, rule, options, doc, fields=None):
    return type(name, (Optimizer,), {"RULE": rule, "OPTIONS": ("lr",) + options, "FIELDS": fields or {},
                                     "__doc__": doc})


_WD = ("weight_decay", "maximize")
SGD = _rule("SGD", 0, ("momentum", "dampening", "nesterov", "decoupled_weight_decay", "cautious") + _WD,
            "torch.optim.SGD (cautious: timm's caution)")
Adam = _rule("Adam", 1, ("betas", "eps", "amsgrad", "decoupled_weight_decay", "bias_correction", "cautious") + _WD,
             "torch.optim.Adam (cautious: timm's caution)")
AdamW = _rule("AdamW", 2, ("betas", "eps", "amsgrad", "bias_correction", "cautious") + _WD,
              "torch.optim.AdamW (cautious: timm's caution, C-AdamW)")
Adagrad = _rule("Adagrad", 3, ("lr_decay", "initial_accumulator_value", "eps", "decoupled_weight_decay") + _WD,
                "torch.optim.Adagrad")
RMSprop = _rule("RMSprop", 4, ("alpha", "eps", "momentum", "centered", "decoupled_weight_decay") + _WD,
                "torch.optim.RMSprop")
Adadelta = _rule("Adadelta", 5, ("rho", "eps", "decoupled_weight_decay") + _WD, "torch.optim.Adadelta")
Adamax = _rule("Adamax", 6, ("betas", "eps", "decoupled_weight_decay") + _WD, "torch.optim.Adamax")
NAdam = _rule("NAdam", 7, ("betas", "eps", "momentum_decay", "decoupled_weight_decay") + _WD, "torch.optim.NAdam")
RAdam = _rule("RAdam", 8, ("betas", "eps", "decoupled_weight_decay") + _WD, "torch.optim.RAdam")
ASGD = _rule("ASGD", 9, ("lambd", "alpha", "t0") + _WD, "torch.optim.ASGD")
Rprop = _rule("Rprop", 10, ("etas", "step_sizes", "maximize"), "torch.optim.Rprop")
Lion = _rule("Lion", 11, ("betas", "cautious") + _WD, "Lion (Chen et al. 2023; cautious: timm's caution)")
ScheduleFreeAdamW = _rule("ScheduleFreeAdamW", 12, ("betas", "eps", "warmup_steps", "r", "weight_lr_power") + _WD,
                          "Schedule-Free AdamW (Defazio et al. 2024)")
LAMB = _rule("LAMB", 13, ("betas", "eps", "bias_correction", "trust_clip", "use_nvlamb") + _WD,
             "LAMB (You et al. 2019)")
Adafactor = _rule("Adafactor", 14, ("beta2_decay", "eps", "d") + _WD, "torch.optim.Adafactor (eps: (eps1, eps2))",
                  {"eps": ("eps", "eps2")})
ADOPT = _rule("ADOPT", 15, ("betas", "eps", "decoupled_weight_decay", "use_clipping", "clip_exponent") + _WD,
              "ADOPT (Taniguchi et al. 2024)")
Ftrl = _rule("Ftrl", 16, ("learning_rate_power", "initial_accumulator_value", "l1", "l2", "l2_shrinkage", "beta",
                          "maximize"), "FTRL-Proximal (TensorFlow/Keras Ftrl)")
StableAdamW = _rule("StableAdamW", 17, ("betas", "eps") + _WD, "StableAdamW (Wortsman et al. 2023; optimi)")
Muon = _rule("Muon", 19, ("weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps",
                          "adjust_lr_fn", "ns_bf16", "use_muon", "betas", "adam_eps"),
             "torch.optim.Muon on 2-D parameters; groups with use_muon=False run AdamW (betas, adam_eps) as "
             "Keller Jordan's MuonWithAuxAdam")
AdEMAMix = _rule("AdEMAMix", 18, ("betas", "alpha", "beta3_warmup", "alpha_warmup", "eps") + _WD,
                 "AdEMAMix (Pagliardini et al. 2024; apple/ml-ademamix): betas=(beta1, beta2, beta3)",
                 {"betas": ("beta1", "beta2", "beta3")})


SKIP_ROW = 0xFFFFFFFF


class EmbeddingTable:
    """A float32 table (rows x dim) on the device and its row-sparse gradient: `capacity` positions,
    each a row index and a row of values (torch's uncoalesced sparse gradient of an embedding).
    `set_grad(indices, values)` writes them; positions past len(indices) are padding (skipped)."""

    def __init__(self, ctx, values, capacity, name=None):
        values = np.asarray(values, np.float32)
        if values.ndim != 2:
            raise ValueError("an embedding table is 2-D (rows x dim)")
        self.rows, self.dim, self.capacity = values.shape[0], values.shape[1], int(capacity)
        self._table = _DeviceArray(ctx, values)
        if name:
            _check(_library().vko_tensor_set_name(self._table._handle, name.encode()))
        self._values = _DeviceArray(ctx, np.zeros(self.capacity * self.dim, np.float32))
        self._indices = _P()
        _check(_library().vko_tensor_create_typed(ctx._handle, 3, None, self.capacity, ctypes.byref(self._indices)))
        self._ctx = ctx
        self.set_grad([], np.zeros((0, self.dim), np.float32))

    def set_grad(self, indices, values):
        indices = np.asarray(indices).ravel()
        if indices.size and (indices.dtype.kind not in "iu" or indices.min() < 0 or indices.max() >= SKIP_ROW):
            raise ValueError("gradient rows are whole numbers in [0, 2**32 - 1)")
        indices = indices.astype(np.uint32)
        values = np.asarray(values, np.float32).reshape(len(indices), self.dim)
        if len(indices) > self.capacity:
            raise ValueError(f"{len(indices)} gradient rows for a capacity of {self.capacity}")
        padded = np.full(self.capacity, SKIP_ROW, np.uint32)
        padded[:len(indices)] = indices
        rows = np.zeros((self.capacity, self.dim), np.float32)
        rows[:len(indices)] = values
        _check(_library().vko_tensor_write_indices(
            self._indices, padded.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), self.capacity))
        self._values.write(rows)

    def numpy(self):
        return self._table.numpy()

    def __del__(self):
        if getattr(self, "_indices", None):
            _library().vko_tensor_destroy(self._indices)
            self._indices = None


class SparseOptimizer(_Options):
    """Row-sparse steps of embedding tables (README "Sparse embedding tables"): duplicate rows of
    a gradient summed as torch's coalesce does, the rule run on the rows named."""

    def __init__(self, tables, **options):
        lib = _library()
        self.tables = list(tables)
        if not self.tables:
            raise ValueError("a sparse optimizer needs tables")
        self.options = dict(options)
        hyper = self._hyper(options, "options")
        c_tables = (_SparseTable * len(self.tables))(*[
            _SparseTable(ctypes.sizeof(_SparseTable), t._table._handle, t._indices, t._values._handle, t.dim)
            for t in self.tables])
        self._handle = _P()
        _check(lib.vko_sparse_optimizer_create(self.tables[0]._ctx._handle, self.RULE, ctypes.byref(hyper), c_tables,
                                               len(self.tables), ctypes.byref(self._handle)))

    def step(self):
        """One step; an index outside the table raises vkoptim.Error and changes nothing."""
        _check(_library().vko_sparse_optimizer_step(self._handle))

    def set_options(self, **options):
        """Changes options (lr, ...) from the next step on; the others keep their values."""
        merged = {**self.options, **options}
        hyper = self._hyper(merged, "options")
        _check(_library().vko_sparse_optimizer_set_hyperparams(self._handle, ctypes.byref(hyper)))
        self.options = merged

    def report(self):
        r = _SparseReport()
        _check(_library().vko_sparse_optimizer_last_report(self._handle, ctypes.byref(r)))
        return {name: getattr(r, name) for name, _ in _SparseReport._fields_}

    def state(self, table, name):
        i = self.tables.index(table)
        n = 1 if name == "step" else table.rows * table.dim
        out = np.empty(n, np.float32)
        _check(_library().vko_sparse_optimizer_read_state(self._handle, i, name.encode(), out.ctypes.data_as(_F), n))
        return out if name == "step" else out.reshape(table.rows, table.dim)

    def set_state(self, table, name, values):
        values, ptr = _floats(values)
        _check(_library().vko_sparse_optimizer_write_state(self._handle, self.tables.index(table), name.encode(), ptr,
                                                           values.size))

    def __del__(self):
        if getattr(self, "_handle", None):
            _library().vko_sparse_optimizer_destroy(self._handle)
            self._handle = None


def _sparse_rule(name, rule, options, doc):
    return type(name, (SparseOptimizer,), {"RULE": rule, "OPTIONS": ("lr",) + options, "__doc__": doc})


SparseAdam = _sparse_rule("SparseAdam", 1, ("betas", "eps", "maximize"), "torch.optim.SparseAdam")
SparseAdagrad = _sparse_rule("SparseAdagrad", 3, ("lr_decay", "initial_accumulator_value", "eps", "maximize"),
                             "torch.optim.Adagrad with sparse gradients")
SparseFtrl = _sparse_rule("SparseFtrl", 16, ("learning_rate_power", "initial_accumulator_value", "l1", "l2",
                                             "l2_shrinkage", "beta", "maximize"),
                          "FTRL-Proximal on sparse gradients (TensorFlow's SparseApplyFtrlV2)")
