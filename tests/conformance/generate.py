"""Golden vectors from real runtimes (not run by CI).

Builds single-op models, runs them on each runtime / resolver and writes one
small ``.npz`` per (target, op, variant) under ``tests/conformance/cases/``:

- TFLite / LiteRT: Keras model -> TFLiteConverter full-int8 post-training
  quantization (representative dataset) -> run with ai_edge_litert under
  ``tflite-reference`` (BUILTIN_REF), ``tflite`` (BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  and ``xnnpack`` (BUILTIN: the default XNNPACK delegate).  The ``pow2``
  variants then set the output scale (and for QUANTIZE the input scale) to a
  power of two in the flatbuffer, so that rounding ties are frequent.
- ONNX Runtime: ``onnx.helper`` graphs (QLinearMatMul, QLinearConv, QLinearAdd,
  QLinearMul, QuantizeLinear, MatMulInteger), one intra-op thread.

Every quantization parameter is read back from the runtime (interpreter
tensor details) rather than from what was asked for.  Needs tensorflow-cpu,
ai-edge-litert, onnx and onnxruntime, in their own venv::

    python tests/conformance/generate.py            # rewrites cases/
"""
import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

CASES = Path(__file__).resolve().parent / "cases"
P2 = 2.0 ** -4  # input scale of the pow2 variants


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(sorted(f for f in flags if f.startswith(("avx2", "avx512_vnni", "avx_vnni",
                                                                              "avx512f", "fma"))))
    except OSError:
        pass
    return platform.machine()


def save(name, **arrays):
    CASES.mkdir(parents=True, exist_ok=True)
    arrays["cpu"] = _cpu_flags()
    np.savez_compressed(CASES / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})


# --------------------------------------------------------------------------- TFLite / LiteRT

