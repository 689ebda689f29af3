"""The C plan of a static int8 model (``_core.Engine``, src/fixq/_csrc/fixq_engine.h): numbered NHWC
tensors and one checked descriptor per step, built once with the GIL; ``Model.run`` then makes one
``nogil`` call per batch.  Every parameter goes through the same checks as the public kernel
functions (a call of each on a probe), so the plan cannot hold what they would refuse."""
import numpy as np

from .. import _core, arith, eltwise, gemm, graph as G, layout as L, targets
from .._validate import INT_RANGES, scale_arg, zero_point_arg
from ..archive import ArchiveError

TFLITE_TARGETS = ("tflite", "tflite-reference", "xnnpack")


def eltwise_params(op, kw):
    """The checked (by a call of ``fixq.qadd`` / ``fixq.qmul``) ``_core.EltwiseParams`` of `kw`."""
    dt = np.dtype(kw["out_dtype"])
    probe = np.zeros(1, dt)
    (eltwise.qadd if op == "add" else eltwise.qmul)(probe, probe, **kw)
    return _core.EltwiseParams(op, kw["rounding"], dt.name, float(kw["a_scale"]), int(kw["a_zero_point"]),
                               dt.name, float(kw["b_scale"]), int(kw["b_zero_point"]), dt.name,
                               float(kw["out_scale"]), int(kw["out_zero_point"]), int(kw["out_min"]),
                               int(kw["out_max"]))


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


def engine_plan(m):
    """(engine, index, softmax) of Model `m`: its steps as a C plan (_core.Engine) over NHWC tensors, where
    tensor 0 is the float input, then the quantized input and every step's output; ``index`` maps each
    tensor name to its number; ``softmax`` maps each softmax output the plan does not compute
    (:func:`softmax_step`) to (its input, the NHWC axis, the target's 8-bit softmax of the raw input or None:
    :func:`quantized_softmax`): that softmax runs in numpy on the dequantized output, as in steps.static_step.

    With ``m.target`` each step takes that runtime's recipe: one of fixq's kernel modes where it is one
    (fixq.targets.gemm_out_stage, TFLite's fixed-point ADD/MUL), else the plan's own element-by-element
    form of it (fixq_engine.h: fixq_eng_quantize_form, fixq_eng_target); None if a step's recipe has
    neither, so that the model runs the numpy steps."""
    shapes = m.meta["tensors"]
    dims = {t: ((sh[2], sh[3], sh[1]) if len(sh) == 4 else (1, 1, sh[1])) for t, sh in shapes.items()}
    tensors = [dims[m.input] + (4,)]
    index = {}

    def tensor(name):
        index[name] = len(tensors)
        tensors.append(dims[name] + (1,))
        return len(tensors) - 1
    first = _quantize_step(m)
    if first is None:
        return None
    first.update(name=m.input, out=tensor(m.input), **{"in": [0]})
    plan = [first]
    softmax = {}
    for s in m.steps:
        d = engine_step(m, s)
        if d is None and s["op"] == "softmax":
            softmax[s["output"]] = (s["inputs"][0], L.internal_axis(s["axis"], len(shapes[s["output"]])),
                                    quantized_softmax(m, s))
            continue
        if d is None:
            return None
        d.update(name=s["name"], **{"in": [index[t] for t in s["inputs"]]})
        d["out"] = tensor(s["output"])
        plan.append(d)
    outputs = []
    for t in m.outputs:
        if t in softmax:  # its input in the internal layout: dequantized, or raw for a target's int8 softmax
            src = softmax[t][0]
            outputs.append((index[src], False, *m.qparams(src),
                            dims[src] if len(shapes[src]) == 4 else dims[src][2:], softmax[t][2] is not None))
        else:
            outputs.append((index[t], len(shapes[t]) == 4, *m.qparams(t), tuple(shapes[t][1:]),
                            True))
    return _core.Engine(m.act_dtype.name, tensors, plan, outputs), index, softmax


