"""Float graph + calibration -> quantized model (the public :func:`quantize_model`).

Weights become symmetric int8 (or ternary/binary codes, or float16), per output channel or per
tensor; activations are calibrated (static mode) by streaming the float reference
(:func:`fixq.graph.run_float`) through one observer (:mod:`fixq.calibrate`) per quantized tensor, or
left to run time (dynamic mode); every requantization's multiplier/shift/scale is precomputed.
The result is a :class:`fixq.Model` ready to run or save (docs/engine.md).
"""
import copy
import math

import numpy as np

from .. import calibrate as calibrators, graph as G, targets
from .._core import VERSION
from .._validate import rounding_arg
from ..archive import ACT_TYPES, LOWBIT_KEY, QMODEL_FORMAT, WEIGHT_TYPES, check_engine_limits
from ..arith import quantize, quantize_multiplier
from ..engine import Model
from ..float_ops import quantize_rows
from ..lowbit import binarize, pack_fp16, ternarize
from ..qparams import choose_qparams, quantize_bias, tensor_qparams

__all__ = ["METHODS", "GRANULARITIES", "quantize_model", "observers", "observe_ranges", "plan_steps", "calibrated_tensors",
           "lowbit_weights", "calibration_graph", "activation_table", "batchnorm_table"]

# Steps whose output gets its own calibrated scale and zero point (a requantization); the others
# (pools, flatten, standalone relu/relu6) keep their input's, as TFLite requires of int8 pools.
# global_avgpool requantizes its mean like ONNX Runtime's QLinearGlobalAveragePool and TFLite's MEAN;
# the table ops (sigmoid, tanh, ...) map each input value to a value of their own output quantization.
REQUANTIZED = ("linear", "conv2d", "add", "mul", "sub", "concat", "global_avgpool", "batchnorm") + G.TABLE_OPS

METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse")
GRANULARITIES = ("row", "tensor")  # of a sequence model's dynamic activations: per row (token) or per tensor


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
            if node.op == "avgpool2d" and not a["count_include_pad"]:
                step["count_include_pad"] = False
        elif node.op == "concat":
            step["axis"] = a["axis"]
        elif node.op == "softmax":
            step.update(axis=a["axis"], **({} if a["beta"] == 1.0 else {"beta": a["beta"]}))
        elif node.op == "pad":
            step["padding"] = list(a["padding"])
        elif node.op in G.TABLE_OPS:
            step.update(a)
        elif node.op == "batchnorm":
            step.update(scale=list(a["scale"]), shift=list(a["shift"]))
        elif node.op in G.SEQUENCE_OPS:
            step.update({k: v for k, v in a.items() if k not in ("weight", "bias")})
        if node.op in ("linear", "conv2d", "add", "mul", "sub"):
            cons = g.consumers(node.name)
            if (len(cons) == 1 and cons[0].op in ("relu", "relu6") and node.name not in g.outputs):
                step["act"] = cons[0].op
                step["output"] = cons[0].name
                fused.add(cons[0].name)
        steps.append(step)
    return steps


