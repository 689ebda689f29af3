"""The numpy steps of a quantized model: the test reference of the C plan (``run_all(engine=False)``),
and the executor of what the C plan does not run (yet): ``target=`` recipes fixq's kernels lack, and
float activations between layers (dynamic mode, fp16 weights).  Each step calls fixq's public kernels
with its arguments checked once, when the step is built."""
import numpy as np

from .. import _core, arith, eltwise, gemm, graph as G, layout as L, lowbit, targets
from .._validate import INT_RANGES, scale_arg, zero_point_arg
from ..archive import ArchiveError
from ..qparams import tensor_qparams
from ..targets import onnxruntime as ort
from .plan import (TFLITE_TARGETS, eltwise_params, mean_requant, mean_target, ort_avgpool, quantized_softmax,
                   requantize_target, step_range, step_table)

def prepared_quantize(scale, zero_point, dt):
    """``arith.quantize(x, scale, zero_point, dt)`` per tensor, its arguments checked once here."""
    sc, zp = scale_arg(scale, 1), zero_point_arg(zero_point, 1, dt)
    lo, hi = INT_RANGES[dt]
    name, raw = dt.name, _core.quantize_raw

    def quantize(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.empty(x.shape, dt)
        raw(x.reshape(-1), y.reshape(-1).view(np.uint8), name, 1, 1, x.size, sc, zp, lo, hi)
        return y
    return quantize


def prepared_dequantize(scale, zero_point, dt):
    """``fixq.dequantize(q, scale, zero_point)`` per tensor, its arguments checked once here."""
    sc, zp = scale_arg(scale, 1), zero_point_arg(zero_point, 1, dt)
    name, raw = dt.name, _core.dequantize_raw

    def dequantize(q):
        q = np.ascontiguousarray(q)
        y = np.empty(q.shape, np.float32)
        raw(q.reshape(-1).view(np.uint8), name, y.reshape(-1), 1, 1, q.size, sc, zp)
        return y
    return dequantize


def prepared_requantize(rq, rounding, zero_point, lo, hi, dt, channels):
    """``arith.requantize(acc, **rq, zero_point, qmin=lo, qmax=hi, dtype=dt, rounding, axis=-1)`` with
    per-tensor or per-last-axis parameters, checked once here (the same checks as fixq.requantize)."""
    arith.requantize(np.zeros(channels, np.int32), zero_point=zero_point, qmin=lo, qmax=hi, dtype=dt,
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


def prepared_qlinear(w, bias, common, rq):
    """``gemm.qlinear(x, gemm.pack_weights(w), bias, **common, **rq, threads=threads)`` as a function of
    ``(x, threads)``: the weights packed and the output stage checked (by fixq.gemm's own checks) once,
    here, so that a call at run time goes straight to the kernel."""
    packed = gemm.pack_weights(w)
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


def prepared_eltwise(op, kw):
    """``fixq.qadd(x, y, **kw)`` / ``fixq.qmul`` on same-shape contiguous tensors as a function of
    ``(x, y, threads)``: the arguments checked (by a call of the public function) and the TFLite
    multipliers derived once, here."""
    dt = np.dtype(kw["out_dtype"])
    params = eltwise_params(op, kw)
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
    packed = gemm.pack_weights(w)
    kw = {k: v for k, v in common.items() if k != "rounding"}

    def qlinear(x, threads):
        return targets.qgemm(gemm.qlinear, x, packed, target=target, scales=scales, op=op, bias=bias, threads=threads,
                             **kw)
    return qlinear


def avg_round(acc, count):
    """TFLite reference AveragePool: ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` (C division)."""
    h = count // 2
    return np.where(acc >= 0, (acc + h) // count, -((h - acc) // count))


def binary_step(m, s, lo, hi):
    """An add / mul / sub whose inputs may broadcast (an [N, F] input against [N, H, W, C] ones as
    [N, 1, 1, F]), one of them maybe the step's constant: a LiteRT kernel set's kernels
    (fixq.targets.binary8), another target's recipe, or fixq's own (fixq.qadd / fixq.qmul with the model's
    rounding; sub: TFLite's reference arithmetic)."""
    name, op, a = s["name"], s["op"], m.arrays
    q = [m.qparams(t) for t in s["inputs"]]
    if s.get("constant") is not None:
        q.insert(s["constant"], (a[f"{name}:constant_scale"], int(a[f"{name}:constant_zero_point"])))
    (sa, za), (sb, zb) = q
    sc_out, zp_out = m.qparams(s["output"])
    ndim = len(m.meta["tensors"][s["output"]])
    dt = m.act_dtype

    def operands(xs):
        xs = list(xs)
        if s.get("constant") is not None:
            xs.insert(s["constant"], a[f"{name}:constant"])
        return [L.broadcast_operand(x, ndim) for x in xs]
    if m.target in TFLITE_TARGETS and dt == np.int8:
        if m.target == "xnnpack" and s["act"] and not targets.xnnpack.binary_delegated(op, sa, sb, sc_out):
            lo, hi = targets.activation_range(s["act"], sc_out, zp_out, dt, "tflite")  # TFLite's kernel runs it
        args = (m.target, sa, za, sb, zb, sc_out, zp_out, lo, hi)
        return lambda *xs: targets.binary8(op, *operands(xs[:-1]), *args)
    if op == "sub":
        return lambda *xs: targets.tflite.sub(*operands(xs[:-1]), sa, za, sb, zb, sc_out, zp_out, lo, hi, dt)
    kw = dict(a_scale=sa, a_zero_point=za, b_scale=sb, b_zero_point=zb, out_scale=sc_out, out_zero_point=zp_out,
              out_min=lo, out_max=hi, out_dtype=dt)
    if m.target is not None:
        kern = targets.add if op == "add" else targets.mul
        return lambda *xs: kern(*operands(xs[:-1]), target=m.target, **kw)
    kern = eltwise.qadd if op == "add" else eltwise.qmul
    return lambda *xs: kern(*operands(xs[:-1]), rounding=m.rounding, **kw)


def static_step(m, s):
    name, op, a = s["name"], s["op"], m.arrays
    dt = m.act_dtype
    qmin, qmax = INT_RANGES[dt]
    zp_in = [m.qparams(t)[1] for t in s["inputs"]]
    sc_in = [m.qparams(t)[0] for t in s["inputs"]]
    sc_out, zp_out = m.qparams(s["output"])
    lo, hi = step_range(m, s)
    rounding = m.rounding
    if op in G.WEIGHTED and not s.get("depthwise"):
        w = m.weight(s)
        groups = s.get("groups", 1)
        common = dict(a_zero_point=zp_in[0], out_zero_point=zp_out, out_min=lo, out_max=hi,
                      out_dtype=dt, rounding=rounding)
        rq = m._requant_kw(name)
        per_ch = a[f"{name}:weight_scale"].shape[0] > 1
        bias = a[f"{name}:bias"]
        if m.target is not None:
            scales = (sc_in[0], a[f"{name}:weight_scale"], sc_out)
            if op == "linear":
                return _target_qlinear(w, bias, common, m.target, "matmul", scales)
        elif op == "linear":
            return prepared_qlinear(w, bias, common, rq)
        og = w.shape[0] // groups
        ig = w.shape[1]
        wg = []
        for k in range(groups):
            sl = slice(k * og, (k + 1) * og)
            rqk = {key: (v[sl] if per_ch else v) for key, v in rq.items()}
            if m.target is not None:
                ws = scales[1][sl] if per_ch else scales[1]
                wg.append(_target_qlinear(L.conv_weight_hwc(w[sl]), bias[sl], common, m.target, "conv",
                                          (scales[0], ws, scales[2])))
            else:
                wg.append(prepared_qlinear(L.conv_weight_hwc(w[sl]), bias[sl], common, rqk))
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
        w = m.weight(s)
        c = m.meta["tensors"][s["inputs"][0]][1]
        mult = w.shape[0] // c
        taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)).astype(np.int32)  # [kH, kW, O]
        pad = zp_in[0]
        # sum_t (x_t - zp) w_t + bias == sum_t x_t w_t + (bias - zp sum_t w_t), exactly in int32
        bias = a[f"{name}:bias"] - np.int32(pad) * taps.sum(axis=(0, 1), dtype=np.int32)
        if m.target is not None:
            rq_args = (m.target, "depthwise_conv", sc_in[0], a[f"{name}:weight_scale"], sc_out, zp_out)

            def requantize(acc):
                return targets.requantize(acc, *rq_args, out_min=lo, out_max=hi, dtype=dt)
        else:
            requantize = prepared_requantize(m._requant_kw(name), rounding, zp_out, lo, hi, dt, w.shape[0])
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
    if op in ("add", "mul", "sub") and (s.get("broadcast") or s.get("constant") is not None
                                        or (m.target in TFLITE_TARGETS and dt == np.int8)):
        return binary_step(m, s, lo, hi)
    if op in ("add", "mul"):
        kw = dict(a_scale=sc_in[0], a_zero_point=zp_in[0], b_scale=sc_in[1], b_zero_point=zp_in[1],
                  out_scale=sc_out, out_zero_point=zp_out, out_min=lo, out_max=hi, out_dtype=dt,
                  rounding=rounding)
        if m.target is None:
            return prepared_eltwise(op, kw)
        kern = targets.add if op == "add" else targets.mul
        del kw["rounding"]
        kw["target"] = m.target

        def eltwise(x, y, threads):
            return kern(x, y, **kw)
        return eltwise
    if op == "sub":
        if m.target == "xnnpack" and dt == np.int8:
            kern = targets.xnnpack.sub
        else:
            kern = targets.tflite.sub
        args = (sc_in[0], zp_in[0], sc_in[1], zp_in[1], sc_out, zp_out, lo, hi, dt)
        return lambda x, y, threads: kern(x, y, *args)
    if op == "concat":
        rq = m._requant_kw(name)
        axis = L.internal_axis(s["axis"], len(m.meta["tensors"][s["output"]]))
        rescale = [None if (sc_in[i], zp_in[i]) == (sc_out, zp_out) else
                   (zp_in[i], prepared_requantize({k: v[i] for k, v in rq.items()}, rounding, zp_out, qmin, qmax,
                                                   dt, 1))
                   for i in range(len(zp_in))]
        if m.target == "onnxruntime":  # QLinearConcat: a table per input at another scale
            rescale = [None if r is None else
                       (0, targets.onnxruntime.concat_table(sc_in[i], zp_in[i], sc_out, zp_out, dt)) for i, r in
                       enumerate(rescale)]

            def concat(*xs):
                return np.concatenate([x if r is None else r[1][x.view(np.uint8)] for x, r in zip(xs[:-1], rescale)],
                                      axis=axis)
            return concat

        def concat(*xs):
            return np.concatenate([x if r is None else r[1](x.astype(np.int32) - r[0])
                                   for x, r in zip(xs[:-1], rescale)], axis=axis)
        return concat
    if op == "relu":
        return lambda x, threads: np.maximum(x, dt.type(zp_out))
    if op == "relu6":
        bottom, top = targets.activation_range("relu6", sc_out, zp_out, dt, m.target)
        return lambda x, threads: np.clip(x, bottom, top).astype(dt, copy=False)
    if op == "maxpool2d":
        kernel, stride = tuple(s["kernel"]), tuple(s["stride"])

        def maxpool(x, threads):
            xp, pad = L.padded(x, s["padding"], qmin)
            return L.window_reduce(xp, kernel, stride, pad, qmin, np.maximum)
        return maxpool
    if op == "avgpool2d" and ort_avgpool(m, s):
        geo = (tuple(s["kernel"]), tuple(s["stride"]), tuple(s["padding"]))
        # int8: ORT runs fixq's QDQ export on uint8 (fixq.io.onnx_export), a QOperator model imported from
        # ONNX (method "onnx") on its int8 kernel
        args = (sc_in[0], zp_in[0], sc_out, zp_out, dt, m.options["method"] != "onnx")
        return lambda x, threads: targets.onnxruntime.qlinear_avgpool(x, *geo, *args)
    if op == "avgpool2d":
        kernel, stride, valid = tuple(s["kernel"]), tuple(s["stride"]), not s.get("count_include_pad", True)
        count = kernel[0] * kernel[1]

        fill = 0 if valid else zp_out

        def avgpool(x, threads):
            xp, pad = L.padded(x.astype(np.int32), s["padding"], fill)
            total = L.window_reduce(xp, kernel, stride, pad, fill, np.add, np.int32)
            if valid:  # TFLite: the taps inside the input are the count
                ones, pad = L.padded(np.ones((1,) + x.shape[1:3] + (1,), np.int32), s["padding"], 0)
                return avg_round(total, L.window_reduce(ones, kernel, stride, pad, 0, np.add)).astype(dt)
            return avg_round(total, count).astype(dt)
        return avgpool
    if op == "pad":
        top, left, bottom, right = s["padding"]
        return lambda x, threads: np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                                         constant_values=dt.type(zp_out))
    if op == "requantize":
        form = requantize_target(m, s, qmin, qmax)

        def requantize(x, threads):
            v = x.reshape(x.shape[0], -1).astype(np.int64) - zp_in[0]
            if form["form"] == "xnnpack-requantize":
                y = ((v * form["a_mult"] + 128) >> 8) + zp_out
            else:
                mult, shift = int(form["multiplier"][0]), int(form["shift"][0])
                y = arith.multiply_by_quantized_multiplier(v, mult, shift).astype(np.int64)
                k = form["split"]
                y[:, :k] = targets.tflite.neon_mbqm(v[:, :k], mult, shift)
                y += zp_out
            return np.clip(y, qmin, qmax).astype(dt).reshape(x.shape)
        return requantize
    if op == "global_avgpool" and mean_target(m, s) is not None:
        sum_form = mean_target(m, s)

        def mean(x, threads):
            sums = x.astype(np.int64).sum(axis=(1, 2))
            if sum_form["form"] == "xnnpack-mean":
                v = (sums.astype(np.float32) * np.float32(sum_form["scale"])).astype(np.float32)
                y = np.rint((v + np.float32(sum_form["offset"])).astype(np.float32))
            else:
                mult, shift, k = int(sum_form["multiplier"][0]), int(sum_form["shift"][0]), sum_form["split"]
                y = arith.multiply_by_quantized_multiplier(sums, mult, shift).astype(np.int64)
                y[:, :k] = targets.tflite.neon_mbqm(sums[:, :k], mult, shift)
                y += sum_form["bias"]
            return np.clip(y, qmin, qmax).astype(dt)
        return mean
    if op == "global_avgpool" and f"{name}:multiplier" in a:
        # sum of (q - zp_in) over h x w, exact in int32, requantized by s_in / (s_out * h * w)
        rq, mean_rounding = mean_requant(m, s)
        requantize = prepared_requantize(rq, mean_rounding or rounding, zp_out, qmin, qmax, dt, 1)
        return lambda x, threads: requantize(x.sum(axis=(1, 2), dtype=np.int32)
                                             - np.int32(zp_in[0] * x.shape[1] * x.shape[2]))
    if op == "global_avgpool":  # an archive of fixq 0.1: the input's scale, TFLite's rounded average
        return lambda x, threads: avg_round(x.sum(axis=(1, 2), dtype=np.int32),
                                             x.shape[1] * x.shape[2]).astype(dt)
    if op == "flatten":
        return lambda x, threads: L.flatten(x)
    if op == "batchnorm":  # channel c's table at row c, indexed by the input's byte; channels last (NHWC)
        table = np.ascontiguousarray(a[f"{name}:table"]).view(np.uint8)
        flat, base = table.reshape(-1), np.arange(table.shape[0]) * 256
        return lambda x, threads: flat[base + x.view(np.uint8)].view(dt)
    if op in G.TABLE_OPS:  # indexed by the input's byte, as the C plan's LUT step
        table = step_table(m, s)
        return lambda x, threads: table[x.view(np.uint8)]
    if op == "softmax":
        quantized = quantized_softmax(m, s)
        if quantized is not None:
            return lambda x, threads: quantized(x)
        axis = L.internal_axis(s["axis"], len(m.meta["tensors"][s["output"]]))
        dequantize = prepared_dequantize(sc_in[0], zp_in[0], dt)
        return lambda x, threads: G.softmax(dequantize(x), axis, s.get("beta", 1.0))
    raise ArchiveError(f"step {name!r}: key 'op' {op!r} is not a fixq.qmodel/1 op")