def _quantize_step(m):
    """The input's QUANTIZE step in fixq.quantize's form (ONNX QuantizeLinear: x / scale, ties to even) or
    the target's (fixq_engine.h's fixq_eng_quantize_form); None for a scale whose reciprocal is inf."""
    sc, zp = m.qparams(m.input)
    scale_arg(sc, 1), zero_point_arg(zp, 1, m.act_dtype)  # prepared_quantize's checks
    form = "div-even" if m.target is None else targets.recipe(m.target, "quantize").rounding
    if form == "recip-even":
        inv = np.float32(1.0) / np.float32(sc)  # as targets.quantize: float32 1 / scale
        return {"op": "quantize", "scale": float(inv), "zp": zp, "form": form} if np.isfinite(inv) else None
    return {"op": "quantize", "scale": sc, "zp": zp, "form": form}


def _target_stage(m, s, op, w_scale):
    """The requantization kwargs (rounding plus multiplier/shift or scale) of `m.target`'s recipe for a
    linear/conv step where it is one of fixq's kernel modes; else the C plan's own form of the target's
    epilogue (fixq_engine.h fixq_eng_target: ruy's x86 epilogue, TFLite's reference float64 rounding) as
    ``{"target": ...}``; None for a recipe the plan lacks."""
    sc_in, sc_out = m.qparams(s["inputs"][0])[0], m.qparams(s["output"])[0]
    stage = targets.gemm_out_stage(m.target, op, sc_in, w_scale, sc_out)
    if stage is not None:
        return stage
    form = targets.recipe(m.target, op).rounding
    real = np.atleast_1d(targets.real_multiplier(m.target, op, sc_in, w_scale, sc_out))
    if form == "ruy-x86":
        mult, shift = arith.quantize_multiplier(real)
        return {"target": dict(form=form, multiplier=np.ascontiguousarray(mult, np.int32),
                               shift=np.ascontiguousarray(shift, np.int32))}
    if form == "float64-away":
        return {"target": dict(form=form, real=np.ascontiguousarray(real, np.float64))}
    return None


def _target_eltwise(m, op, sc_in, zp_in, sc_out, zp_out, lo, hi):
    """The C plan's form (fixq_eng_target) of `m.target`'s add / mul where it is not fixq's kernel:
    ONNX Runtime's float32 QLinearAdd / QLinearMul (MLAS on x86), XNNPACK's vadd / vmul; None for a
    recipe the plan lacks."""
    form = targets.recipe(m.target, op).rounding
    d = dict(a_zp=zp_in[0], b_zp=zp_in[1], out_zp=zp_out, lo=lo, hi=hi)
    if form == "fp32-add":
        return dict(d, form="onnxruntime-add", a_scale=float(np.float32(sc_in[0])), b_scale=float(np.float32(sc_in[1])),
                    out_scale=float(np.float32(sc_out)))
    if form in ("fp32-mul", "fp32"):
        return dict(d, form="onnxruntime-mul" if form == "fp32-mul" else "xnnpack-mul",
                    scale=float(targets.product_scale(sc_in[0], sc_in[1], sc_out)))
    if form == "xnnpack-add":
        m_a, m_b, shift, bias = targets.xnnpack.add_params(np.float32(sc_in[0]), np.float32(sc_in[1]),
                                                          np.float32(sc_out), zp_in[0], zp_in[1])
        return dict(d, form=form, a_mult=m_a, b_mult=m_b, shift_bits=shift, bias=bias)
    return None