def activation_table(op, attrs, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """The 256-entry table of table op `op` (fixq.graph.TABLE_OPS) from int8/uint8 input to output, indexed
    by the input's byte (int8 q at q & 0xff): ``clamp(round(f((q - zp_in) * s_in) / s_out) + zp_out)``
    with f (fixq.graph.elementwise) and every product and quotient in float64, rounded half to even."""
    dt = np.dtype(dtype)
    q = np.arange(256, dtype=np.uint8).view(dt).astype(np.float64)
    f = G.elementwise(op, attrs, (q - in_zero_point) * np.float64(in_scale))
    info = np.iinfo(dt)
    return np.clip(np.rint(f / np.float64(out_scale)) + out_zero_point, info.min, info.max).astype(dt)


def batchnorm_table(scale, shift, in_scale, in_zero_point, out_scale, out_zero_point, dtype):
    """A batchnorm step's tables, one 256-entry table per channel ([C, 256], indexed by the input's byte) from
    int8/uint8 input to output, all in float32 as ONNX Runtime runs DequantizeLinear -> BatchNormalization ->
    QuantizeLinear: ``x = (float)(q - zp_in) * s_in``, ``y = x * scale[c] + shift[c]`` (two roundings), then
    ``saturate(round_half_even(y / s_out) + zp_out)``."""
    dt, f = np.dtype(dtype), np.float32
    q = np.arange(256, dtype=np.uint8).view(dt).astype(np.int32)
    x = (q - int(in_zero_point)).astype(f) * f(in_scale)
    y = x[None, :] * np.asarray(scale, f)[:, None] + np.asarray(shift, f)[:, None]
    info = np.iinfo(dt)
    return np.clip(np.rint(y / f(out_scale)) + out_zero_point, info.min, info.max).astype(dt)


def _weight_keys(g):
    return {n.name: (n.attrs["weight"], n.attrs["bias"]) for n in g.nodes if n.op in G.WEIGHTED}


def _quantize_weight(w, per_channel, bias=None, input_scale=None):
    """Symmetric int8 in [-127, 127], zero point 0 (the TFLite weight spec): (wq, scale[O|1], zp[O|1]).

    With `bias` and `input_scale` (static mode), a weight scale so small that the int32 bias
    ``bias / (input_scale * weight_scale)`` would pass 2**30 is raised until it fits (as ONNX Runtime's
    quantizer adjusts weight scales for int32 biases), so bias and accumulator stay exact in int32."""
    flat = w.reshape(w.shape[0], -1)
    if per_channel:
        qp = choose_qparams(flat.min(axis=1), flat.max(axis=1), dtype=np.int8, symmetric=True, axis=0)
    else:
        qp = choose_qparams(flat.min(), flat.max(), dtype=np.int8, symmetric=True)
    scale = qp.scale.reshape(-1)
    if bias is not None:
        need = np.abs(bias.astype(np.float64)) / (np.float64(input_scale) * 2.0**30)
        need = need.max(keepdims=True) if not per_channel else need
        if np.any(scale < need):
            scale = np.maximum(scale, np.nextafter(need.astype(np.float32), np.float32(np.inf)))
            wq = quantize(w, scale if per_channel else scale[0], 0, dtype=np.int8,
                               axis=0 if per_channel else None, qmin=qp.qmin, qmax=qp.qmax)
            return wq, scale.astype(np.float32), qp.zero_point.reshape(-1)
    return qp.quantize(w), scale, qp.zero_point.reshape(-1)


def _requant_params(real):
    """(multiplier, shift, scale) of real multipliers computed in double from float32 scales."""
    real = np.asarray(real, dtype=np.float64).reshape(-1)
    m, s = quantize_multiplier(real)
    return m.astype(np.int32), s.astype(np.int32), real.astype(np.float32)


def calibrated_tensors(g):
    """The float tensors whose ranges static quantization observes: the input and every requantized output."""
    return [g.input] + [s["output"] for s in plan_steps(g) if s["op"] in REQUANTIZED]


def lowbit_weights(g, weights):
    """The ternary or binary codes of each weighted layer (``weights`` "ternary"/"binary"), else {}."""
    if weights not in LOWBIT_KEY:
        return {}
    make = ternarize if weights == "ternary" else binarize
    return {name: make(g.weights[wk].reshape(g.weights[wk].shape[0], -1)) for name, (wk, _) in _weight_keys(g).items()}


def calibration_graph(g, lowbit):
    """The float graph to calibrate on: `g`, or with :func:`lowbit_weights` `lowbit` the network those
    ternary/binary weights approximate (they change the activations)."""
    if not lowbit:
        return g
    wkeys = _weight_keys(g)
    g_cal = copy.copy(g)
    g_cal.weights = dict(g.weights, **{wkeys[n][0]: lw.dequantize().reshape(g.weights[wkeys[n][0]].shape)
                                       for n, lw in lowbit.items()})
    return g_cal


def _given_ranges(ranges, tensors):
    """`ranges` checked: a finite (min, max) with min <= max for every tensor in `tensors`."""
    missing = [t for t in tensors if t not in ranges]
    if missing:
        raise ValueError(f"ranges= has no (min, max) for tensor(s) {missing}; it needs every tensor of "
                         "calibrated_tensors(g) (fixq.dask.calibrate and observe_ranges give them)")
    out = {}
    for t in tensors:
        try:
            lo, hi = (float(v) for v in ranges[t])
        except (TypeError, ValueError):
            raise TypeError(f"ranges[{t!r}] must be a (min, max) pair of numbers, got {ranges[t]!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"ranges[{t!r}] = ({lo!r}, {hi!r}) must be finite with min <= max")
        out[t] = (lo, hi)
    return out


def observers(g, batches, method="minmax", tensors=None, progress=None, **options):
    """One observer (``fixq.calibrate.make(method, **options)``) per float tensor in `tensors`, fed with the
    float run of each of an iterable of input `batches`; observers of parts of the data merge exactly."""
    obs = {t: calibrators.make(method, **options) for t in tensors}
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
    return obs


def observe_ranges(g, batches, method="minmax", tensors=None, progress=None, **options):
    """Observed (min, max) of each float tensor in `tensors` over an iterable of input `batches`."""
    obs = observers(g, batches, method, tensors, progress, **options)
    return {t: tuple(float(v) for v in o.range()) for t, o in obs.items()}


def _sequence_options(g, dynamic, weights, target, granularity, int8_attention, float_gather):
    """The options of a sequence graph's model (docs/transformers.md), checked: it runs dynamic int8 or fp32."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    if not isinstance(int8_attention, bool):
        raise TypeError(f"int8_attention must be True or False, got {int8_attention!r}")
    if not isinstance(float_gather, bool):
        raise TypeError(f"float_gather must be True or False, got {float_gather!r}")
    if not g.sequence:
        if granularity != "row" or int8_attention or float_gather:
            raise ValueError("granularity=, int8_attention= and float_gather= apply to sequence graphs "
                             "(docs/transformers.md); this graph is an image/MLP graph")
        return {}
    if target is not None:
        raise ValueError("target= emulates a runtime's static int8 kernels; a sequence graph runs dynamic=True or "
                         "weights='fp32'")
    if weights == "fp32":
        if int8_attention or float_gather:
            raise ValueError("int8_attention=True and float_gather=True choose how a dynamic model quantizes; "
                             "weights='fp32' runs everything in float")
        return {}
    if not dynamic or weights != "int8":
        raise ValueError("a sequence graph (docs/transformers.md) runs in dynamic int8 (dynamic=True, weights='int8') "
                         "or in float (weights='fp32')")
    return {"granularity": granularity, "int8_attention": int8_attention, "int8_gather": not float_gather}


def quantize_model(g, calib=None, *, method="minmax", per_channel=True, weights="int8", activations="int8",
                   dynamic=False, rounding="double", progress=None, method_options=None, target=None, ranges=None,
                   granularity="row", int8_attention=False, float_gather=False):
    """A :class:`Model` from the validated float graph `g` (see :func:`fixq.archive.load_float_model`).

    `calib` is an iterable of float input batches (NCHW, as the model takes them); static mode needs it,
    dynamic mode (`dynamic=True`) ignores it.  `method` picks the activation calibrator
    (``fixq.calibrate.make``), `per_channel` the weight granularity, `activations` int8 or uint8,
    `rounding` the requantization (double, single or fp32).  `weights`: ``"int8"``; ``"ternary"``
    (fixq.ternarize) or ``"binary"`` (fixq.binarize), whose {-1, 0, +1} codes run through the same int8
    path with alpha as the per-channel weight scale; or ``"fp16"``: float16 weights, float32
    activations (weight-only compression, fixq.fp16_linear), no calibration.  `target`: a runtime whose
    requantization the model emulates by default when run (``fixq.targets``, docs/conformance.md).
    ``"fp32"``: float32 weights and activations (float mode, no quantization).  A sequence graph
    (docs/transformers.md) takes ``dynamic=True`` (int8 linears, activations quantized per row or per tensor
    at run time by `granularity`, the attention matmuls in float unless `int8_attention`, the gather tables int8 per
    row unless `float_gather`) or ``"fp32"``.
    `ranges`, instead of `calib`: the (min, max) of every tensor of :func:`calibrated_tensors`, observed
    elsewhere (``fixq.dask.calibrate`` over a cluster, calibration graph :func:`calibration_graph`); `method`
    and `method_options` then only record how they were observed."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights must be one of {list(WEIGHT_TYPES)}, got {weights!r}")
    if activations not in ACT_TYPES:
        raise ValueError(f"activations must be one of {list(ACT_TYPES)}, got {activations!r}")
    rounding_arg(rounding)
    if target is not None:
        targets.target_arg(target)
    if weights in ("fp16", "fp32"):
        dynamic, calib, ranges = False, None, None
    seq_options = _sequence_options(g, dynamic, weights, target, granularity, int8_attention, float_gather)
    float_acts = dynamic or weights in ("fp16", "fp32")
    act_dt = ACT_TYPES[activations]
    steps = plan_steps(g)
    if not float_acts:  # before calibration, not after it
        check_engine_limits(sum(s["op"] != "softmax" for s in steps), len(g.outputs), "graph")
    arrays = {}
    wkeys = _weight_keys(g)
    tensors = {}
    lowbit = lowbit_weights(g, weights)
    if not float_acts:
        observed = calibrated_tensors(g)
        if ranges is not None:
            if calib is not None:
                raise ValueError("give calib= (batches to observe) or ranges= (observed ranges), not both")
            ranges = _given_ranges(ranges, observed)
        elif calib is None:
            raise ValueError("static quantization needs calibration data (calib=) or ranges=; or use dynamic=True")
        else:
            ranges = observe_ranges(calibration_graph(g, lowbit), calib, method, observed, progress,
                                    **(method_options or {}))
        qp = {t: tensor_qparams(*ranges[t], act_dt) for t in observed}
        for s in steps:  # pass-through steps keep their input's quantization
            if s["output"] not in qp:
                qp[s["output"]] = qp[s["inputs"][0]]
        for t, (sc, zp) in qp.items():
            arrays[f"t:{t}:scale"] = np.float32(sc)
            arrays[f"t:{t}:zero_point"] = np.int32(zp)
    g_nodes = {n.name: n for n in g.nodes}
    for s in steps:
        name = s["name"]
        tensors[s["output"]] = list(g.shapes[s["output"]])
        if s["op"] in G.WEIGHTED:
            wk, bk = wkeys[name]
            w = g.weights[wk]
            b = g.weights[bk] if bk else np.zeros(w.shape[0], np.float32)
            s["weight_shape"] = list(w.shape)
            if weights == "fp16":
                arrays[f"{name}:weight"] = pack_fp16(w.reshape(w.shape[0], -1)).weights.reshape(w.shape)
                arrays[f"{name}:bias"] = b.astype(np.float32)
                continue
            if weights == "fp32":
                arrays[f"{name}:weight"], arrays[f"{name}:bias"] = w, b.astype(np.float32)
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
            arrays[f"{name}:bias"] = quantize_bias(b, s_in, ws)[0]
            m, sh, sc = _requant_params(bias_scale / np.float64(s_out))
            arrays[f"{name}:multiplier"], arrays[f"{name}:shift"], arrays[f"{name}:scale"] = m, sh, sc
        elif s["op"] in G.FLOAT_WEIGHTED:
            node = g_nodes[name]
            w = g.weights[node.attrs["weight"]]
            s["weight_shape"] = list(w.shape)
            arrays[f"{name}:weight"] = w
            if s["op"] == "gather" and seq_options.get("int8_gather"):
                arrays[f"{name}:weight"], arrays[f"{name}:weight_scale"] = quantize_rows(w)
            if s["op"] == "layer_norm":
                arrays[f"{name}:bias"] = g.weights[node.attrs["bias"]] if node.attrs["bias"] else np.zeros_like(w)
        elif s["op"] == "concat" and not float_acts:
            s_out = np.float64(qp[s["output"]][0])
            m, sh, sc = _requant_params([np.float64(qp[t][0]) / s_out for t in s["inputs"]])
            arrays[f"{name}:multiplier"], arrays[f"{name}:shift"], arrays[f"{name}:scale"] = m, sh, sc
        elif s["op"] == "global_avgpool" and not float_acts:
            _, _, h, w = g.shapes[s["inputs"][0]]
            real = np.float64(qp[s["inputs"][0]][0]) / (np.float64(qp[s["output"]][0]) * (h * w))
            m, sh, sc = _requant_params([real])
            arrays[f"{name}:multiplier"], arrays[f"{name}:shift"], arrays[f"{name}:scale"] = m, sh, sc
        elif s["op"] in G.TABLE_OPS and not float_acts:
            arrays[f"{name}:table"] = activation_table(s["op"], s, *qp[s["inputs"][0]], *qp[s["output"]], act_dt)
        elif s["op"] == "batchnorm" and not float_acts:
            arrays[f"{name}:table"] = batchnorm_table(s["scale"], s["shift"], *qp[s["inputs"][0]], *qp[s["output"]],
                                                      act_dt)
        if not float_acts and s["act"] is not None:  # each target quantizes relu6's bound its own way
            sc, zp = qp[s["output"]]
            s["out_min"], s["out_max"] = targets.activation_range(s["act"], sc, zp, act_dt, target)
    meta = {
        "format": QMODEL_FORMAT,
        "fixq_version": VERSION,
        "options": {"method": None if float_acts else method,
                    "per_channel": bool(per_channel or weights in LOWBIT_KEY),
                    "weights": weights, "activations": activations, "dynamic": bool(dynamic),
                    "rounding": rounding, "method_options": method_options or {},
                    **({"target": target} if target is not None else {}), **seq_options},
        "graph": g.spec,
        "input": g.input,
        "input_shape": list(g.input_shape),
        "outputs": list(g.outputs),
        "tensors": dict({i["name"]: list(i["shape"]) for i in g.inputs}, **tensors),
        "steps": steps,
    }
    if g.sequence:
        meta["inputs"] = [dict(i, shape=list(i["shape"])) for i in g.inputs]
        meta["dims"] = dict(g.dims)
    return Model(meta, arrays)

