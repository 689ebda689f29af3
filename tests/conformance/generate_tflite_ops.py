"""Golden vectors of LiteRT's one-input and data-movement int8 ops (run by generate.py, not by CI).

Each case is a single-op model made by the TFLite converter (full int8, int8 input and output), its
quantization parameters optionally edited in the flatbuffer (``pow2`` variants: power-of-two scales, so
that rounding ties are frequent; odd zero points), run under the three kernel sets.  Every case records
whether XNNPACK took the node (``delegated``): where it did not, ``xnnpack`` is the builtin optimized
kernel.  Elementwise ops see all 256 int8 inputs, so a case pins the kernel set's whole table.
"""
import numpy as np

from generate import TFLITE_RESOLVERS, _convert, _interp, _qparams, _set_scale, _versions, save

ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)


def _single_op_model(layer, shape, n_inputs=1):
    from tensorflow import keras
    inputs = [keras.Input(shape[1:], batch_size=shape[0]) for _ in range(n_inputs)]
    return keras.Model(inputs, layer(inputs if n_inputs > 1 else inputs[0]))


def _node(it, op_name):
    ops = [o for o in it._get_ops_details() if o["op_name"] not in ("QUANTIZE", "DEQUANTIZE") or o["op_name"] == op_name]
    got = [o for o in ops if o["op_name"] == op_name]
    assert len(got) == 1, [o["op_name"] for o in it._get_ops_details()]
    return got[0]


def _edit(fb, op_name, edits):
    """`fb` with the scale / zero point of the op's tensors replaced: edits = {"in0"|"in1"|"out": (scale, zp)}."""
    it = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    node = _node(it, op_name)
    for key, (scale, zp) in edits.items():
        idx = int(node["outputs"][0]) if key == "out" else int(node["inputs"][int(key[2:])])
        fb = _set_scale(fb, lambda sg, i, idx=idx: i == idx, scale, zp)
    return fb


def _run_case(fb, op_name, op, variant, inputs, versions, **attrs):
    """Runs `fb` under every kernel set on `inputs` (the op's data inputs, in order) and saves one case each."""
    it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    node = _node(it0, op_name)
    names = ("x",) if len(inputs) == 1 else tuple("abcdefgh"[:len(inputs)])
    arrays = dict(op=op, variant=variant, runtime=versions, **attrs)
    data_in = [int(i) for i in node["inputs"]][:len(inputs)]
    for name, idx, x in zip(names, data_in, inputs):
        s, z, _, _ = _qparams(it0, idx)
        arrays[f"{name}_scale"], arrays[f"{name}_zero_point"], arrays[name] = s, z, x
    out_idx = int(node["outputs"][0])
    arrays["y_scale"], arrays["y_zero_point"] = _qparams(it0, out_idx)[:2]
    graph_in = [d["index"] for d in it0.get_input_details()]
    feed = dict(zip(data_in, inputs))
    for target, resolver in TFLITE_RESOLVERS.items():
        it = _interp(fb, resolver)
        delegated = "DELEGATE" in [o["op_name"] for o in it._get_ops_details()]
        for gi in graph_in:
            it.set_tensor(gi, feed[gi])
        it.invoke()
        y = it.get_tensor(it.get_output_details()[0]["index"])
        save(f"{target}__{op}__{variant}", target=target, y=y, delegated=delegated, **arrays)
        print(f"{target:17s} {op:17s} {variant:12s} delegated={delegated} y {y.shape}")


def _reps(rng, shape, lo, hi, n=6):
    """Representative data spanning [lo, hi] (the converter calibrates on it)."""
    out = [rng.uniform(lo, hi, size=shape).astype(np.float32) for _ in range(n)]
    out[0].flat[0], out[0].flat[1] = lo, hi
    return out


