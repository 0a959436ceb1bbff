"""Converts between torch.optim state_dicts (torch.save files) and vkoptim checkpoints.

    python3 -m vkoptim.torch_convert to-vkoptim adam.pt adam.safetensors --rule adamw
    python3 -m vkoptim.torch_convert to-torch adam.safetensors adam.pt --rule adamw [--shapes 0=5x3,1=7]

Rules: sgd, adam, adamw (torch's SGD, Adam, AdamW; for Adam and AdamW torch's state_dict does not
say which, so --rule does). Parameter i of torch's state_dict is vkoptim's tensor named
--names[i] (e.g. a model's named_parameters() order), else "i" (tensors without a name go by
their index); to-torch numbers vkoptim's tensors in their param_groups order. to-vkoptim builds the vkoptim optimizer the torch one
describes (through the C API: VKOPTIM_LIBRARY, a Vulkan device) to write a checkpoint it loads;
every parameter needs state (shapes come from it). to-torch reads fp32 and bf16 state (load an
8-bit checkpoint into an fp32 optimizer with convert_storage first); --shapes gives parameters
their torch shapes (default: 1-D, or [rows, cols] as saved).
"""
import argparse
import json
import struct
import zlib

import numpy as np

RULES = ("sgd", "adam", "adamw")
_DTYPES = {"F32": np.float32, "F64": np.float64, "U8": np.uint8}


def read_safetensors(data):
    """(header dict, {name: numpy array}) of a safetensors file's bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = data[base + begin:base + end]
        if t["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, _DTYPES[t["dtype"]])
        tensors[name] = a.reshape(t["shape"])
    return header, tensors


def write_vkoptim(metadata, tensors):
    """A vkoptim checkpoint's bytes: safetensors with the crc32 README "Checkpoints" defines."""
    header, blobs, offset = {"__metadata__": {k: v for k, v in metadata.items() if k != "crc32"}}, [], 0
    for name, a in sorted(tensors.items(), key=lambda kv: -kv[1].dtype.itemsize):
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": {4: "F32", 8: "F64"}[a.dtype.itemsize], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    data = b"".join(blobs)

    def text(h):
        return json.dumps(h, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    crc = zlib.crc32(data, zlib.crc32(text(header)))
    header["__metadata__"]["crc32"] = f"{crc:08x}"
    t = text(header)
    t += b" " * ((8 - len(t) % 8) % 8)
    return struct.pack("<Q", len(t)) + t + data


def _hyper_of(rule, group):
    """vkoptim option names of a torch param group."""
    if rule == "sgd":
        return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
                if k in group}
    return {k: group[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize") if k in group}


def torch_to_vkoptim(state_dict, rule, ctx=None, names=None):
    """The bytes of a vkoptim checkpoint holding torch's `state_dict` of optimizer `rule`; torch's
    parameter i becomes vkoptim's tensor names[i] (default: "i")."""
    import vkoptim
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: one of {', '.join(RULES)}")
    ctx = ctx or vkoptim.Context()
    state = state_dict["state"]
    slots = ("momentum_buffer",) if rule == "sgd" else ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    params, groups = {}, []
    for group in state_dict["param_groups"]:
        ps = []
        for i in group["params"]:
            s = state.get(i, {})
            example = next((s[k] for k in slots if s.get(k) is not None), None)
            if example is None:
                raise ValueError(f"parameter {i} has no state: its shape is unknown")
            shape = tuple(example.shape)
            values = np.zeros(shape if len(shape) <= 2 else (example.numel(),), np.float32)
            params[i] = vkoptim.Parameter(ctx, values, names[i] if names else None)
            ps.append(params[i])
        groups.append({"params": ps, **_hyper_of(rule, group)})
    cls = {"sgd": vkoptim.SGD, "adam": vkoptim.Adam, "adamw": vkoptim.AdamW}[rule]
    if rule != "sgd":
        for g in groups:  # torch's Adam and AdamW differ only in where the decay goes
            g.setdefault("weight_decay", 0.0)
    template = cls(groups)
    header, _ = read_safetensors(template.state_bytes())
    tensors = {}
    for i, p in params.items():
        s, key = state[i], p.name or str(i)
        for k in slots:
            if s.get(k) is not None:
                tensors[f"state.{key}.{k}"] = s[k].detach().cpu().float().numpy().reshape(p.shape)
        step = s.get("step", 1.0)  # torch's SGD keeps none; vkoptim's only needs "not the first"
        tensors[f"state.{key}.step"] = np.array(float(step), np.float32)
    return write_vkoptim(header["__metadata__"], tensors)


def vkoptim_to_torch(data, rule, shapes=None):
    """torch's state_dict of optimizer `rule` from a vkoptim checkpoint's bytes."""
    import torch
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: one of {', '.join(RULES)}")
    header, tensors = read_safetensors(data)
    meta = header["__metadata__"]
    if meta.get("format") != "vkoptim.optimizer":
        raise ValueError("not a vkoptim checkpoint")
    index = {}
    param_groups = []
    for g in json.loads(meta["param_groups"]):
        o = g["options"]
        ids = []
        for name in g["params"]:  # torch numbers parameters in param_groups order
            index[name] = len(index)
            ids.append(index[name])
        if rule == "sgd":
            group = {k: o[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")}
            group.update(foreach=None, differentiable=False)
        else:
            group = {"lr": o["lr"], "betas": (o["beta1"], o["beta2"]), "eps": o["eps"],
                     "weight_decay": o["weight_decay"], "amsgrad": o["amsgrad"], "maximize": o["maximize"],
                     "foreach": None, "capturable": False, "differentiable": False, "fused": False}
        param_groups.append({**group, "params": ids})
    state = {}
    for key, a in tensors.items():
        # "state.<name>.<slot>": names may hold dots, slots do not.
        name, slot = key[len("state."):].rsplit(".", 1)
        if slot == "absmax":
            name, slot = name.rsplit(".", 1)[0], "absmax"
        if slot == "absmax" or a.dtype == np.uint8:
            raise ValueError(f"{key} is 8-bit: load the checkpoint into an fp32 optimizer with convert_storage first")
        i = index[name]
        t = torch.from_numpy(np.array(a, np.float32))
        if slot == "step":
            if rule != "sgd":
                state.setdefault(i, {})["step"] = t.reshape(())
            continue
        if shapes and i in shapes:
            t = t.reshape(shapes[i])
        state.setdefault(i, {})[slot] = t
    return {"state": state, "param_groups": param_groups}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m vkoptim.torch_convert", description=__doc__.split("\n")[0])
    ap.add_argument("direction", choices=("to-vkoptim", "to-torch"))
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--rule", required=True, choices=RULES)
    ap.add_argument("--shapes", default="", help="to-torch: i=AxB,... torch shapes of parameters")
    ap.add_argument("--names", default="", help="to-vkoptim: name0,name1,... vkoptim names of torch's parameters")
    args = ap.parse_args(argv)
    import torch
    if args.direction == "to-vkoptim":
        data = torch_to_vkoptim(torch.load(args.source), args.rule, names=args.names.split(",") if args.names else None)
        with open(args.target, "wb") as f:
            f.write(data)
    else:
        shapes = {}
        for item in filter(None, args.shapes.split(",")):
            i, dims = item.split("=")
            shapes[int(i)] = tuple(int(d) for d in dims.split("x"))
        with open(args.source, "rb") as f:
            torch.save(vkoptim_to_torch(f.read(), args.rule, shapes), args.target)


if __name__ == "__main__":
    main()