def engine_rq(m, rq, zero_point, lo, hi, channels, rounding=None):
    """The output stage `rq` (``Model._requant_kw``, or a target's stage) as arrays of length `channels`,
    checked by fixq.requantize; `rounding` defaults to the model's."""
    dt = m.act_dtype
    rounding = rounding or m.rounding
    arith.requantize(np.zeros(channels, np.int32), zero_point=zero_point, qmin=lo, qmax=hi, dtype=dt,
                    rounding=rounding, **rq)
    out = {"rounding": rounding, "zero_point": np.full(channels, zero_point, np.int32), "qmin": int(lo),
           "qmax": int(hi)}
    for k, v in rq.items():
        out[k] = np.ascontiguousarray(np.broadcast_to(v, (channels,)), dtype=np.float32 if k == "scale" else np.int32)
    return out


def _geometry(s, w):
    return {} if s["op"] == "linear" else dict(kernel=tuple(w.shape[2:]), stride=tuple(s["stride"]),
                                               padding=tuple(s["padding"]), dilation=tuple(s["dilation"]))


def mean_requant(m, s):
    """(requantization kwargs, rounding) of a global_avgpool step: the target's recipe where it has one
    (fixq.targets.mean_stage), else the archive's own (rounding None: the model's)."""
    if m.target is not None:
        (_, _, h, w), (s_in, _), (s_out, _) = (m.meta["tensors"][s["inputs"][0]], m.qparams(s["inputs"][0]),
                                             m.qparams(s["output"]))
        stage = targets.mean_stage(m.target, s_in, s_out, h * w)
        if stage is not None:
            return stage, stage.pop("rounding")
        form = _mean_form(m, s)
        if form is not None and form["form"] == "double":
            return {"multiplier": np.array([form["multiplier"]], np.int32),
                    "shift": np.array([form["shift"]], np.int32)}, "double"
    return m._requant_kw(s["name"]), None


def ort_avgpool(m, s):
    """Whether avgpool2d step `s` runs ORT's QLinearAveragePool arithmetic (float32, numpy steps): with target
    onnxruntime, and wherever its input and output scales differ (only ORT models have such steps); else
    TFLite's integer average of one scale."""
    return m.target == "onnxruntime" or m.qparams(s["inputs"][0]) != m.qparams(s["output"])


def _mean_form(m, s):
    (_, c, h, w), (s_in, zp_in), (s_out, zp_out) = (m.meta["tensors"][s["inputs"][0]], m.qparams(s["inputs"][0]),
                                                   m.qparams(s["output"]))
    return targets.mean_form(m.target, s_in, zp_in, s_out, zp_out, h * w, c, s.get("keep_dims", False), m.act_dtype)


def mean_target(m, s):
    """The C plan's form (fixq_eng_target) of the target's MEAN where it is not an output stage of fixq's
    (TFLite's optimized 4-D Mean, XNNPACK's), else None."""
    if m.target is None:
        return None
    form = _mean_form(m, s)
    if form is None or form["form"] == "double":
        return None
    qmin, qmax = INT_RANGES[m.act_dtype]
    d = dict(form=form["form"], out_zp=0, lo=qmin, hi=qmax)
    if form["form"] == "xnnpack-mean":
        return dict(d, scale=form["scale"], offset=form["offset"])
    return dict(d, multiplier=np.array([form["multiplier"]], np.int32), shift=np.array([form["shift"]], np.int32),
                bias=form["bias"], split=form["split"])


def requantize_target(m, s, lo, hi):
    """The C plan's REQUANTIZE form of the target (fixq's own: TFLite's reference arithmetic); a step with
    ``uint8`` (a uint8 end, held shifted by -128: the same arithmetic) is computed as the runtime computes a
    uint8 QUANTIZE."""
    (s_in, zp_in), (s_out, zp_out) = m.qparams(s["inputs"][0]), m.qparams(s["output"])
    size = int(np.prod(m.meta["tensors"][s["output"]][1:]))
    form = targets.requantize_form(m.target, s_in, zp_in, s_out, zp_out, size,
                                   np.uint8 if s.get("uint8") else m.act_dtype)
    d = dict(form=form["form"], a_zp=zp_in, out_zp=zp_out, lo=lo, hi=hi)
    if form["form"] == "xnnpack-requantize":
        return dict(d, a_mult=form["multiplier"])
    return dict(d, multiplier=np.array([form["multiplier"]], np.int32), shift=np.array([form["shift"]], np.int32),
                split=form["split"])