def float_step(m, s):
    """Float activations.  Dynamic mode: linear/conv quantize their input per batch (its own
    min/max), run the int8 GEMM to int32 and rescale to float.  fp16 weights: linear/conv run
    lowbit.fp16_linear; fp32 weights: a float32 GEMM.  Everything else runs in float."""
    name, op, a = s["name"], s["op"], m.arrays
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

    def finish(outs):  # y is a new array: the activation writes into it
        y = outs[0] if groups == 1 else np.concatenate(outs, axis=-1)
        if s["act"] == "relu":
            np.maximum(y, 0, out=y)
        elif s["act"] == "relu6":
            np.clip(y, 0, 6, out=y)
        return y

    if m.weights in ("fp16", "fp32"):
        w = a[f"{name}:weight"].astype(np.float32)  # float16 -> float32 -> float16 is exact
        ws = [w if op == "linear" else L.conv_weight_hwc(w[k * og:(k + 1) * og]) for k in range(groups)]
        biases = [np.ascontiguousarray(bias[k * og:(k + 1) * og]) for k in range(groups)]
        if m.weights == "fp16":
            packs, fp16_linear = [lowbit.pack_fp16(wk) for wk in ws], lowbit.fp16_linear
        else:  # float32 weights: one float GEMM
            packs = [np.ascontiguousarray(wk.T) for wk in ws]

            def fp16_linear(cols, wt, b):
                return cols @ wt + b

        def fp16_step(x, threads):
            outs = []
            for k in range(groups):
                cols, lead = gemm_input(np.ascontiguousarray(x, dtype=np.float32), k, 0.0)
                outs.append(fp16_linear(cols, packs[k], biases[k]).reshape(lead + (og,)))
            return finish(outs)
        return fp16_step
    w = m.weight(s)
    ws, wzp = a[f"{name}:weight_scale"], a[f"{name}:weight_zero_point"]
    dt = m.act_dtype
    qlinear = gemm.qlinear

    def per_group(v, k):
        return v if v.size == 1 else v[k * og:(k + 1) * og]

    def zero_point(v):  # a scalar, or one per output column
        return int(v[0]) if v.size == 1 else v
    if op == "conv2d":
        packs = [gemm.pack_weights(L.conv_weight_hwc(w[k * og:(k + 1) * og]), zero_point(per_group(wzp, k)))
                 for k in range(groups)]
    else:
        packs = [gemm.pack_weights(w, zero_point(wzp))]
    biases = [bias[k * og:(k + 1) * og] for k in range(groups)]
    if m.target == "onnxruntime":
        return _ort_dynamic(name, op, packs, [per_group(ws, k) for k in range(groups)], biases, gemm_input, finish)
    scales = [per_group(ws.astype(np.float64), k) for k in range(groups)]

    def dynamic(x, threads):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)  # an empty batch
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"step {name!r}: its input contains NaN or Inf; replace or mask them")
        xs, xz = tensor_qparams(min(lo, 0.0), max(hi, 0.0), dt)
        xq = arith.quantize(x, xs, xz, dtype=dt)
        outs = []
        for k, packed in enumerate(packs):
            cols, lead = gemm_input(xq, k, xz)
            acc = qlinear(cols, packed, a_zero_point=xz, out_dtype=np.int32, threads=threads)
            outs.append(((acc * (np.float64(xs) * scales[k])).astype(np.float32) + biases[k]).reshape(
                lead + (og,)))
        return finish(outs)
    return dynamic