def tflite_models(rng):
    """(op, variant, keras model, representative inputs, int8 inputs to run, attrs, scale edits)."""
    from tensorflow import keras

    def grid_rep(shape, lo, hi, n=8):
        # representative data spanning exactly [lo, hi] * P2 so the calibrated scale is P2
        out = []
        for i in range(n):
            x = rng.integers(lo, hi + 1, size=shape).astype(np.float32) * P2
            x.flat[0], x.flat[1] = lo * P2, hi * P2
            out.append(x)
        return out

    def mixed_int8(shape, small=3, center=0):
        # rows of small values around the zero point (frequent exact ties), full-range rows, the extremes
        x = rng.integers(-128, 128, size=shape).astype(np.int8)
        flat = x.reshape(-1, shape[-1])
        flat[0::3] = center + rng.integers(-small, small + 1, size=flat[0::3].shape)
        flat[1, :] = -128
        flat[2, :] = 127
        return x

    def pow2_weights(shape, axis_out, small=3):
        # integer weights times 2^-6; each output channel holds one +-127 so its scale is exactly 2^-6
        w = rng.integers(-small, small + 1, size=shape).astype(np.float32)
        wm = np.moveaxis(w, axis_out, 0).reshape(w.shape[axis_out], -1)
        wm[:, 0] = 127
        wm[1::2, 1] = -127
        w = np.moveaxis(wm.reshape(np.moveaxis(w, axis_out, 0).shape), 0, axis_out)
        return w * 2.0 ** -6

    models = []
    # FULLY_CONNECTED [B, K] x [K, N]
    for variant, (b, k, n) in (("pow2", (9, 33, 17)), ("rand", (7, 64, 10))):
        inp = keras.Input((k,), batch_size=b)
        dense = keras.layers.Dense(n, activation="relu" if variant == "rand" else None)
        m = keras.Model(inp, dense(inp))
        if variant == "pow2":
            w = pow2_weights((k, n), 1)
            bias = rng.integers(-40, 40, size=n).astype(np.float32) * (P2 * 2.0 ** -6)
            rep = grid_rep((b, k), -100, 155)
        else:
            w = rng.normal(0, 0.2, size=(k, n)).astype(np.float32)
            bias = rng.normal(0, 0.5, size=n).astype(np.float32)
            rep = [rng.normal(0.3, 1.0, size=(b, k)).astype(np.float32) for _ in range(8)]
        dense.set_weights([w, bias])
        models.append(("fully_connected", variant, m, [rep], [mixed_int8((b, k), 2, -28)],
                       {"activation": "relu" if variant == "rand" else "none"}, 2.0 ** -7))
    # CONV_2D NHWC, weights OHWI
    for variant, (h, w_, c, o, stride, pad) in (("pow2", (6, 7, 3, 5, 1, "same")),
                                                 ("rand", (7, 5, 4, 6, 2, "valid"))):
        inp = keras.Input((h, w_, c), batch_size=2)
        conv = keras.layers.Conv2D(o, (3, 3), strides=stride, padding=pad)
        m = keras.Model(inp, conv(inp))
        if variant == "pow2":
            kw = pow2_weights((3, 3, c, o), 3)
            bias = rng.integers(-40, 40, size=o).astype(np.float32) * (P2 * 2.0 ** -6)
            rep = grid_rep((2, h, w_, c), -90, 165)
        else:
            kw = rng.normal(0, 0.3, size=(3, 3, c, o)).astype(np.float32)
            bias = rng.normal(0, 0.5, size=o).astype(np.float32)
            rep = [rng.normal(0, 1.0, size=(2, h, w_, c)).astype(np.float32) for _ in range(8)]
        conv.set_weights([kw, bias])
        models.append(("conv2d", variant, m, [rep], [mixed_int8((2, h, w_, c), 2, -38)],
                       {"stride": stride, "padding": pad, "activation": "none"}, 2.0 ** -7))
    # DEPTHWISE_CONV_2D NHWC, weights [1, kh, kw, C*mult]
    for variant, (h, w_, c, mult, stride, pad) in (("pow2", (5, 6, 4, 1, 1, "same")),
                                                    ("rand", (6, 6, 3, 2, 2, "valid"))):
        inp = keras.Input((h, w_, c), batch_size=2)
        dw = keras.layers.DepthwiseConv2D((3, 3), strides=stride, padding=pad, depth_multiplier=mult)
        m = keras.Model(inp, dw(inp))
        if variant == "pow2":
            kw = pow2_weights((3, 3, c, mult), 2)
            bias = rng.integers(-40, 40, size=c * mult).astype(np.float32) * (P2 * 2.0 ** -6)
            rep = grid_rep((2, h, w_, c), -128, 127)
        else:
            kw = rng.normal(0, 0.3, size=(3, 3, c, mult)).astype(np.float32)
            bias = rng.normal(0, 0.5, size=c * mult).astype(np.float32)
            rep = [rng.normal(0, 1.0, size=(2, h, w_, c)).astype(np.float32) for _ in range(8)]
        dw.set_weights([kw, bias])
        models.append(("depthwise_conv2d", variant, m, [rep], [mixed_int8((2, h, w_, c), 2)],
                       {"stride": stride, "padding": pad, "depth_multiplier": mult, "activation": "none"},
                       2.0 ** -7))
    # ADD / MUL of two int8 tensors with different scales
    for op, layer in (("add", keras.layers.Add), ("mul", keras.layers.Multiply)):
        for variant in ("pow2", "rand"):
            shape = (5, 67)
            i1, i2 = keras.Input(shape[1:], batch_size=shape[0]), keras.Input(shape[1:], batch_size=shape[0])
            m = keras.Model([i1, i2], layer()([i1, i2]))
            if variant == "pow2":
                rep1 = grid_rep(shape, -100, 155)
                rep2 = [r * 2 for r in grid_rep(shape, -128, 127)]
                out_scale = 2.0 ** -3 if op == "add" else 2.0 ** -4
            else:
                rep1 = [rng.normal(0.2, 1.0, size=shape).astype(np.float32) for _ in range(8)]
                rep2 = [rng.normal(-0.1, 0.37, size=shape).astype(np.float32) for _ in range(8)]
                out_scale = None
            models.append((op, variant, m, [rep1, rep2], [mixed_int8(shape, 5), mixed_int8(shape, 5)],
                           {"activation": "none"}, out_scale))
    return models