def run_activations(rng, versions):
    from tensorflow import keras
    layers = {"logistic": ("LOGISTIC", lambda: keras.layers.Activation("sigmoid"), {}),
              "tanh": ("TANH", lambda: keras.layers.Activation("tanh"), {}),
              "hard_swish": ("HARD_SWISH", lambda: keras.layers.Activation("hard_swish"), {}),
              "leaky_relu": ("LEAKY_RELU", lambda: keras.layers.LeakyReLU(negative_slope=0.2), {"alpha": 0.2}),
              "leaky_relu_a07": ("LEAKY_RELU", lambda: keras.layers.LeakyReLU(negative_slope=0.7), {"alpha": 0.7})}
    # (variant, calibration range, edits of the input / output qparams)
    variants = {"rand": ((-5.3, 7.1), {}),
                "pow2": ((-8.0, 7.9375), {"in0": (2.0 ** -4, 0)}),
                "pow2_oddzp": ((-8.0, 7.9375), {"in0": (2.0 ** -5, 3)}),
                "wide": ((-37.0, 21.0), {})}
    out_pow2 = {"hard_swish": (2.0 ** -5, -17), "leaky_relu": (2.0 ** -3, 5), "leaky_relu_a07": (2.0 ** -4, -1)}
    for op, (op_name, make, attrs) in layers.items():
        for variant, ((lo, hi), edits) in variants.items():
            model = _single_op_model(make(), ALL_INT8.shape)
            fb = _convert(model, [_reps(rng, ALL_INT8.shape, lo, hi)])
            edits = dict(edits)
            if variant.startswith("pow2") and op in out_pow2:
                edits["out"] = out_pow2[op]
            if edits:
                fb = _edit(fb, op_name, edits)
            _run_case(fb, op_name, op.split("_a0")[0], variant + ("_a07" if "_a07" in op else ""), [ALL_INT8],
                      versions, **attrs)


def run_softmax(rng, versions):
    from tensorflow import keras
    # rows: every spread of values, ties of the max, one saturated row, rows of equal values
    x = rng.integers(-128, 128, size=(12, 10)).astype(np.int8)
    x[0] = 127
    x[1] = -128
    x[2, :5], x[2, 5:] = 127, -128
    x[3] = np.arange(10) * 3 - 100
    x[4] = np.arange(10) - 5
    for variant, (lo, hi), edit, beta in (("rand", (-6.0, 9.0), None, 1.0), ("pow2", (-8.0, 7.9), (2.0 ** -4, 0), 1.0),
                                          ("wide", (-40.0, 35.0), None, 1.0), ("tiny", (-0.5, 0.4), None, 1.0)):
        model = _single_op_model(keras.layers.Softmax(), x.shape)
        fb = _convert(model, [_reps(rng, x.shape, lo, hi)])
        if edit is not None:
            fb = _edit(fb, "SOFTMAX", {"in0": edit})
        _run_case(fb, "SOFTMAX", "softmax", variant, [x], versions, beta=beta)
    _softmax_disagreements(rng, versions)


def _softmax_disagreements(rng, versions):
    """Rows on which TFLite's two SOFTMAX kernels disagree (the reference's fixed-point exp and the optimized
    float table each land on the other side of a rounding boundary now and then): found by running both
    on 20000 random rows of 4 at a few input scales, kept with 24 rows where they agree."""
    from tensorflow import keras
    shape = (20000, 4)
    x = (127 - rng.integers(0, 256, size=shape)).astype(np.int8)
    x[:, 0] = 127
    model = _single_op_model(keras.layers.Softmax(), shape)
    base = _convert(model, [_reps(rng, shape, -6.0, 9.0)])
    for k, scale in enumerate((0.21881303, 0.02339313, 0.13878188)):
        fb = _edit(base, "SOFTMAX", {"in0": (scale, 0)})
        ys = {}
        for target in ("tflite-reference", "tflite"):
            it = _interp(fb, TFLITE_RESOLVERS[target])
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            ys[target] = it.get_tensor(it.get_output_details()[0]["index"])
        rows = np.flatnonzero((ys["tflite-reference"] != ys["tflite"]).any(axis=1))
        print(f"softmax scale {scale}: {rows.size} of {shape[0]} rows differ between the kernel sets")
        rows = np.concatenate([rows, np.arange(24)])
        sub = x[rows]
        small = _edit(_convert(_single_op_model(keras.layers.Softmax(), sub.shape),
                               [_reps(rng, sub.shape, -6.0, 9.0)]), "SOFTMAX", {"in0": (scale, 0)})
        _run_case(small, "SOFTMAX", "softmax", f"split{k}", [sub], versions, beta=1.0)