def _ort_dynamic(name, op, packs, scales, biases, gemm_input, finish):
    """ORT's DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul(x_scale * w_scale) -> Add(bias),
    which its fused DynamicQuantizeMatMul (MLAS_QGEMM_SCALE_BIAS_OUTPUT_PROCESSOR) computes alike: the input
    quantized to uint8 per tensor (GetQuantizationParameter, MlasQuantizeLinear), exact int32 sums, then
    (float)acc * (x_scale * w_scale) + bias, each operation rounded to float32 (no fused multiply-add).  A linear
    is one call of float_ops.dynamic_linear's C kernel (per tensor); a conv quantizes the whole tensor before its
    patches are gathered (a stride may skip values that still set the range), pads with the zero point (ConvInteger's
    im2col) and runs the epilogue in numpy float32."""
    if op == "linear":  # float_ops.dynamic_linear, its arguments checked once here (the C call checks x's size)
        raw, packed, bias, n = _core.dynamic_linear_raw, packs[0], biases[0], packs[0].n
        ws = np.ascontiguousarray(np.broadcast_to(scales[0], (n,)))

        def ort_linear(x, threads):
            x = np.ascontiguousarray(x, dtype=np.float32)
            y = np.empty((x.shape[0], n), np.float32)
            raw(x, x.shape[0], packed, ws, bias, "tensor", y, threads)
            return finish([y])
        return ort_linear
    qparams, quantize, qlinear = ort.dynamic_qparams, targets.quantize, gemm.qlinear

    def ort_conv(x, threads):
        x = np.ascontiguousarray(x, dtype=np.float32)
        try:
            xs, xz = qparams(x)
        except ValueError as e:
            raise ValueError(f"step {name!r}: {e}") from None
        xq = quantize(x, "onnxruntime", xs, xz, np.uint8)
        outs = []
        for k, packed in enumerate(packs):
            cols, lead = gemm_input(xq, k, xz)
            acc = qlinear(cols, packed, a_zero_point=xz, out_dtype=np.int32, threads=threads)
            outs.append((acc.astype(np.float32) * (xs * scales[k]) + biases[k]).reshape(lead + (acc.shape[-1],)))
        return finish(outs)
    return ort_conv