def _tflite_binary(op, sa, sb, so, d, run=0, split=0, neon=0):
    """The C plan's form of TFLite's SUB (SubElementwise), or of the optimized ADD / MUL whose outputs run in
    runs of `run`, the first `split` of each in NEON form `neon` (fixq.targets.tflite.neon_runs)."""
    mults = (targets.tflite.mul_multiplier(sa, sb, so),) if op == "mul" else targets.tflite.sub_multipliers(sa, sb, so)
    return dict(d, form=f"tflite-{op}", multiplier=np.array([mm for mm, _ in mults], np.int32),
                shift=np.array([sh for _, sh in mults], np.int32), run=run, split=split, neon=neon)


def _litert_binary(m, s, op, sc_in, zp_in, sc_out, zp_out, lo, hi, shapes):
    """A LiteRT kernel set's int8 ADD / SUB / MUL (fixq.targets.binary8) on inputs of one sample's `shapes`:
    XNNPACK's vadd / vmul (vadd with b negated) where the delegate takes the node; TFLite's SUB; its reference
    ADD / MUL (fixq's kernel, TFLite's double rounding) where no NEON loop parts from it; else the optimized
    kernel's NEON and scalar loops by position."""
    (sa, sb), (za, zb) = sc_in, zp_in
    if m.target == "xnnpack" and s.get("act") and not targets.xnnpack.binary_delegated(op, sa, sb, sc_out):
        lo, hi = targets.activation_range(s["act"], sc_out, zp_out, m.act_dtype, "tflite")  # TFLite's kernel
    form = targets.binary8_form(op, m.target, sa, sb, sc_out, za, zb, zp_out, lo, hi)
    d = dict(a_zp=za, b_zp=zb, out_zp=zp_out, lo=lo, hi=hi)
    if form == "xnnpack" and op == "sub":
        m_a, m_b, shift, bias = targets.xnnpack.sub_params(np.float32(sa), np.float32(sb), np.float32(sc_out), za, zb)
        return dict(op="eltwise", target=dict(d, form="xnnpack-add", a_mult=m_a, b_mult=m_b, shift_bits=shift,
                                              bias=bias))
    if form == "xnnpack":
        return dict(op="eltwise", target=_target_eltwise(m, op, sc_in, zp_in, sc_out, zp_out, lo, hi))
    if op == "sub":
        return dict(op="eltwise", target=_tflite_binary(op, sa, sb, sc_out, d))
    scalar, run, split = targets.tflite.neon_runs(*shapes, (16, 8) if op == "add" else (16, 16))
    neon = 2 if scalar and op == "add" else 1  # AddScalarBroadcast's NEON loop rounds as no other
    if m.target == "tflite-reference" or split == 0 or (form == "reference" and neon == 1):
        kw = dict(a_scale=sa, a_zero_point=za, b_scale=sb, b_zero_point=zb, out_scale=sc_out,
                  out_zero_point=zp_out, out_min=lo, out_max=hi, out_dtype=m.act_dtype, rounding="double")
        return dict(op="eltwise", eltwise=eltwise_params(op, kw))
    return dict(op="eltwise", target=_tflite_binary(op, sa, sb, sc_out, d, run, split, neon))


