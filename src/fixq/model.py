"""Quantized model archives (``fixq.qmodel/1``) and the int8 inference engine.

:func:`quantize_model` turns a validated float graph (:mod:`fixq.graph`) into a :class:`Model`:
weights quantized (symmetric int8, per-channel or per-tensor), activations calibrated (static) or
left to run time (dynamic), every requantization's multiplier/shift/scale precomputed.
:meth:`Model.save` writes the self-describing archive (docs/engine.md); :meth:`Model.load` reads it
back with ``allow_pickle=False`` and prepacks everything; :meth:`Model.run` executes it.

Static mode is integer-only between the input quantize and the output dequantize: linear and conv
run through ``qlinear`` with the fused output stage (bias, requantization, ReLU/ReLU6 as clamps),
depthwise conv accumulates in int32 and requantizes, add/mul run through ``qadd``/``qmul``, concat
requantizes its inputs to the output's scale, pools work on the integers (max, or TFLite's
average with rounding half away from zero), softmax is computed in float at the output.
"""
import copy
import json
import math
import os
import tempfile

import numpy as np

import fixq

from . import _core, gemm, graph as G, layout as L, targets
from ._validate import INT_RANGES, THREADS_MAX, rounding_arg, scale_arg, threads_arg, zero_point_arg

QMODEL_FORMAT = "fixq.qmodel/1"
QMODEL_VERSION = 1
METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse")
WEIGHT_TYPES = ("int8", "fp16", "ternary", "binary")
LOWBIT_KEY = {"ternary": "weight_codes", "binary": "weight_bits"}
ACT_TYPES = {"int8": np.int8, "uint8": np.uint8}


class ArchiveError(ValueError):
    """A quantized model archive that is damaged, of an unknown or newer format, or inconsistent."""


# ---------------------------------------------------------------------------------------------
# Planning: fuse activations into the producing step

def plan_steps(g):
    """The fused execution plan of graph `g`: a list of JSON-able step dicts."""
    steps, fused = [], set()
    for node in g.nodes:
        if node.name in fused:
            continue
        step = {"name": node.name, "op": node.op, "inputs": list(node.inputs), "output": node.name,
                "act": None}
        a = node.attrs
        if node.op == "conv2d":
            step.update(stride=list(a["stride"]), padding=list(a["padding"]), dilation=list(a["dilation"]),
                        groups=a["groups"], depthwise=G.is_depthwise(node, g.shapes[node.inputs[0]][1]))
        elif node.op in ("maxpool2d", "avgpool2d"):
            step.update(kernel=list(a["kernel"]), stride=list(a["stride"]), padding=list(a["padding"]))
        elif node.op in ("concat", "softmax"):
            step["axis"] = a["axis"]
        if node.op in ("linear", "conv2d", "add", "mul"):
            cons = g.consumers(node.name)
            if (len(cons) == 1 and cons[0].op in ("relu", "relu6") and node.name not in g.outputs):
                step["act"] = cons[0].op
                step["output"] = cons[0].name
                fused.add(cons[0].name)
        steps.append(step)
    return steps


def _weight_keys(g):
    return {n.name: (n.attrs["weight"], n.attrs["bias"]) for n in g.nodes if n.op in G.WEIGHTED}


# ---------------------------------------------------------------------------------------------
# Quantization

def _act_qparams(lo, hi, dtype):
    qp = fixq.choose_qparams(np.float32(lo), np.float32(hi), dtype=dtype)
    return np.float32(np.asarray(qp.scale).reshape(())), np.int32(np.asarray(qp.zero_point).reshape(()))


def _quantize_weight(w, per_channel, bias=None, input_scale=None):
    """Symmetric int8 in [-127, 127], zero point 0 (the TFLite weight spec): (wq, scale[O|1], zp[O|1]).

    With `bias` and `input_scale` (static mode), a weight scale so small that the int32 bias
    ``bias / (input_scale * weight_scale)`` would pass 2**30 is raised until it fits (as ONNX Runtime's
    quantizer adjusts weight scales for int32 biases), so bias and accumulator stay exact in int32."""
    flat = w.reshape(w.shape[0], -1)
    if per_channel:
        qp = fixq.choose_qparams(flat.min(axis=1), flat.max(axis=1), dtype=np.int8, symmetric=True, axis=0)
    else:
        qp = fixq.choose_qparams(flat.min(), flat.max(), dtype=np.int8, symmetric=True)
    scale = qp.scale.reshape(-1)
    if bias is not None:
        need = np.abs(bias.astype(np.float64)) / (np.float64(input_scale) * 2.0**30)
        need = need.max(keepdims=True) if not per_channel else need
        if np.any(scale < need):
            scale = np.maximum(scale, np.nextafter(need.astype(np.float32), np.float32(np.inf)))
            wq = fixq.quantize(w, scale if per_channel else scale[0], 0, dtype=np.int8,
                               axis=0 if per_channel else None, qmin=qp.qmin, qmax=qp.qmax)
            return wq, scale.astype(np.float32), qp.zero_point.reshape(-1)
    return qp.quantize(w), scale, qp.zero_point.reshape(-1)


def _requant_params(real):
    """(multiplier, shift, scale) of real multipliers computed in double from float32 scales."""
    real = np.asarray(real, dtype=np.float64).reshape(-1)
    m, s = fixq.quantize_multiplier(real)
    return m.astype(np.int32), s.astype(np.int32), real.astype(np.float32)


def calibrate(g, batches, method="minmax", tensors=None, progress=None, **options):
    """Observed (min, max) of each float tensor in `tensors` over an iterable of input `batches`."""
    obs = {t: fixq.calibrate.make(method, **options) for t in tensors}
    n = 0
    for b in batches:
        env = G.run_float(g, b, keep_all=True)
        for t, o in obs.items():
            o.update(env[t])
        n += 1
        if progress is not None:
            progress(len(b))
    if n == 0:
        raise ValueError("calibration data is empty: give at least one sample")
    return {t: tuple(float(v) for v in o.range()) for t, o in obs.items()}