def _convert(model, reps, int8_io=True):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep_ds():
        for i in range(len(reps[0])):
            yield [r[i] for r in reps]

    conv.representative_dataset = rep_ds
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _set_scale(flatbuffer, tensor_name_pred, scale, zero_point=None):
    """The model with the quantization scale of the tensors matching `tensor_name_pred` replaced."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.tflite")
        with open(p, "wb") as f:
            f.write(flatbuffer)
        model = fu.read_model(p)
        sg = model.subgraphs[0]
        for idx, t in enumerate(sg.tensors):
            if tensor_name_pred(sg, idx):
                t.quantization.scale = [float(scale)]
                if zero_point is not None:
                    t.quantization.zeroPoint = [int(zero_point)]
        fu.write_model(model, p)
        with open(p, "rb") as f:
            return f.read()


def _interp(flatbuffer, resolver, preserve=False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=getattr(OpResolverType, resolver),
                     num_threads=1, experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


TFLITE_RESOLVERS = {"tflite-reference": "BUILTIN_REF", "tflite": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
                    "xnnpack": "BUILTIN"}
TFLITE_OPS = {"fully_connected": "FULLY_CONNECTED", "conv2d": "CONV_2D", "depthwise_conv2d": "DEPTHWISE_CONV_2D",
              "add": "ADD", "mul": "MUL"}


def _qparams(it, idx):
    d = it.get_tensor_details()[idx] if it.get_tensor_details()[idx]["index"] == idx else \
        next(t for t in it.get_tensor_details() if t["index"] == idx)
    q = d["quantization_parameters"]
    return (np.asarray(q["scales"], np.float32), np.asarray(q["zero_points"], np.int64),
            int(q["quantized_dimension"]), d["dtype"])


def _versions():
    import ai_edge_litert
    import tensorflow as tf
    v = getattr(ai_edge_litert, "__version__", None)
    if v is None:
        from importlib.metadata import version
        v = version("ai-edge-litert")
    return f"ai-edge-litert {v}; tensorflow {tf.__version__} (converter)"


# --------------------------------------------------------------------------- multiplier-derivation probes
#
# Ties of the exact arithmetic (pow2 variants) tell the tie rules apart but not how a runtime derives its
# multiplier: float64 and float32 derivations give the same bits except near a rounding boundary.  The
# "derive" variants search, per output channel, for accumulator values where candidate derivations disagree
# and plant them through the bias (a row with x == zero point has acc == bias).

def _derive_candidates(s_in, s_w, s_out, acc):
    """{name: (result A, result B)} for the derivation pairs fixq's recipes must tell apart."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fixq
    from reference import rdbpot, srdhm

    f32 = np.float32
    rd = float(s_in) * float(s_w) / float(s_out)
    rf = f32(f32(f32(s_in) * f32(s_w)) / f32(s_out))
    (md, sd), (mf, sf) = fixq.quantize_multiplier(rd), fixq.quantize_multiplier(float(rf))

    def dbl(m, s):
        return rdbpot(srdhm(acc << max(s, 0), m), max(-s, 0))

    def ruy(m, s):
        r = max(-s, 0)
        t = ((acc << max(s, 0)) * m + (1 << 30)) >> 31
        return (t + ((1 << r) >> 1)) >> r

    def away(real):
        v = acc * real
        t = np.trunc(v)
        return t + np.copysign(1.0, v) * (np.abs(v - t) >= 0.5)

    def fp(sc):
        return np.rint((acc.astype(f32) * f32(sc)).astype(f32))

    rf_bc = f32(f32(s_in) * f32(f32(s_w) / f32(s_out)))
    return {"double: M from float64 vs float32 real": (dbl(md, sd), dbl(mf, sf)),
            "ruy: M from float64 vs float32 real": (ruy(md, sd), ruy(mf, sf)),
            "float64-away: float64 vs float32 real": (away(rd), away(float(rf))),
            "fp32: (s_in*s_w)/s_out vs float64 rounded": (fp(rf), fp(f32(rd))),
            "fp32: (s_in*s_w)/s_out vs s_in*(s_w/s_out)": (fp(rf), fp(rf_bc))}