def _binary_step(m, s, op, sc_in, zp_in, sc_out, zp_out, lo, hi):
    """The eltwise step of an add / mul / sub (engine/steps.py binary_step and static_step): its operands
    broadcast to the output's shape, a constant one held by the plan; None for a shape or recipe the plan
    lacks."""
    shapes, dt = m.meta["tensors"], m.act_dtype
    if any(len(shapes[t]) not in (2, 4) for t in s["inputs"] + [s["output"]]):
        return None
    dims = [(1, 1, sh[1]) if len(sh) == 2 else (sh[2], sh[3], sh[1]) for sh in (shapes[t] for t in s["inputs"])]
    at = s.get("constant")
    if at is not None:
        c = m.arrays[f"{s['name']}:constant"]
        if c.dtype != dt or c.ndim not in (2, 4):
            return None
        c = np.ascontiguousarray(c.reshape((1, 1) * (c.ndim == 2) + c.shape[1:]))
        dims.insert(at, c.shape)
    if m.target in TFLITE_TARGETS and dt == np.int8:
        d = _litert_binary(m, s, op, sc_in, zp_in, sc_out, zp_out, lo, hi, [(1,) + x for x in dims])
    elif op == "sub":
        d = dict(op="eltwise", target=_tflite_binary(op, sc_in[0], sc_in[1], sc_out, dict(
            a_zp=zp_in[0], b_zp=zp_in[1], out_zp=zp_out, lo=lo, hi=hi)))
    else:
        rc = None if m.target is None else targets.recipe(m.target, op)
        if rc is not None and rc.kernel != "fixq":
            target = _target_eltwise(m, op, sc_in, zp_in, sc_out, zp_out, lo, hi)
            d = None if target is None else dict(op="eltwise", target=target)
        else:  # fixq's kernel: the model's rounding, or the target's (TFLite's ADD / MUL: "double")
            kw = dict(a_scale=sc_in[0], a_zero_point=zp_in[0], b_scale=sc_in[1], b_zero_point=zp_in[1],
                      out_scale=sc_out, out_zero_point=zp_out, out_min=lo, out_max=hi, out_dtype=dt,
                      rounding=m.rounding if rc is None else rc.rounding)
            d = dict(op="eltwise", eltwise=eltwise_params(op, kw))
    if d is not None and at is not None:
        d.update(constant=c, constant_at=at)
    return d


def step_range(m, s):
    """(out_min, out_max) of a step: its fused activation's bounds as the target quantizes them, or the
    archive's (fixq's own rule)."""
    qmin, qmax = INT_RANGES[m.act_dtype]
    if m.target is not None and s.get("act") in ("relu", "relu6"):
        return targets.activation_range(s["act"], m.qparams(s["output"])[0], m.qparams(s["output"])[1],
                                        m.act_dtype, m.target)
    return s.get("out_min", qmin), s.get("out_max", qmax)


def step_table(m, s):
    """A table op's 256 output values: the target's own table (fixq.targets.table) where it has one,
    else the archive's."""
    if m.target is not None and s["op"] in targets.TABLE_OPS:
        (s_in, zp_in), (s_out, zp_out) = m.qparams(s["inputs"][0]), m.qparams(s["output"])
        table = targets.table(m.target, s["op"], s, s_in, zp_in, s_out, zp_out, m.act_dtype)
        if table is not None:
            return table
    return np.ascontiguousarray(m.arrays[f"{s['name']}:table"])


def quantized_softmax(m, s):
    """The target's 8-bit SOFTMAX of a softmax step as a function of its raw input (internal layout) to
    raw outputs, or None, for which the softmax stays float: no target, a target without one, an output
    quantization other than TFLite's (scale 1/256 within 0.1 %, zero point the dtype's minimum) for the
    TFLite family, or with target onnxruntime a step not marked ``quantized`` (an imported QLinearSoftmax;
    ORT runs a Softmax whose output no QuantizeLinear reads in float)."""
    if m.target is None:
        return None
    (s_in, _), (s_out, zp_out) = m.qparams(s["inputs"][0]), m.qparams(s["output"])
    dt = m.act_dtype
    if (not s.get("quantized") if m.target == "onnxruntime" else
            zp_out != INT_RANGES[dt][0] or abs(s_out - 1.0 / 256) > 0.001 / 256):
        return None
    beta = s.get("beta", 1.0)
    if targets.softmax(np.zeros((1, 1), dt), m.target, s_in, beta, s_out, zp_out, dt) is None:
        return None
    axis = L.internal_axis(s["axis"], len(m.meta["tensors"][s["output"]]))

    def softmax(x):
        y = targets.softmax(np.moveaxis(x, axis, -1), m.target, s_in, beta, s_out, zp_out, dt)
        return np.ascontiguousarray(np.moveaxis(y, -1, axis))
    return softmax