def run_pools(rng, versions):
    from tensorflow import keras
    x = rng.integers(-128, 128, size=(2, 7, 9, 21)).astype(np.int8)   # 16 + 5 channels: vector and scalar loops
    x[0, :3] = rng.integers(-3, 4, size=x[0, :3].shape)   # small sums: ties of the average
    x[1, 0] = 127
    x[1, 1] = -128
    for variant, (k, s, pad) in (("same_3x3_s2", (3, 2, "same")), ("valid_2x2_s2", (2, 2, "valid")),
                                 ("same_2x2_s1", (2, 1, "same")), ("valid_3x2_s1", ((3, 2), 1, "valid"))):
        kk = k if isinstance(k, tuple) else (k, k)
        for op, layer, op_name in (("average_pool_2d", keras.layers.AveragePooling2D, "AVERAGE_POOL_2D"),
                                   ("max_pool_2d", keras.layers.MaxPooling2D, "MAX_POOL_2D")):
            if op == "max_pool_2d" and variant not in ("same_3x3_s2", "valid_2x2_s2"):
                continue
            model = _single_op_model(layer(pool_size=kk, strides=s, padding=pad), x.shape)
            fb = _convert(model, [_reps(rng, x.shape, -3.0, 5.0)])
            _run_case(fb, op_name, op, variant, [x], versions, kernel=np.array(kk), stride=s, padding=pad)


def run_mean(rng, versions):
    from tensorflow import keras
    for variant, shape, lo_hi, keep in (("rand_7x9", (2, 7, 9, 6), (-3.0, 5.0), False),
                                        ("rand_4x4_keep", (3, 4, 4, 8), (-1.0, 1.0), True),
                                        ("wide_1x5", (2, 1, 5, 7), (-20.0, 3.0), False),
                                        ("rand_8x8", (1, 8, 8, 16), (0.0, 6.0), False),
                                        ("rand_3x5_c37_keep", (2, 3, 5, 37), (-2.0, 3.0), True),
                                        ("pow2_4x4_c21_keep", (2, 4, 4, 21), "pow2", True),
                                        ("pow2_4x4_c21", (2, 4, 4, 21), "pow2", False),
                                        ("pow2_2x2_c40_keep", (3, 2, 2, 40), "pow2", True)):
        x = rng.integers(-128, 128, size=shape).astype(np.int8)
        x[0, 0] = 127
        model = _single_op_model(keras.layers.GlobalAveragePooling2D(keepdims=keep), shape)
        fb = _convert(model, [_reps(rng, shape, *((-2.0, 3.0) if lo_hi == "pow2" else lo_hi))])
        if lo_hi == "pow2":   # sums of small values over 2^k taps: ties of the mean, odd zero points
            x = rng.integers(-6, 7, size=shape).astype(np.int8)
            fb = _edit(fb, "MEAN", {"in0": (2.0 ** -4, 1), "out": (2.0 ** -4, -3)})
        _run_case(fb, "MEAN", "mean", variant, [x], versions, keep_dims=keep)
        if variant == "rand_7x9":   # the same with the output's qparams equal to the input's
            it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
            s, z = (v[0] for v in _qparams(it0, int(_node(it0, "MEAN")["inputs"][0]))[:2])
            fb2 = _edit(fb, "MEAN", {"out": (float(s), int(z))})
            _run_case(fb2, "MEAN", "mean", "same_qparams", [x], versions, keep_dims=keep)


def _quantize_nodes(fb, versions, op, variant, feeds):
    """Saves every QUANTIZE node of `fb` whose input is int8 or uint8 (a requantization) as a case: its
    input and output tensors read back after a run on `feeds` (graph input index order)."""
    n = 0
    for target, resolver in TFLITE_RESOLVERS.items():
        it = _interp(fb, resolver, preserve=True)
        ops = it._get_ops_details()
        delegated = "DELEGATE" in [o["op_name"] for o in ops]
        for d, x in zip(it.get_input_details(), feeds):
            it.set_tensor(d["index"], x)
        it.invoke()
        k = 0
        for o in ops:
            if o["op_name"] != "QUANTIZE":
                continue
            i, j = int(o["inputs"][0]), int(o["outputs"][0])
            (si, zi, _, dti), (so, zo, _, dto) = _qparams(it, i), _qparams(it, j)
            if dti not in (np.int8, np.uint8):
                continue
            name = f"{variant}{k}"
            k += 1
            save(f"{target}__{op}__{name}", target=target, op=op, variant=name, runtime=versions,
                 x=it.get_tensor(i), x_scale=si, x_zero_point=zi, y=it.get_tensor(j), y_scale=so, y_zero_point=zo,
                 delegated=delegated)
            print(f"{target:17s} {op:17s} {name:12s} {np.dtype(dti).name}->{np.dtype(dto).name} delegated={delegated}")
        n = k
    return n