def quantize_model(g, calib=None, *, method="minmax", per_channel=True, weights="int8", activations="int8",
                   dynamic=False, rounding="double", progress=None, method_options=None, target=None):
    """A :class:`Model` from the validated float graph `g` (see :func:`fixq.graph.load_float_model`).

    `calib` is an iterable of float input batches (NCHW, as the model takes them); static mode needs it,
    dynamic mode (`dynamic=True`) ignores it.  `method` picks the activation calibrator
    (``fixq.calibrate.make``), `per_channel` the weight granularity, `activations` int8 or uint8,
    `rounding` the requantization (double, single or fp32).  `weights`: ``"int8"``; ``"ternary"``
    (fixq.ternarize) or ``"binary"`` (fixq.binarize), whose {-1, 0, +1} codes run through the same int8
    path with alpha as the per-channel weight scale; or ``"fp16"``: float16 weights, float32
    activations (weight-only compression, fixq.fp16_linear), no calibration.  `target`: a runtime whose
    requantization the model emulates by default when run (``fixq.targets``, docs/conformance.md)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights must be one of {list(WEIGHT_TYPES)}, got {weights!r}")
    if activations not in ACT_TYPES:
        raise ValueError(f"activations must be one of {list(ACT_TYPES)}, got {activations!r}")
    rounding_arg(rounding)
    if target is not None:
        targets.target_arg(target)
    if weights == "fp16":
        dynamic, calib = False, None
    float_acts = dynamic or weights == "fp16"
    act_dt = ACT_TYPES[activations]
    steps = plan_steps(g)
    arrays = {}
    wkeys = _weight_keys(g)
    tensors = {}
    lowbit = {}
    if weights in LOWBIT_KEY:
        make = fixq.ternarize if weights == "ternary" else fixq.binarize
        lowbit = {name: make(g.weights[wk].reshape(g.weights[wk].shape[0], -1)) for name, (wk, _) in wkeys.items()}
    if not float_acts:
        if calib is None:
            raise ValueError("static quantization needs calibration data (calib=); or use dynamic=True")
        observed = [g.input] + [s["output"] for s in steps if s["op"] in ("linear", "conv2d", "add", "mul",
                                                                           "concat")]
        # Ternary/binary weights change the activations: calibrate the network they approximate.
        g_cal = g
        if lowbit:
            g_cal = copy.copy(g)
            g_cal.weights = dict(g.weights, **{wkeys[n][0]: lw.dequantize().reshape(g.weights[wkeys[n][0]].shape)
                                               for n, lw in lowbit.items()})
        ranges = calibrate(g_cal, calib, method, observed, progress, **(method_options or {}))
        qp = {t: _act_qparams(*ranges[t], act_dt) for t in observed}
        for s in steps:  # pass-through steps keep their input's quantization
            if s["output"] not in qp:
                qp[s["output"]] = qp[s["inputs"][0]]
        for t, (sc, zp) in qp.items():
            arrays[f"t:{t}:scale"] = np.float32(sc)
            arrays[f"t:{t}:zero_point"] = np.int32(zp)
    qmin, qmax = INT_RANGES[np.dtype(act_dt)]
    for s in steps:
        name = s["name"]
        tensors[s["output"]] = list(g.shapes[s["output"]])
        if s["op"] in G.WEIGHTED:
            wk, bk = wkeys[name]
            w = g.weights[wk]
            b = g.weights[bk] if bk else np.zeros(w.shape[0], np.float32)
            s["weight_shape"] = list(w.shape)
            if weights == "fp16":
                arrays[f"{name}:weight"] = fixq.pack_fp16(w.reshape(w.shape[0], -1)).weights.reshape(w.shape)
                arrays[f"{name}:bias"] = b.astype(np.float32)
                continue
            s_in = None if dynamic else qp[s["inputs"][0]][0]
            if weights in LOWBIT_KEY:
                lw = lowbit[name]
                arrays[f"{name}:{LOWBIT_KEY[weights]}"] = lw.codes if weights == "ternary" else lw.bits
                # alpha folded into the per-channel weight scale (an all-zero row has alpha 0: use 1.0),
                # raised where the int32 bias would not fit (as for int8 weights)
                ws = np.where(lw.alpha > 0, lw.alpha, np.float32(1.0)).astype(np.float32)
                if not dynamic:
                    need = np.abs(b.astype(np.float64)) / (np.float64(s_in) * 2.0**30)
                    ws = np.maximum(ws, np.nextafter(need.astype(np.float32), np.float32(np.inf)), dtype=np.float32)
                wzp = np.zeros(w.shape[0], np.int32)
            else:
                wq, ws, wzp = _quantize_weight(w, per_channel, None if dynamic else b, s_in)
                arrays[f"{name}:weight"] = wq
            arrays[f"{name}:weight_scale"] = ws
            arrays[f"{name}:weight_zero_point"] = wzp
            if dynamic:
                arrays[f"{name}:bias"] = b.astype(np.float32)
                continue
            s_out = qp[s["output"]][0]
            bias_scale = (np.float64(s_in) * ws.astype(np.float64))
            arrays[f"{name}:bias"] = fixq.quantize_bias(b, s_in, ws)[0]
            m, sh, sc = _requant_params(bias_scale / np.float64(s_out))
            arrays[f"{name}:multiplier"], arrays[f"{name}:shift"], arrays[f"{name}:scale"] = m, sh, sc
        elif s["op"] == "concat" and not float_acts:
            s_out = np.float64(qp[s["output"]][0])
            m, sh, sc = _requant_params([np.float64(qp[t][0]) / s_out for t in s["inputs"]])
            arrays[f"{name}:multiplier"], arrays[f"{name}:shift"], arrays[f"{name}:scale"] = m, sh, sc
        if not float_acts and s["act"] is not None:
            sc, zp = qp[s["output"]]
            s["out_min"] = int(max(qmin, zp))
            s["out_max"] = int(qmax) if s["act"] == "relu" else int(min(qmax, zp + round(6.0 / float(sc))))
    meta = {
        "format": QMODEL_FORMAT,
        "fixq_version": fixq.__version__,
        "options": {"method": None if float_acts else method,
                    "per_channel": bool(per_channel or weights in LOWBIT_KEY),
                    "weights": weights, "activations": activations, "dynamic": bool(dynamic),
                    "rounding": rounding, "method_options": method_options or {},
                    **({"target": target} if target is not None else {})},
        "graph": g.spec,
        "input": g.input,
        "input_shape": list(g.input_shape),
        "outputs": list(g.outputs),
        "tensors": dict({g.input: list(g.input_shape)}, **tensors),
        "steps": steps,
    }
    return Model(meta, arrays)


# ---------------------------------------------------------------------------------------------
# Archive I/O

def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file in `path`'s directory, then rename it onto `path`."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fixq-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _expect(arrays, key, dtype, shape, step):
    if key not in arrays:
        raise ArchiveError(f"step {step!r}: key {key!r} is missing")
    a = arrays[key]
    if a.dtype != np.dtype(dtype):
        raise ArchiveError(f"step {step!r}: key {key!r} has dtype {a.dtype}; expected {np.dtype(dtype).name}")
    if shape is not None and a.shape != tuple(shape):
        raise ArchiveError(f"step {step!r}: key {key!r} has shape {a.shape}; expected {tuple(shape)}")
    return a


_OPTION_KEYS = ("method", "per_channel", "weights", "activations", "dynamic", "rounding")
_STEP_KEYS = ("name", "op", "inputs", "output", "act")


def _check_meta(meta):
    """__meta__'s structure: the options, and steps that read tensors computed before them."""
    def names(v):
        return isinstance(v, list) and v and all(isinstance(t, str) for t in v)

    if not isinstance(meta["options"], dict) or not isinstance(meta["tensors"], dict) \
            or not isinstance(meta["steps"], list):
        raise ArchiveError("key '__meta__' must hold 'options' and 'tensors' (objects) and 'steps' (a list)")
    for k in _OPTION_KEYS:
        if k not in meta["options"]:
            raise ArchiveError(f"key '__meta__' lacks options.{k}")
    tensors = meta["tensors"]
    for t, shape in tensors.items():  # graph.py's rule for the input shape, for every tensor
        if (not isinstance(shape, list) or len(shape) not in (2, 4) or shape[0] is not None
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
            raise ArchiveError(f"key '__meta__': tensor {t!r} has shape {shape!r}; it must be [null, features] or "
                               "[null, C, H, W] with positive sizes")
    if not isinstance(meta["input"], str) or meta["input"] not in tensors:
        raise ArchiveError(f"key '__meta__': input {meta['input']!r} is not one of its tensors")
    known = {meta["input"]}
    for i, s in enumerate(meta["steps"]):
        if not isinstance(s, dict) or any(k not in s for k in _STEP_KEYS):
            raise ArchiveError(f"key '__meta__': step {i} must be an object with keys {', '.join(_STEP_KEYS)}")
        if not names(s["inputs"]):
            raise ArchiveError(f"step {s['name']!r}: key 'inputs' must be a non-empty list of tensor names")
        for t in s["inputs"]:
            if t not in tensors:
                raise ArchiveError(f"step {s['name']!r}: key 'inputs' names unknown tensor {t!r}")
            if t not in known:
                raise ArchiveError(f"step {s['name']!r}: key 'inputs' names tensor {t!r} before a step computes it")
        if not isinstance(s["output"], str) or s["output"] not in tensors:
            raise ArchiveError(f"step {s['name']!r}: output {s['output']!r} is not one of the tensors")
        known.add(s["output"])
    if not names(meta["outputs"]) or not set(meta["outputs"]) <= known:
        raise ArchiveError(f"key '__meta__': outputs {meta['outputs']!r} are not tensors the steps compute")


def _check_archive(meta, arrays):
    """Every key the plan needs, with its dtype and shape."""
    opts = meta["options"]
    weights = opts["weights"]
    if weights not in WEIGHT_TYPES or opts["activations"] not in ACT_TYPES:
        raise ArchiveError(f"key '__meta__': options weights={weights!r}, activations={opts['activations']!r} "
                           "are not ones this fixq runs")
    dynamic = opts["dynamic"] or weights == "fp16"
    act_dt = ACT_TYPES[opts["activations"]]
    tshapes = meta["tensors"]
    if not dynamic:
        for t in tshapes:
            _expect(arrays, f"t:{t}:scale", np.float32, (), t)
            zp = _expect(arrays, f"t:{t}:zero_point", np.int32, (), t)
            lo, hi = INT_RANGES[np.dtype(act_dt)]
            if not lo <= int(zp) <= hi:
                raise ArchiveError(f"tensor {t!r}: key 't:{t}:zero_point' = {int(zp)} is outside {opts['activations']}")
            if not (np.isfinite(arrays[f"t:{t}:scale"]) and arrays[f"t:{t}:scale"] > 0):
                raise ArchiveError(f"tensor {t!r}: key 't:{t}:scale' must be finite and > 0")
    for s in meta["steps"]:
        name, op = s["name"], s["op"]
        for t in s["inputs"]:
            if t not in tshapes:
                raise ArchiveError(f"step {name!r}: key 'inputs' names unknown tensor {t!r}")
        if op in G.WEIGHTED:
            shape = s["weight_shape"]
            if (not isinstance(shape, list) or len(shape) != (2 if op == "linear" else 4)
                    or not all(isinstance(d, int) and d > 0 for d in shape)):
                raise ArchiveError(f"step {name!r}: key 'weight_shape' is {shape!r}")
            o, k = shape[0], int(np.prod(shape[1:]))
            if weights in LOWBIT_KEY:
                per = 4 if weights == "ternary" else 8
                _expect(arrays, f"{name}:{LOWBIT_KEY[weights]}", np.uint8, (o, (k + per - 1) // per), name)
            else:
                _expect(arrays, f"{name}:weight", np.float16 if weights == "fp16" else np.int8, shape, name)
            _expect(arrays, f"{name}:bias", np.float32 if dynamic else np.int32, (o,), name)
            if weights == "fp16":
                continue
            nch = arrays.get(f"{name}:weight_scale", np.zeros(0)).shape
            ch = nch[0] if len(nch) == 1 and nch[0] in (1, o) else o
            _expect(arrays, f"{name}:weight_scale", np.float32, (ch,), name)
            _expect(arrays, f"{name}:weight_zero_point", np.int32, (ch,), name)
            if not dynamic:
                for k, dt in (("multiplier", np.int32), ("shift", np.int32), ("scale", np.float32)):
                    _expect(arrays, f"{name}:{k}", dt, (ch,), name)
        elif op == "concat" and not dynamic:
            for k, dt in (("multiplier", np.int32), ("shift", np.int32), ("scale", np.float32)):
                _expect(arrays, f"{name}:{k}", dt, (len(s["inputs"]),), name)


def _parse_format(value, path):
    if value.dtype.kind != "U" or value.ndim != 0:
        raise ArchiveError(f"{path}: key '__format__' must be a string")
    fmt = str(value)
    name, _, ver = fmt.partition("/")
    if name != "fixq.qmodel" or not ver.isdigit():
        raise ArchiveError(f"{path}: key '__format__' is {fmt!r}, not a fixq quantized model "
                           f"({QMODEL_FORMAT})")
    if int(ver) > QMODEL_VERSION:
        raise ArchiveError(f"{path}: format {fmt} is newer than this fixq {fixq.__version__} reads "
                           f"({QMODEL_FORMAT}); upgrade fixq")
    return fmt


def read_archive(path):
    """(meta, arrays) of a fixq.qmodel archive, checked key by key."""
    try:
        arrays = G.load_npz(path, "quantized model")
    except G.GraphError as e:
        raise ArchiveError(str(e)) from None
    if "__format__" not in arrays:
        raise ArchiveError(f"{path}: no key '__format__'; not a fixq quantized model (make one with "
                           "`fixq quantize`)")
    _parse_format(arrays.pop("__format__"), path)
    if "__meta__" not in arrays:
        raise ArchiveError(f"{path}: key '__meta__' is missing")
    m = arrays.pop("__meta__")
    if m.dtype.kind != "U" or m.ndim != 0:
        raise ArchiveError(f"{path}: key '__meta__' must be a JSON string")
    try:
        meta = json.loads(str(m))
    except json.JSONDecodeError as e:
        raise ArchiveError(f"{path}: key '__meta__' is not valid JSON ({e})") from None
    for k in ("format", "fixq_version", "options", "graph", "input", "input_shape", "outputs", "tensors", "steps"):
        if k not in meta:
            raise ArchiveError(f"{path}: key '__meta__' lacks {k!r}")
    if not isinstance(meta, dict):
        raise ArchiveError(f"{path}: key '__meta__' must be a JSON object")
    try:
        _check_meta(meta)
        _check_archive(meta, arrays)
    except (KeyError, TypeError) as e:
        raise ArchiveError(f"{path}: key '__meta__' is inconsistent ({type(e).__name__}: {e})") from None
    except ArchiveError as e:
        raise ArchiveError(f"{path}: {e}") from None
    return meta, arrays


# ---------------------------------------------------------------------------------------------
# The engine

def _prepared_quantize(scale, zero_point, dt):
    """``fixq.quantize(x, scale, zero_point, dt)`` per tensor, its arguments checked once here."""
    sc, zp = scale_arg(scale, 1), zero_point_arg(zero_point, 1, dt)
    lo, hi = INT_RANGES[dt]
    name, raw = dt.name, _core.quantize_raw

    def quantize(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty(x.shape, dt)
        raw(x.reshape(-1), y.reshape(-1).view(np.uint8), name, 1, 1, x.size, sc, zp, lo, hi)
        return y
    return quantize


def _prepared_dequantize(scale, zero_point, dt):
    """``fixq.dequantize(q, scale, zero_point)`` per tensor, its arguments checked once here."""
    sc, zp = scale_arg(scale, 1), zero_point_arg(zero_point, 1, dt)
    name, raw = dt.name, _core.dequantize_raw

    def dequantize(q):
        q = np.ascontiguousarray(q)
        y = np.empty(q.shape, np.float32)
        raw(q.reshape(-1).view(np.uint8), name, y.reshape(-1), 1, 1, q.size, sc, zp)
        return y
    return dequantize


def _prepared_requantize(rq, rounding, zero_point, lo, hi, dt, channels):
    """``fixq.requantize(acc, **rq, zero_point, qmin=lo, qmax=hi, dtype=dt, rounding, axis=-1)`` with
    per-tensor or per-last-axis parameters, checked once here (the same checks as fixq.requantize)."""
    fixq.requantize(np.zeros(channels, np.int32), zero_point=zero_point, qmin=lo, qmax=hi, dtype=dt,
                    rounding=rounding, **rq)
    ch = np.asarray(rq.get("scale", rq.get("multiplier"))).size
    m = s = sc = None
    if rounding == "fp32":
        sc = np.ascontiguousarray(np.broadcast_to(rq["scale"], (ch,)), dtype=np.float32)
    else:
        m = np.ascontiguousarray(np.broadcast_to(rq["multiplier"], (ch,)), dtype=np.int32)
        s = np.ascontiguousarray(np.broadcast_to(rq["shift"], (ch,)), dtype=np.int32)
    zp = np.full(ch, zero_point, np.int32)
    name, raw = dt.name, _core.requantize_raw

    def requantize(acc):
        acc = np.ascontiguousarray(acc, dtype=np.int32)
        y = np.empty(acc.shape, dt)
        raw(acc.reshape(-1), y.reshape(-1).view(np.uint8), name, acc.size // ch, ch, 1, rounding, m, s, sc, zp,
            lo, hi)
        return y
    return requantize


def _prepared_qlinear(w, bias, common, rq):
    """``fixq.qlinear(x, fixq.pack_weights(w), bias, **common, **rq, threads=threads)`` as a function of
    ``(x, threads)``: the weights packed and the output stage checked (by fixq.gemm's own checks) once,
    here, so that a call at run time goes straight to the kernel."""
    packed = fixq.pack_weights(w)
    dt = np.dtype(common["out_dtype"])
    stage = gemm._out_stage("qlinear", dt, common["rounding"], rq.get("multiplier"), rq.get("shift"),
                            rq.get("scale"), common["out_zero_point"], common["out_min"], common["out_max"],
                            packed.n)
    bias = np.ascontiguousarray(bias, dtype=np.int32)
    zp = gemm._int(common["a_zero_point"], "a_zero_point", "qlinear")
    qgemm = _core.qgemm

    def qlinear(x, threads):
        return qgemm("qlinear", "x", x, packed, zp, bias, *stage, dt, threads, None)
    return qlinear


def _eltwise_params(op, kw):
    """The checked (by a call of ``fixq.qadd`` / ``fixq.qmul``) ``_core.EltwiseParams`` of `kw`."""
    dt = np.dtype(kw["out_dtype"])
    probe = np.zeros(1, dt)
    (fixq.qadd if op == "add" else fixq.qmul)(probe, probe, **kw)
    return _core.EltwiseParams(op, kw["rounding"], dt.name, float(kw["a_scale"]), int(kw["a_zero_point"]),
                               dt.name, float(kw["b_scale"]), int(kw["b_zero_point"]), dt.name,
                               float(kw["out_scale"]), int(kw["out_zero_point"]), int(kw["out_min"]),
                               int(kw["out_max"]))


def _prepared_eltwise(op, kw):
    """``fixq.qadd(x, y, **kw)`` / ``fixq.qmul`` on same-shape contiguous tensors as a function of
    ``(x, y, threads)``: the arguments checked (by a call of the public function) and the TFLite
    multipliers derived once, here."""
    dt = np.dtype(kw["out_dtype"])
    params = _eltwise_params(op, kw)
    one = (1,)
    eltwise_nd = _core.eltwise_nd

    def eltwise(x, y, threads):
        out = np.empty(x.shape, dt)
        eltwise_nd(params, x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8),
                   out.reshape(-1).view(np.uint8), (x.size,), one, one, one)
        return out
    return eltwise


def _target_qlinear(w, bias, common, target, op, scales):
    """``qlinear(x, threads)`` with `target`'s output stage for `op` (fixq.targets.qgemm)."""
    packed = fixq.pack_weights(w)
    kw = {k: v for k, v in common.items() if k != "rounding"}

    def qlinear(x, threads):
        return targets.qgemm(fixq.qlinear, x, packed, target=target, scales=scales, op=op, bias=bias, threads=threads,
                             **kw)
    return qlinear


def _overflow_message(name, dt, zp, packed, bias):
    """The OverflowError text of fixq.qlinear for the first group of a conv/linear step that can overflow."""
    def message():
        lo, hi = INT_RANGES[dt]
        span = max(zp - lo, hi - zp)
        for k, pk in enumerate(packed):
            b = bias[k * pk.n:(k + 1) * pk.n]
            if np.any(span * pk.col_abs + np.abs(b.astype(np.int64)) > 2**31 - 1):
                return _core._overflow_message("qlinear", 0 if dt == np.int8 else 1, zp, pk, b)
        return f"step {name!r}: the int32 accumulator could overflow"
    return message


def _avg_round(acc, count):
    """TFLite reference AveragePool: ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` (C division)."""
    h = count // 2
    return np.where(acc >= 0, (acc + h) // count, -((h - acc) // count))


class Model:
    """An int8 model: ``Model.load(path)`` then ``model.run(x)``."""

    def __init__(self, meta, arrays, rounding=None, target=None):
        self.meta = meta
        self.arrays = arrays
        self.options = meta["options"]
        self.rounding = rounding_arg(rounding) if rounding is not None else self.options["rounding"]
        self.dynamic = self.options["dynamic"]
        self.weights = self.options["weights"]
        self.float_acts = self.dynamic or self.weights == "fp16"
        self.target = target if target is not None else self.options.get("target")
        if self.target is not None:
            targets.target_arg(self.target)
            if rounding is not None:
                raise ValueError("give rounding= or target=, not both: a target fixes each op's rounding")
            if self.float_acts:
                raise ValueError(f"target={self.target!r} emulates a runtime's int8 kernels and needs a static "
                                 "int8 model (quantized without --dynamic or --weights fp16)")
        self.act_dtype = np.dtype(ACT_TYPES[self.options["activations"]])
        self.input = meta["input"]
        self.input_shape = tuple(meta["input_shape"])
        self.outputs = list(meta["outputs"])
        self.steps = meta["steps"]
        self._build()

    @classmethod
    def load(cls, path, rounding=None, target=None):
        """Read a ``fixq.qmodel/1`` archive; `rounding` overrides the requantization it was made with;
        `target` runs linear, conv, add, mul and the input quantization exactly as that runtime does
        (``fixq.targets``, docs/conformance.md)."""
        meta, arrays = read_archive(path)
        try:
            return cls(meta, arrays, rounding, target)
        except (KeyError, IndexError, TypeError) as e:
            raise ArchiveError(f"{path}: key '__meta__' is inconsistent ({type(e).__name__}: {e})") from None

    def save(self, path):
        """Write the archive atomically (temp file in the same directory, then rename)."""
        out = {"__format__": np.array(QMODEL_FORMAT), "__meta__": np.array(json.dumps(self.meta))}
        out.update(self.arrays)
        atomic_write(path, lambda f: np.savez(f, **out))

    # -- parameters -----------------------------------------------------------------------------
    def qparams(self, tensor):
        """(scale, zero_point) of an activation tensor (static mode)."""
        return float(self.arrays[f"t:{tensor}:scale"]), int(self.arrays[f"t:{tensor}:zero_point"])

    def weight_bytes(self):
        return sum(a.nbytes for k, a in self.arrays.items() if not k.startswith("t:"))

    def float_weight_bytes(self):
        """fp32 weights and biases of the weighted layers."""
        return sum(4 * int(np.prod(s["weight_shape"])) + 4 * s["weight_shape"][0]
                   for s in self.steps if s["op"] in G.WEIGHTED)

    def weight(self, s):
        """The int8 weights of step `s` in their float layout (ternary/binary codes unpacked)."""
        a, name, shape = self.arrays, s["name"], s["weight_shape"]
        if self.weights == "ternary":
            lw = fixq.lowbit.TernaryWeights.from_arrays({"codes": a[f"{name}:weight_codes"],
                                                         "alpha": a[f"{name}:weight_scale"],
                                                         "k": int(np.prod(shape[1:]))})
        elif self.weights == "binary":
            lw = fixq.lowbit.BinaryWeights.from_arrays({"bits": a[f"{name}:weight_bits"],
                                                        "alpha": a[f"{name}:weight_scale"],
                                                        "k": int(np.prod(shape[1:]))})
        else:
            return a[f"{name}:weight"]
        return lw.unpack().reshape(shape)

    # -- building the run plan ------------------------------------------------------------------
    def _requant_kw(self, name):
        a = self.arrays
        if self.rounding == "fp32":
            return {"scale": a[f"{name}:scale"]}
        return {"multiplier": a[f"{name}:multiplier"], "shift": a[f"{name}:shift"]}

    def _build(self):
        """Static int8 models run on the C plan (_engine_plan); target=, dynamic mode and fp16 weights run
        the numpy steps (_python_steps, also built on demand for run_all(engine=False))."""
        self._fns = None
        if not self.float_acts:
            sc, zp = self.qparams(self.input)
            if self.target is not None:
                self._quantize_in = lambda x: targets.quantize(x, self.target, sc, zp, self.act_dtype)
            else:
                self._quantize_in = _prepared_quantize(sc, zp, self.act_dtype)
            self._dequantize_out = [_prepared_dequantize(*self.qparams(t), self.act_dtype) for t in self.outputs]
        self._engine = None if self.float_acts or self.target is not None else self._engine_plan()

    def _python_steps(self):
        if self._fns is None:
            self._fns = []
            for s in self.steps:
                fn = self._float_step(s) if self.float_acts else self._static_step(s)
                self._fns.append((fn, tuple(s["inputs"]), s["output"]))
        return self._fns

    def _engine_plan(self):
        """The steps as a C plan (_core.Engine, src/fixq/_csrc/fixq_engine.h) over NHWC tensors: tensor 0
        is the float input, then the quantized input and every step's output.  Softmax runs in numpy on
        the dequantized output, as in _static_step."""
        shapes = self.meta["tensors"]
        dims = {t: ((sh[2], sh[3], sh[1]) if len(sh) == 4 else (1, 1, sh[1])) for t, sh in shapes.items()}
        tensors = [dims[self.input] + (4,)]
        self._engine_index = {}

        def tensor(name):
            self._engine_index[name] = len(tensors)
            tensors.append(dims[name] + (1,))
            return len(tensors) - 1
        sc, zp = self.qparams(self.input)
        scale_arg(sc, 1), zero_point_arg(zp, 1, self.act_dtype)  # _prepared_quantize's checks
        plan = [{"name": self.input, "op": "quantize", "in": [0], "out": tensor(self.input), "scale": sc, "zp": zp}]
        self._softmax = {}
        for s in self.steps:
            if s["op"] == "softmax":
                self._softmax[s["output"]] = (s["inputs"][0], L.internal_axis(s["axis"], len(shapes[s["output"]])))
                continue
            d = self._engine_step(s)
            d.update(name=s["name"], **{"in": [self._engine_index[t] for t in s["inputs"]]})
            d["out"] = tensor(s["output"])
            plan.append(d)
        outputs = []
        for t in self.outputs:
            if t in self._softmax:  # its input, dequantized, in the internal layout
                src = self._softmax[t][0]
                outputs.append((self._engine_index[src], False, *self.qparams(src),
                                dims[src] if len(shapes[src]) == 4 else dims[src][2:], False))
            else:
                outputs.append((self._engine_index[t], len(shapes[t]) == 4, *self.qparams(t), tuple(shapes[t][1:]),
                                True))
        return _core.Engine(self.act_dtype.name, tensors, plan, outputs)

    def _engine_rq(self, rq, zero_point, lo, hi, channels):
        """The output stage `rq` (``_requant_kw``) as arrays of length `channels`, checked by fixq.requantize."""
        dt = self.act_dtype
        fixq.requantize(np.zeros(channels, np.int32), zero_point=zero_point, qmin=lo, qmax=hi, dtype=dt,
                        rounding=self.rounding, **rq)
        out = {"rounding": self.rounding, "zero_point": np.full(channels, zero_point, np.int32), "qmin": int(lo),
               "qmax": int(hi)}
        for k, v in rq.items():
            out[k] = np.ascontiguousarray(np.broadcast_to(v, (channels,)), dtype=np.float32 if k == "scale" else np.int32)
        return out

    def _engine_step(self, s):
        """One step of the C plan: the parameters of _static_step's numpy code for it."""
        name, op, a = s["name"], s["op"], self.arrays
        dt = self.act_dtype
        qmin, qmax = INT_RANGES[dt]
        sc_in = [self.qparams(t)[0] for t in s["inputs"]]
        zp_in = [self.qparams(t)[1] for t in s["inputs"]]
        sc_out, zp_out = self.qparams(s["output"])
        lo, hi = s.get("out_min", qmin), s.get("out_max", qmax)
        if op in G.WEIGHTED:
            w = self.weight(s)
            bias = np.ascontiguousarray(a[f"{name}:bias"], dtype=np.int32)
            rq = self._requant_kw(name)
            geo = {} if op == "linear" else dict(kernel=tuple(w.shape[2:]), stride=tuple(s["stride"]),
                                                 padding=tuple(s["padding"]), dilation=tuple(s["dilation"]))
            if s.get("depthwise"):
                taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # [kH, kW, O]
                mult = w.shape[0] // self.meta["tensors"][s["inputs"][0]][1]
                return dict(op="depthwise", groups=mult, bias=bias, taps=taps, zp=zp_in[0],
                            rq=self._engine_rq(rq, zp_out, lo, hi, w.shape[0]), **geo)
            groups = s.get("groups", 1)
            og = w.shape[0] // groups
            packed = [fixq.pack_weights(w if op == "linear" else L.conv_weight_hwc(w[k * og:(k + 1) * og]))
                      for k in range(groups)]
            rq = self._engine_rq(rq, zp_out, lo, hi, a[f"{name}:weight_scale"].shape[0])
            return dict(op="gemm", groups=groups, packed=packed, bias=bias, zp=gemm._int(zp_in[0], "a_zero_point",
                                                                                        "qlinear"),
                        rq=rq, overflow=_overflow_message(name, dt, zp_in[0], packed, bias), **geo)
        if op in ("add", "mul"):
            kw = dict(a_scale=sc_in[0], a_zero_point=zp_in[0], b_scale=sc_in[1], b_zero_point=zp_in[1],
                      out_scale=sc_out, out_zero_point=zp_out, out_min=lo, out_max=hi, out_dtype=dt,
                      rounding=self.rounding)
            return dict(op="eltwise", eltwise=_eltwise_params(op, kw))
        if op == "concat":
            rq = self._requant_kw(name)
            nd = len(self.meta["tensors"][s["output"]])
            in_rq = [None if (sc_in[i], zp_in[i]) == (sc_out, zp_out) else
                     self._engine_rq({k: v[i:i + 1] for k, v in rq.items()}, zp_out, qmin, qmax, 1)
                     for i in range(len(zp_in))]
            return dict(op="concat", axis=L.internal_axis(s["axis"], nd) if nd == 4 else 3,
                        in_zp=np.array(zp_in, np.int32), in_rq=in_rq)
        if op == "relu":
            return dict(op="clamp", lo=zp_out, hi=qmax)
        if op == "relu6":
            return dict(op="clamp", lo=zp_out, hi=min(qmax, zp_out + round(6.0 / sc_out)))
        if op in ("maxpool2d", "avgpool2d"):
            return dict(op=op[:-2], kernel=tuple(s["kernel"]), stride=tuple(s["stride"]), padding=tuple(s["padding"]),
                        lo=qmin, zp=zp_out)
        if op in ("global_avgpool", "flatten"):
            return dict(op=op)
        raise ArchiveError(f"step {name!r}: key 'op' {op!r} is not a fixq.qmodel/1 op")

    def _static_step(self, s):
        name, op, a = s["name"], s["op"], self.arrays
        dt = self.act_dtype
        qmin, qmax = INT_RANGES[dt]
        zp_in = [self.qparams(t)[1] for t in s["inputs"]]
        sc_in = [self.qparams(t)[0] for t in s["inputs"]]
        sc_out, zp_out = self.qparams(s["output"])
        lo, hi = s.get("out_min", qmin), s.get("out_max", qmax)
        rounding = self.rounding
        if op in G.WEIGHTED and not s.get("depthwise"):
            w = self.weight(s)
            groups = s.get("groups", 1)
            common = dict(a_zero_point=zp_in[0], out_zero_point=zp_out, out_min=lo, out_max=hi,
                          out_dtype=dt, rounding=rounding)
            rq = self._requant_kw(name)
            per_ch = a[f"{name}:weight_scale"].shape[0] > 1
            bias = a[f"{name}:bias"]
            if self.target is not None:
                scales = (sc_in[0], a[f"{name}:weight_scale"], sc_out)
                if op == "linear":
                    return _target_qlinear(w, bias, common, self.target, "matmul", scales)
            elif op == "linear":
                return _prepared_qlinear(w, bias, common, rq)
            og = w.shape[0] // groups
            ig = w.shape[1]
            wg = []
            for k in range(groups):
                sl = slice(k * og, (k + 1) * og)
                rqk = {key: (v[sl] if per_ch else v) for key, v in rq.items()}
                if self.target is not None:
                    ws = scales[1][sl] if per_ch else scales[1]
                    wg.append(_target_qlinear(L.conv_weight_hwc(w[sl]), bias[sl], common, self.target, "conv",
                                              (scales[0], ws, scales[2])))
                else:
                    wg.append(_prepared_qlinear(L.conv_weight_hwc(w[sl]), bias[sl], common, rqk))
            geo = (tuple(w.shape[2:]), tuple(s["stride"]), tuple(s["padding"]), tuple(s["dilation"]))
            pad = zp_in[0]

            def conv(x, threads):
                outs = []
                for k, qlinear in enumerate(wg):
                    xk = x if groups == 1 else np.ascontiguousarray(x[..., k * ig:(k + 1) * ig])
                    cols, (n, oh, ow) = L.im2col(xk, *geo, pad_value=pad)
                    outs.append(qlinear(cols, threads).reshape(n, oh, ow, og))
                return outs[0] if groups == 1 else np.concatenate(outs, axis=3)
            return conv
        if op == "conv2d":  # depthwise: int32 taps, then the per-channel output stage
            w = self.weight(s)
            c = self.meta["tensors"][s["inputs"][0]][1]
            mult = w.shape[0] // c
            taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).astype(np.int32)  # [kH, kW, O]
            pad = zp_in[0]
            # sum_t (x_t - zp) w_t + bias == sum_t x_t w_t + (bias - zp sum_t w_t), exactly in int32
            bias = a[f"{name}:bias"] - np.int32(pad) * taps.sum(axis=(0, 1), dtype=np.int32)
            if self.target is not None:
                rq_args = (self.target, "depthwise_conv", sc_in[0], a[f"{name}:weight_scale"], sc_out, zp_out)

                def requantize(acc):
                    return targets.requantize(acc, *rq_args, out_min=lo, out_max=hi, dtype=dt)
            else:
                requantize = _prepared_requantize(self._requant_kw(name), rounding, zp_out, lo, hi, dt, w.shape[0])
            geo = (tuple(w.shape[2:]), tuple(s["stride"]), tuple(s["padding"]), tuple(s["dilation"]))

            def depthwise(x, threads):
                if mult > 1:
                    x = np.repeat(x, mult, axis=3)
                v = L.windows(x, *geo, pad_value=pad)
                acc = np.add(bias, np.multiply(v[:, :, :, 0, 0], taps[0, 0]))  # int8 * int32 -> int32
                for i in range(geo[0][0]):
                    for j in range(geo[0][1]):
                        if i or j:
                            acc += np.multiply(v[:, :, :, i, j], taps[i, j])
                return requantize(acc)
            return depthwise
        if op in ("add", "mul"):
            kw = dict(a_scale=sc_in[0], a_zero_point=zp_in[0], b_scale=sc_in[1], b_zero_point=zp_in[1],
                      out_scale=sc_out, out_zero_point=zp_out, out_min=lo, out_max=hi, out_dtype=dt,
                      rounding=rounding)
            if self.target is None:
                return _prepared_eltwise(op, kw)
            kern = targets.add if op == "add" else targets.mul
            del kw["rounding"]
            kw["target"] = self.target

            def eltwise(x, y, threads):
                return kern(x, y, **kw)
            return eltwise
        if op == "concat":
            rq = self._requant_kw(name)
            axis = L.internal_axis(s["axis"], len(self.meta["tensors"][s["output"]]))
            rescale = [None if (sc_in[i], zp_in[i]) == (sc_out, zp_out) else
                       (zp_in[i], _prepared_requantize({k: v[i] for k, v in rq.items()}, rounding, zp_out, qmin, qmax,
                                                       dt, 1))
                       for i in range(len(zp_in))]

            def concat(*xs):
                return np.concatenate([x if r is None else r[1](x.astype(np.int32) - r[0])
                                       for x, r in zip(xs[:-1], rescale)], axis=axis)
            return concat
        if op == "relu":
            return lambda x, threads: np.maximum(x, dt.type(zp_out))
        if op == "relu6":
            top = min(qmax, zp_out + round(6.0 / sc_out))
            return lambda x, threads: np.clip(x, zp_out, top).astype(dt, copy=False)
        if op == "maxpool2d":
            geo = (tuple(s["kernel"]), tuple(s["stride"]), tuple(s["padding"]))
            return lambda x, threads: L.window_reduce(x, *geo, qmin, np.maximum)
        if op == "avgpool2d":
            geo = (tuple(s["kernel"]), tuple(s["stride"]), tuple(s["padding"]))
            count = geo[0][0] * geo[0][1]
            return lambda x, threads: _avg_round(L.window_reduce(x, *geo, zp_out, np.add, np.int32), count).astype(dt)
        if op == "global_avgpool":
            return lambda x, threads: _avg_round(x.sum(axis=(1, 2), dtype=np.int32),
                                                 x.shape[1] * x.shape[2]).astype(dt)
        if op == "flatten":
            return lambda x, threads: L.flatten(x)
        if op == "softmax":
            axis = L.internal_axis(s["axis"], len(self.meta["tensors"][s["output"]]))
            dequantize = _prepared_dequantize(sc_in[0], zp_in[0], dt)
            return lambda x, threads: G.softmax(dequantize(x), axis)
        raise ArchiveError(f"step {name!r}: key 'op' {op!r} is not a fixq.qmodel/1 op")

    def _float_step(self, s):
        """Float activations.  Dynamic mode: linear/conv quantize their input per batch (its own
        min/max), run the int8 GEMM to int32 and rescale to float.  fp16 weights: linear/conv run
        fixq.fp16_linear.  Everything else runs in float."""
        name, op, a = s["name"], s["op"], self.arrays
        act = {"relu": lambda y: np.maximum(y, 0), "relu6": lambda y: np.clip(y, 0, 6), None: None}[s["act"]]
        if op not in G.WEIGHTED:
            node = G.Node(name, op, s["inputs"], {k: (tuple(v) if isinstance(v, list) else v)
                                                 for k, v in s.items() if k not in ("name", "op", "inputs")})

            def float_op(*xs):
                y = G.float_node(None, node, list(xs[:-1]))
                return act(y) if act else y
            return float_op
        bias = a[f"{name}:bias"]
        groups = s.get("groups", 1)
        shape = s["weight_shape"]
        og, ig = shape[0] // groups, shape[1]
        if op == "conv2d":
            geo = (tuple(shape[2:]), tuple(s["stride"]), tuple(s["padding"]), tuple(s["dilation"]))

        def gemm_input(x, k, pad):
            """The [rows, K] GEMM operand of group k (depthwise: one group per input channel) and the
            output's leading shape."""
            if op == "linear":
                return x, x.shape[:-1]
            xk = x if groups == 1 else np.ascontiguousarray(x[..., k * ig:(k + 1) * ig])
            cols, lead = L.im2col(xk, *geo, pad_value=pad)
            return cols, lead

        def finish(outs):
            y = outs[0] if groups == 1 else np.concatenate(outs, axis=-1)
            if act is not None:
                y = act(y)
            return y

        if self.weights == "fp16":
            w = a[f"{name}:weight"].astype(np.float32)  # float16 -> float32 -> float16 is exact
            packs = [fixq.pack_fp16(w if op == "linear" else L.conv_weight_hwc(w[k * og:(k + 1) * og]))
                     for k in range(groups)]
            biases = [np.ascontiguousarray(bias[k * og:(k + 1) * og]) for k in range(groups)]
            fp16_linear = fixq.fp16_linear

            def fp16_step(x, threads):
                outs = []
                for k in range(groups):
                    cols, lead = gemm_input(np.ascontiguousarray(x, dtype=np.float32), k, 0.0)
                    outs.append(fp16_linear(cols, packs[k], biases[k]).reshape(lead + (og,)))
                return finish(outs)
            return fp16_step
        w = self.weight(s)
        ws = a[f"{name}:weight_scale"].astype(np.float64)
        dt = self.act_dtype
        qlinear = fixq.qlinear
        if op == "conv2d":
            packs = [fixq.pack_weights(L.conv_weight_hwc(w[k * og:(k + 1) * og])) for k in range(groups)]
        else:
            packs = [fixq.pack_weights(w)]
        scales = [ws if ws.size == 1 else ws[k * og:(k + 1) * og] for k in range(groups)]
        biases = [bias[k * og:(k + 1) * og] for k in range(groups)]

        def dynamic(x, threads):
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)  # an empty batch
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"step {name!r}: its input contains NaN or Inf; replace or mask them")
            xs, xz = _act_qparams(min(lo, 0.0), max(hi, 0.0), dt)
            xq = fixq.quantize(x, xs, xz, dtype=dt)
            outs = []
            for k, packed in enumerate(packs):
                cols, lead = gemm_input(xq, k, xz)
                acc = qlinear(cols, packed, a_zero_point=xz, out_dtype=np.int32, threads=threads)
                outs.append(((acc * (np.float64(xs) * scales[k])).astype(np.float32) + biases[k]).reshape(
                    lead + (og,)))
            return finish(outs)
        return dynamic

    # -- running --------------------------------------------------------------------------------
    def _check_x(self, x):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"x must be a float array, got dtype {x.dtype}")
        want = self.input_shape
        if x.ndim != len(want) or x.shape[1:] != want[1:]:
            raise ValueError(f"x has shape {x.shape}; the model's input {self.input!r} needs "
                             f"[N, {', '.join(map(str, want[1:]))}]")
        return x

    def run_all(self, x, threads=1, engine=True):
        """Every tensor of the run (internal layout: 4-D tensors NHWC), keyed by name.  `engine=False`
        runs the numpy steps instead of the C plan (the same integers)."""
        if type(threads) is not int or not 0 < threads <= THREADS_MAX:  # the common case without a call
            threads = threads_arg(threads)
        x = self._check_x(x)
        if self._engine is not None and engine:
            views = self._engine.run(x, threads, False, True)
            env = {}
            for t, i in self._engine_index.items():
                env[t] = views[i] if len(self.meta["tensors"][t]) == 4 else views[i].reshape(
                    x.shape[0], math.prod(self.meta["tensors"][t][1:]))
            for t, (src, axis) in self._softmax.items():
                env[t] = G.softmax(fixq.dequantize(env[src], *self.qparams(src)), axis)
            return env
        x = L.to_internal(x)
        if self.float_acts:
            env = {self.input: np.asarray(x, np.float32)}
        else:
            env = {self.input: self._quantize_in(x)}
        for fn, ins, out in self._python_steps():
            env[out] = fn(*[env[t] for t in ins], threads)
        return env

    def run(self, x, threads=1, raw=False):
        """Outputs for a float batch `x` (the model's input shape with any batch size): dequantized
        float32, or with `raw` the int8/uint8 outputs (static mode).  One output: an array; several:
        a tuple."""
        if type(threads) is not int or not 0 < threads <= THREADS_MAX:  # the common case without a call
            threads = threads_arg(threads)
        if raw and self.float_acts:
            raise ValueError("raw=True needs a static int8 model; this model's outputs are float")
        if self._engine is not None:
            outs = self._engine.run(self._check_x(x), threads, raw, False)
            if self._softmax:
                for i, t in enumerate(self.outputs):
                    if t in self._softmax:
                        outs[i] = L.to_external(G.softmax(outs[i], self._softmax[t][1]))
            return outs[0] if len(outs) == 1 else tuple(outs)
        env = self.run_all(x, threads)
        outs = []
        for i, t in enumerate(self.outputs):
            y = env[t]
            if not self.float_acts and not raw and y.dtype != np.float32:
                y = self._dequantize_out[i](y)
            outs.append(L.to_external(y))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def dequantized(self, tensor, value):
        """Float view of an internal tensor value (for per-layer error reports)."""
        if self.float_acts or value.dtype == np.float32:
            return value
        return fixq.dequantize(value, *self.qparams(tensor))