def softmax_step(m, s):
    """The C plan's SOFTMAX step: the target's 8-bit softmax (:func:`quantized_softmax`) in its engine form
    (fixq.targets.softmax_form) where it runs over the channels (the last NHWC axis); else None, and the
    softmax runs in numpy."""
    if quantized_softmax(m, s) is None:
        return None
    nd = len(m.meta["tensors"][s["output"]])
    if nd not in (2, 4) or L.internal_axis(s["axis"], nd) % nd != nd - 1:
        return None
    (s_in, _), (s_out, zp_out) = m.qparams(s["inputs"][0]), m.qparams(s["output"])
    form = targets.softmax_form(m.target, s_in, s.get("beta", 1.0), s_out, zp_out, m.act_dtype)
    if form is None:
        return None
    qmin, qmax = INT_RANGES[m.act_dtype]
    form = dict(form, lo=qmin, hi=qmax, out_zp=form.get("out_zp", zp_out))
    if "multiplier" in form:
        form.update(multiplier=np.array([form["multiplier"]], np.int32), shift=np.array([form["shift"]], np.int32))
    return dict(op="softmax", target=form)


def _gemm_step(m, s, w, bias, rq=None, target=None):
    """The GEMM step of a linear or (grouped) conv: the weights packed per group, the output stage `rq`
    (or a target's epilogue), the input zero point and the text of a possible int32 overflow."""
    groups = s.get("groups", 1)
    og = w.shape[0] // groups
    zp = m.qparams(s["inputs"][0])[1]
    packed = [gemm.pack_weights(w if s["op"] == "linear" else L.conv_weight_hwc(w[k * og:(k + 1) * og]))
              for k in range(groups)]
    geo = _geometry(s, w)
    d = dict(op="gemm", groups=groups, packed=packed, bias=bias, zp=gemm._int(zp, "a_zero_point", "qlinear"),
             overflow=_overflow_message(s["name"], m.act_dtype, zp, packed, bias), **geo)
    d.update({"rq": rq} if target is None else {"target": target})
    return d