def run_requantize(rng, versions):
    """QUANTIZE int8 -> int8 (the converter puts one between a TANH, whose output scale is fixed, and a
    CONCATENATION: the int8 CONCATENATION kernel requires its inputs' scales to equal the output's) and uint8 <-> int8 (uint8 model inputs and outputs)."""
    from tensorflow import keras
    shape = (2, 3, 4, 5)
    a = rng.integers(-128, 128, size=shape).astype(np.int8)
    b = rng.integers(-128, 128, size=shape).astype(np.int8)
    a[0, 0, 0] = np.arange(-2, 3)
    i1, i2 = keras.Input(shape[1:], batch_size=shape[0]), keras.Input(shape[1:], batch_size=shape[0])
    model = keras.Model([i1, i2], keras.layers.Concatenate(axis=-1)([keras.layers.Activation("tanh")(i1), i2]))
    fb = _convert(model, [_reps(rng, shape, -2.0, 3.0), _reps(rng, shape, -9.0, 1.0)])
    assert _quantize_nodes(fb, versions, "requantize", "concat", [a, b]) > 0
    # the QUANTIZE after TANH (1/128, 0) to 2^-5 and an odd zero point: ties of (q / 4)
    it0 = _interp(fb, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    cat = _node(it0, "CONCATENATION")
    for idx in [int(i) for i in cat["inputs"]] + [int(cat["outputs"][0])]:
        fb = _set_scale(fb, lambda sg, i, idx=idx: i == idx, 2.0 ** -5, 3)
    a[0] = np.arange(-30, 30).reshape(a[0].shape)   # small tanh outputs: many ties of q / 4
    assert _quantize_nodes(fb, versions, "requantize", "pow2_", [a, b]) > 0
    x = rng.integers(0, 256, size=(4, 64)).astype(np.uint8)
    model = _single_op_model(keras.layers.LeakyReLU(negative_slope=0.3), x.shape)
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    reps = _reps(rng, x.shape, -3.0, 4.0)
    conv.representative_dataset = lambda: ([r] for r in reps)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    assert _quantize_nodes(conv.convert(), versions, "requantize", "uint8io", [x]) > 0


def run_sub(rng, versions):
    """SUB of two int8 tensors with different scales: calibrated, and power-of-two scales with odd zero
    points (ties of the fixed-point rescalings)."""
    from tensorflow import keras
    shape = (5, 67)
    a = rng.integers(-128, 128, size=shape).astype(np.int8)
    b = rng.integers(-128, 128, size=shape).astype(np.int8)
    a[0::3], b[0::3] = rng.integers(-5, 6, size=a[0::3].shape), rng.integers(-5, 6, size=b[0::3].shape)
    for variant, edits in (("rand", None), ("pow2", {"in0": (2.0 ** -4, 3), "in1": (2.0 ** -3, -5),
                                                     "out": (2.0 ** -3, 1)})):
        model = _single_op_model(keras.layers.Subtract(), shape, n_inputs=2)
        fb = _convert(model, [_reps(rng, shape, -2.0, 3.0), _reps(rng, shape, -1.0, 0.7)])
        if edits:
            fb = _edit(fb, "SUB", edits)
        _run_case(fb, "SUB", "sub", variant, [a, b], versions)


def run_pad(rng, versions):
    from tensorflow import keras
    x = rng.integers(-128, 128, size=(2, 4, 5, 3)).astype(np.int8)
    model = _single_op_model(keras.layers.ZeroPadding2D(((1, 2), (0, 3))), x.shape)
    fb = _convert(model, [_reps(rng, x.shape, -2.0, 5.0)])
    _run_case(fb, "PAD", "pad", "hw", [x], versions, paddings=np.array([[0, 0], [1, 2], [0, 3], [0, 0]]))


def main(rng):
    versions = _versions()
    run_activations(rng, versions)
    run_softmax(rng, versions)
    run_pools(rng, versions)
    run_mean(rng, versions)
    run_requantize(rng, versions)
    run_pad(rng, versions)
    run_sub(rng, versions)