def _derive_acc(s_in, s_w, s_out, lo, hi, prefer, only=""):
    """An accumulator in [lo, hi] where the `prefer`-th candidate pair (or any other whose name starts with
    `only`) disagrees, or None."""
    acc = np.arange(lo, hi + 1, dtype=np.int64)
    cands = [kv for kv in _derive_candidates(s_in, s_w, s_out, acc).items() if kv[0].startswith(only)]
    for name, (a, b) in cands[prefer:] + cands[:prefer]:
        hit = np.flatnonzero(a != b)
        if hit.size:
            return int(acc[hit[hit.size // 2]]), name
    return None, None


def _with_pow2x3(models):
    """Each pow2 model also as ``pow2x3``: output scale 3 * 2^-k, so exact ties of the real arithmetic are
    broken by the representation error of the multiplier, in opposite directions in float32 and float64:
    the case tells how the runtime derives its multiplier."""
    for op, variant, model, reps, inputs, attrs, out_scale in models:
        yield op, variant, model, reps, inputs, attrs, out_scale
        if variant == "pow2":
            yield op, "pow2x3", model, reps, inputs, attrs, 3 * out_scale


def run_tflite(rng):
    versions = _versions()
    for op, variant, model, reps, inputs, attrs, out_scale in _with_pow2x3(tflite_models(rng)):
        fb = _convert(model, reps)
        it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
        ops = [o for o in it0._get_ops_details() if o["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
        assert len(ops) == 1 and ops[0]["op_name"] == TFLITE_OPS[op], ops
        node = ops[0]
        out_idx = int(node["outputs"][0])
        if out_scale is not None and variant != "rand":
            zp = int(_qparams(it0, out_idx)[1][0])
            fb = _set_scale(fb, lambda sg, i: i == out_idx, out_scale, zp)
            it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
        arrays = dict(op=op, variant=variant, runtime=versions, **{k: v for k, v in attrs.items()})
        in_idx = [int(i) for i in node["inputs"]]
        if op in ("add", "mul"):
            names = ("a", "b")
        else:
            names = ("x", "w", "bias")
        for name, idx in zip(names, in_idx):
            if idx < 0:
                continue
            s, z, dim, dt = _qparams(it0, idx)
            arrays[f"{name}_scale"], arrays[f"{name}_zero_point"] = s, z
            if name in ("w", "bias"):
                arrays[name] = it0.get_tensor(idx)
                arrays[f"{name}_axis"] = dim
        s, z, _, _ = _qparams(it0, out_idx)
        arrays["y_scale"], arrays["y_zero_point"] = s, z
        graph_in = [d["index"] for d in it0.get_input_details()]
        for name, x in zip(names, inputs):
            arrays[name] = x
        # keras may order the graph inputs differently from the op inputs: map through the op's inputs
        feed_order = {idx: inputs[names.index(n)] for n, idx in zip(names, in_idx) if n in ("x", "a", "b")}
        for target, resolver in TFLITE_RESOLVERS.items():
            it = _interp(fb, resolver)
            if target == "xnnpack":
                delegated = [o["op_name"] for o in it._get_ops_details()]
                assert "DELEGATE" in delegated or not delegated or "TfLiteXNNPackDelegate" in str(delegated), \
                    f"XNNPACK did not take {op}: {delegated}"
            for gi in graph_in:
                it.set_tensor(gi, feed_order[gi])
            it.invoke()
            y = it.get_tensor(it.get_output_details()[0]["index"])
            save(f"{target}__{op}__{variant}", target=target, y=y, **arrays)
            print(f"{target:17s} {op:17s} {variant}: y {y.shape} {y.dtype}")
    run_tflite_quantize(rng, versions)
    run_tflite_derive(rng, versions)


def run_tflite_derive(rng, versions):
    """FULLY_CONNECTED whose biases plant accumulators that separate float64 from float32 multipliers."""
    from tensorflow import keras

    n = k = 24
    b = 6
    inp = keras.Input((k,), batch_size=b)
    dense = keras.layers.Dense(n)
    model = keras.Model(inp, dense(inp))
    w = np.zeros((k, n), np.float32)
    w[np.arange(n), np.arange(n)] = rng.uniform(0.05, 2.0, size=n).astype(np.float32)
    w[(np.arange(n) + 1) % k, np.arange(n)] = 0.01
    rep = [rng.normal(0.3, 1.3, size=(b, k)).astype(np.float32) for _ in range(8)]
    s_out = np.float32(0.7131)
    dense.set_weights([w, np.zeros(n, np.float32)])
    it0 = _interp(_convert(model, [rep]), "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    node = next(o for o in it0._get_ops_details() if o["op_name"] == "FULLY_CONNECTED")
    s_in, zp_in = (v[0] for v in _qparams(it0, int(node["inputs"][0]))[:2])
    s_w = _qparams(it0, int(node["inputs"][1]))[0]
    bias = np.zeros(n, np.float64)
    for c in range(n):
        lim = min(int(127 / (float(s_in) * float(s_w[c]) / float(s_out))), 2**22)
        acc, why = _derive_acc(s_in, s_w[c], s_out, -lim, lim, c % 5)
        if acc is not None:
            bias[c] = acc * float(np.float32(s_in) * np.float32(s_w[c]))
            print(f"  derive FC channel {c}: acc {acc} ({why})")
    dense.set_weights([w, bias.astype(np.float32)])
    fb = _convert(model, [rep])
    it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    node = next(o for o in it0._get_ops_details() if o["op_name"] == "FULLY_CONNECTED")
    out_idx = int(node["outputs"][0])
    fb = _set_scale(fb, lambda sg, i: i == out_idx, s_out, 0)
    it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    x = rng.integers(-128, 128, size=(b, k)).astype(np.int8)
    x[0] = int(zp_in)
    arrays = dict(op="fully_connected", variant="derive", runtime=versions, activation="none")
    for name, idx in zip(("x", "w", "bias"), (int(i) for i in node["inputs"])):
        sc, zp, dim, _ = _qparams(it0, idx)
        arrays[f"{name}_scale"], arrays[f"{name}_zero_point"] = sc, zp
        if name != "x":
            arrays[name], arrays[f"{name}_axis"] = it0.get_tensor(idx), dim
    arrays["y_scale"], arrays["y_zero_point"] = _qparams(it0, out_idx)[:2]
    arrays["x"] = x
    for target, resolver in TFLITE_RESOLVERS.items():
        it = _interp(fb, resolver)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        y = it.get_tensor(it.get_output_details()[0]["index"])
        save(f"{target}__fully_connected__derive", target=target, y=y, **arrays)
        print(f"{target:17s} fully_connected   derive: y {y.shape} {y.dtype}")


def run_tflite_quantize(rng, versions):
    """QUANTIZE float32 -> int8, read from a model whose first op is QUANTIZE."""
    from tensorflow import keras

    shape = (4, 64)
    inp = keras.Input(shape[1:], batch_size=shape[0])
    m = keras.Model(inp, keras.layers.ReLU()(inp))
    for variant in ("pow2", "pow2x3", "rand"):
        rep = [rng.normal(0.1, 1.0, size=shape).astype(np.float32) for _ in range(4)]
        fb = _convert(m, [rep], int8_io=False)
        it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", preserve=True)
        qop = next(o for o in it0._get_ops_details() if o["op_name"] == "QUANTIZE")
        q_idx = int(qop["outputs"][0])
        if variant != "rand":
            fb = _set_scale(fb, lambda sg, i: i == q_idx, 2.0 ** -4 * (3 if variant == "pow2x3" else 1), 3)
            it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", preserve=True)
        s, z, _, _ = _qparams(it0, q_idx)
        # exact ties k + 1/2 of the scale, both signs, values past saturation, odd values
        k = rng.integers(-140, 140, size=shape).astype(np.float32)
        x = (k + rng.choice([0.0, 0.5, 0.25, -0.5], size=shape).astype(np.float32)) * s[0]
        x[0, :8] = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1e9, -1e9], np.float32) * s[0]
        x = x.astype(np.float32)
        for target, resolver in TFLITE_RESOLVERS.items():
            it = _interp(fb, resolver, preserve=True)
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            y = it.get_tensor(q_idx)
            save(f"{target}__quantize__{variant}", target=target, op="quantize", variant=variant, runtime=versions,
                 x=x, y_scale=s, y_zero_point=z, y=y)
            print(f"{target:17s} quantize          {variant}: y {y.shape} {y.dtype}")


# --------------------------------------------------------------------------- ONNX Runtime

def run_onnxruntime(rng):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    versions = f"onnxruntime {ort.__version__}; onnx {onnx.__version__}"
    T = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
         np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}

    def run(node, feeds, inits, out_dtype, out_shape=None, domain_ms=False):
        inputs = [helper.make_tensor_value_info(k, T[v.dtype], v.shape) for k, v in feeds.items()]
        output = helper.make_tensor_value_info(node.output[0], T[np.dtype(out_dtype)], out_shape)
        g = helper.make_graph([node], "g", inputs, [output],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
        opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("com.microsoft", 1)] if domain_ms else [])
        model = helper.make_model(g, opset_imports=opsets)
        model.ir_version = 10
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)[0]

    def qdata(dt, shape, small=3):
        lo, hi = (-128, 127) if dt == np.int8 else (0, 255)
        x = rng.integers(lo, hi + 1, size=shape).astype(dt)
        flat = x.reshape(-1, shape[-1])
        mid = 0 if dt == np.int8 else 128
        flat[0::3] = rng.integers(mid - small, mid + small + 1, size=flat[0::3].shape)
        flat[1, :] = lo
        flat[2, :] = hi
        return x

    def f32(v):
        return np.asarray(v, np.float32)

    # QLinearMatMul: a [M,K] (u8 or s8) x b [K,N] s8 (per-tensor and per-column scale), int8/uint8 out
    for variant, adt, m, k, n, per_col, pow2 in (("u8s8_pow2", np.uint8, 9, 33, 17, False, True),
                                                 ("s8s8_pow2", np.int8, 9, 33, 17, False, True),
                                                 ("s8s8_pow2x3", np.int8, 9, 33, 17, False, True),
                                                 ("s8s8_rand_percol", np.int8, 7, 64, 10, True, False),
                                                 ("u8u8_rand", np.uint8, 5, 31, 6, False, False)):
        bdt = np.uint8 if variant.startswith("u8u8") else np.int8
        a, b = qdata(adt, (m, k)), qdata(bdt, (k, n)).reshape(k, n)
        if bdt == np.int8:
            b = np.clip(b, -127, 127).astype(np.int8)   # keep the s8 kernels' weights in the symmetric range
        if pow2:
            a_s, b_s, y_s = f32(2.0 ** -4), f32(2.0 ** -6), f32(2.0 ** -7 * (3 if variant.endswith("x3") else 1))
        else:
            a_s = f32(0.0237)
            b_s = f32(rng.uniform(0.002, 0.01, size=n)) if per_col else f32(0.0061)
            y_s = f32(0.731)
        a_zp = np.array(128 if adt == np.uint8 else -7, adt)
        b_zp = np.zeros(n, bdt) if per_col else np.array(131 if bdt == np.uint8 else 0, bdt)
        y_dt = adt
        y_zp = np.array(120 if y_dt == np.uint8 else 5, y_dt)
        inits = dict(a_scale=a_s, a_zero_point=a_zp, b=b, b_scale=b_s, b_zero_point=b_zp,
                     y_scale=y_s, y_zero_point=y_zp)
        node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                                  "y_scale", "y_zero_point"], ["y"])
        y = run(node, {"a": a}, inits, y_dt)
        save(f"onnxruntime__qlinearmatmul__{variant}", target="onnxruntime", op="qlinearmatmul", variant=variant,
             runtime=versions, a=a, y=y, **inits)
        print("onnxruntime qlinearmatmul", variant)

    # QLinearMatMul "derive": row m plants, for column m, an accumulator where float32 scale orders disagree
    n = 48
    kk = 64
    b = np.ones((kk, n), np.int8)
    b[0] = 127
    a_s, y_s = f32(0.0173), f32(0.0291)
    b_s = f32(rng.uniform(0.002, 0.02, size=n))
    a = np.zeros((n, kk), np.int8)
    for m in range(n):
        lim = min(127 * 127 + (kk - 1) * 127, int(127 / (float(a_s) * float(b_s[m]) / float(y_s))))
        acc, why = _derive_acc(a_s, b_s[m], y_s, -lim, lim, m % 2, only="fp32")
        if acc is None:
            continue
        q = int(np.clip(round(acc / 127), -128, 127))
        r = acc - 127 * q
        rest = np.full(kk - 1, r // (kk - 1))
        rest[: r - rest.sum()] += 1
        a[m, 0], a[m, 1:] = q, rest
        assert int(a[m].astype(np.int64) @ b[:, m].astype(np.int64)) == acc
        print(f"  derive QLinearMatMul column {m}: acc {acc} ({why})")
    inits = dict(a_scale=a_s, a_zero_point=np.array(0, np.int8), b=b, b_scale=b_s, b_zero_point=np.zeros(n, np.int8),
                 y_scale=y_s, y_zero_point=np.array(0, np.int8))
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                              "y_scale", "y_zero_point"], ["y"])
    y = run(node, {"a": a}, inits, np.int8)
    save("onnxruntime__qlinearmatmul__s8s8_derive", target="onnxruntime", op="qlinearmatmul", variant="s8s8_derive",
         runtime=versions, a=a, y=y, **inits)
    print("onnxruntime qlinearmatmul s8s8_derive")

    # MatMulInteger u8 x s8 -> int32, worst case for vpmaddubsw (a = 255, b = +-127)
    for variant, adt in (("u8s8_extreme", np.uint8), ("s8s8_extreme", np.int8)):
        m, k, n = 6, 64, 16
        a = qdata(adt, (m, k))
        a[3:] = 255 if adt == np.uint8 else -128
        b = rng.choice(np.array([-128, 127, -127, 1], np.int8), size=(k, n))
        b[:, :4] = 127
        a_zp = np.array(0, adt)
        b_zp = np.array(0, np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zero_point", "b_zero_point"], ["y"])
        y = run(node, {"a": a}, dict(b=b, a_zero_point=a_zp, b_zero_point=b_zp), np.int32)
        exact = (a.astype(np.int64) - int(a_zp)) @ (b.astype(np.int64) - int(b_zp))
        save(f"onnxruntime__matmulinteger__{variant}", target="onnxruntime", op="matmulinteger", variant=variant,
             runtime=versions, a=a, b=b, a_zero_point=a_zp, b_zero_point=b_zp, y=y,
             exact_in_int64=bool(np.array_equal(y, exact)))
        print("onnxruntime matmulinteger", variant, "exact:", np.array_equal(y, exact))

    # QLinearConv NCHW, weights OIHW s8 per-channel, groups 1 and depthwise
    for variant, xdt, (nb, c, h, w_), (o, group), stride, pads, pow2 in (
            ("s8_pow2", np.int8, (2, 3, 6, 7), (5, 1), 1, (1, 1, 1, 1), True),
            ("s8_pow2x3", np.int8, (2, 3, 6, 7), (5, 1), 1, (1, 1, 1, 1), True),
            ("u8_rand", np.uint8, (2, 4, 7, 5), (6, 1), 2, (0, 0, 0, 0), False),
            ("s8_depthwise_pow2", np.int8, (2, 4, 5, 6), (4, 4), 1, (1, 1, 1, 1), True),
            ("u8_depthwise_rand", np.uint8, (1, 6, 7, 7), (6, 6), 2, (1, 0, 1, 0), False)):
        x = qdata(xdt, (nb, c, h, w_))
        wt = rng.integers(-3, 4, size=(o, c // group, 3, 3)).astype(np.int8)
        wt.reshape(o, -1)[:, 0] = 127
        wt.reshape(o, -1)[1::2, 1] = -127
        if not pow2:
            wt = rng.integers(-127, 128, size=wt.shape).astype(np.int8)
        x_s = f32(2.0 ** -4 if pow2 else 0.0173)
        w_s = f32(np.full(o, 2.0 ** -6) if pow2 else rng.uniform(0.001, 0.02, size=o))
        y_s = f32((2.0 ** -3 if pow2 else 0.377) * (3 if variant.endswith("x3") else 1))
        x_zp = np.array(-9 if xdt == np.int8 else 133, xdt)
        w_zp = np.zeros(o, np.int8)
        y_zp = np.array(-3 if xdt == np.int8 else 125, xdt)
        bias = rng.integers(-600, 600, size=o).astype(np.int32)
        inits = dict(x_scale=x_s, x_zero_point=x_zp, w=wt, w_scale=w_s, w_zero_point=w_zp, y_scale=y_s,
                     y_zero_point=y_zp, bias=bias)
        node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                                                "y_scale", "y_zero_point", "bias"], ["y"],
                                strides=[stride, stride], pads=list(pads), group=group, kernel_shape=[3, 3])
        y = run(node, {"x": x}, inits, xdt)
        op = "qlinearconv_depthwise" if group > 1 else "qlinearconv"
        save(f"onnxruntime__{op}__{variant}", target="onnxruntime", op=op, variant=variant, runtime=versions,
             x=x, y=y, stride=stride, pads=np.array(pads), group=group, **inits)
        print("onnxruntime", op, variant)

    # QLinearAdd / QLinearMul (com.microsoft): fixed-point (SIMD) and float paths, broadcast row
    for opname in ("QLinearAdd", "QLinearMul"):
        for variant, dt, scales, bshape in (("s8_pow2", np.int8, (2.0 ** -4, 2.0 ** -3, 2.0 ** -3), None),
                                            ("s8_pow2x3", np.int8, (2.0 ** -4, 2.0 ** -3, 3 * 2.0 ** -5), None),
                                            ("s8_pow2_oddzp", np.int8, (2.0 ** -4, 2.0 ** -3, 2.0 ** -3), None),
                                            ("u8_rand", np.uint8, (0.0213, 0.0377, 0.0411), None),
                                            ("s8_rand_row", np.int8, (0.0213, 0.0077, 0.0311), (1, 67)),
                                            ("s8_ratio_out_of_range", np.int8, (1.0, 2.0 ** -20, 2.0 ** -3), None)):
            shape = (5, 67)
            a = qdata(dt, shape, 5)
            b = qdata(dt, shape, 5) if bshape is None else qdata(dt, (3, 67), 5)[:1]
            zps = (np.array(-5, dt), np.array(9, dt), np.array(-3 if "oddzp" in variant else -2, dt)) \
                if dt == np.int8 else (np.array(121, dt), np.array(130, dt), np.array(127, dt))
            inits = dict(a_scale=f32(scales[0]), a_zero_point=zps[0], b_scale=f32(scales[1]),
                         b_zero_point=zps[1], y_scale=f32(scales[2]), y_zero_point=zps[2])
            node = helper.make_node(opname, ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                             "y_scale", "y_zero_point"], ["y"], domain="com.microsoft")
            y = run(node, {"a": a, "b": b}, inits, dt, domain_ms=True)
            op = opname.lower()
            save(f"onnxruntime__{op}__{variant}", target="onnxruntime", op=op, variant=variant, runtime=versions,
                 a=a, b=b, y=y, **inits)
            print("onnxruntime", op, variant)

    # QuantizeLinear float32 -> int8 / uint8, exact ties
    for variant, dt, s, zp in (("s8_pow2", np.int8, 2.0 ** -4, 3), ("s8_pow2x3", np.int8, 3 * 2.0 ** -4, 3),
                               ("u8_rand", np.uint8, 0.0173, 128)):
        k = rng.integers(-140, 140, size=(4, 64)).astype(np.float32)
        x = ((k + rng.choice([0.0, 0.5, 0.25, -0.5], size=k.shape)) * np.float32(s)).astype(np.float32)
        x[0, :8] = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1e9, -1e9], np.float32) * np.float32(s)
        inits = dict(y_scale=f32(s), y_zero_point=np.array(zp, dt))
        node = helper.make_node("QuantizeLinear", ["x", "y_scale", "y_zero_point"], ["y"])
        y = run(node, {"x": x}, inits, dt)
        save(f"onnxruntime__quantize__{variant}", target="onnxruntime", op="quantize", variant=variant,
             runtime=versions, x=x, y=y, **inits)
        print("onnxruntime quantize", variant)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["tflite", "tflite-ops", "onnxruntime"])
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.only in (None, "tflite"):
        run_tflite(rng)
    if args.only in (None, "tflite-ops"):
        import generate_tflite_ops
        generate_tflite_ops.main(rng)
    if args.only in (None, "onnxruntime"):
        run_onnxruntime(rng)
    total = sum(p.stat().st_size for p in CASES.glob("*.npz"))
    print(f"{len(list(CASES.glob('*.npz')))} cases, {total / 1024:.0f} KiB in {CASES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