def engine_step(m, s):
    """One step of the C plan: the parameters of steps.static_step's numpy code for it (None: a target
    recipe the plan lacks)."""
    name, op, a = s["name"], s["op"], m.arrays
    dt = m.act_dtype
    qmin, qmax = INT_RANGES[dt]
    sc_in = [m.qparams(t)[0] for t in s["inputs"]]
    zp_in = [m.qparams(t)[1] for t in s["inputs"]]
    sc_out, zp_out = m.qparams(s["output"])
    lo, hi = step_range(m, s)
    if op in ("add", "mul", "sub"):
        if s.get("constant") is not None:
            k = s["constant"]
            sc_in.insert(k, float(a[f"{name}:constant_scale"]))
            zp_in.insert(k, int(a[f"{name}:constant_zero_point"]))
        return _binary_step(m, s, op, sc_in, zp_in, sc_out, zp_out, lo, hi)
    if op in G.WEIGHTED:
        w = m.weight(s)
        bias = np.ascontiguousarray(a[f"{name}:bias"], dtype=np.int32)
        rq, rounding = m._requant_kw(name), None
        if m.target is not None:
            kind = "matmul" if op == "linear" else "depthwise_conv" if s.get("depthwise") else "conv"
            rq = _target_stage(m, s, kind, a[f"{name}:weight_scale"])
            if rq is None or ("target" in rq and s.get("depthwise")):
                return None
            if "target" in rq:
                return _gemm_step(m, s, w, bias, target=dict(rq["target"], out_zp=zp_out, lo=lo, hi=hi))
            rounding = rq.pop("rounding")
        if s.get("depthwise"):
            taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))  # [kH, kW, O]
            mult = w.shape[0] // m.meta["tensors"][s["inputs"][0]][1]
            return dict(op="depthwise", groups=mult, bias=bias, taps=taps, zp=zp_in[0],
                        rq=engine_rq(m, rq, zp_out, lo, hi, w.shape[0], rounding), **_geometry(s, w))
        return _gemm_step(m, s, w, bias, rq=engine_rq(m, rq, zp_out, lo, hi, a[f"{name}:weight_scale"].shape[0],
                                                      rounding))
    if op == "concat":
        rq = m._requant_kw(name)
        nd = len(m.meta["tensors"][s["output"]])
        in_rq = [None if (sc_in[i], zp_in[i]) == (sc_out, zp_out) else
                 engine_rq(m, {k: v[i:i + 1] for k, v in rq.items()}, zp_out, qmin, qmax, 1)
                 for i in range(len(zp_in))]
        if m.target == "onnxruntime":  # QLinearConcat's tables where an fp32 output stage gives them
            scales = [None if r is None else targets.onnxruntime.concat_scale(sc_in[i], zp_in[i], sc_out, zp_out, dt)
                      for i, r in enumerate(in_rq)]
            if any(r is not None and c is None for r, c in zip(in_rq, scales)):
                return None
            in_rq = [None if c is None else engine_rq(m, {"scale": np.array([c], np.float32)}, zp_out, qmin, qmax, 1,
                                                      "fp32") for c in scales]
        return dict(op="concat", axis=L.internal_axis(s["axis"], nd) if nd == 4 else 3,
                    in_zp=np.array(zp_in, np.int32), in_rq=in_rq)
    if op == "relu":
        return dict(op="clamp", lo=zp_out, hi=qmax)
    if op == "relu6":
        lo, hi = targets.activation_range("relu6", sc_out, zp_out, dt, m.target)
        return dict(op="clamp", lo=lo, hi=hi)
    if op == "avgpool2d" and ort_avgpool(m, s):
        return None
    if op in ("maxpool2d", "avgpool2d"):
        top, left, bottom, right = G.pad4(s["padding"])
        if bottom < top or right < left:  # the C pools pad as much or more after (TFLite's SAME does)
            return None
        return dict(op=op[:-2], kernel=tuple(s["kernel"]), stride=tuple(s["stride"]), padding=(top, left),
                    padding_extra=(bottom - top, right - left), count_valid=not s.get("count_include_pad", True),
                    lo=qmin, zp=zp_out)
    if op == "pad":
        return dict(op="pad", padding=tuple(s["padding"][:2]), zp=zp_out)
    if op == "requantize":
        return dict(op="requantize", target=requantize_target(m, s, qmin, qmax))
    if op == "batchnorm":  # one table per channel: no C form yet, the model runs the numpy steps
        return None
    if op == "global_avgpool" and f"{name}:multiplier" in a:
        form = mean_target(m, s)
        if form is not None:
            return dict(op=op, target=form)
        rq, rounding = mean_requant(m, s)
        return dict(op=op, zp=zp_in[0], rq=engine_rq(m, rq, zp_out, qmin, qmax, m.meta["tensors"][s["output"]][1],
                                                      rounding))
    if op in ("global_avgpool", "flatten"):
        return dict(op=op)
    if op in G.TABLE_OPS:
        return dict(op="lut", table=step_table(m, s).view(np.uint8))
    if op == "softmax":
        return softmax_step(m, s)
    raise ArchiveError(f"step {name!r}: key 'op' {op!r} is not a fixq.qmodel/1 op")
