"""Make the .tflite test models and their golden outputs (docs/tflite.md, "Golden vectors").

Not run by the tests (they never need TensorFlow): run it in a venv with tensorflow-cpu, ai-edge-litert
and numpy, from the repository root:

    python tests/data/tflite/make_models.py [--out tests/data/tflite]

Each model is a small Keras model converted by the TFLite converter with full-integer post-training
quantization (a representative dataset, int8 weights and activations, int32 biases, per-channel conv
weights).  Each ``<model>.npz`` holds ``x`` (a fixed input batch in the model's input type and layout),
for each kernel set (``tflite-reference`` = OpResolverType.BUILTIN_REF, ``tflite`` =
BUILTIN_WITHOUT_DEFAULT_DELEGATES, ``xnnpack`` = BUILTIN, the default XNNPACK delegate) ``y:<set>:<k>``
(output k of each sample) and, run with experimental_preserve_all_tensors, ``t:<set>:<tensor index>``
(every non-constant int8/uint8 tensor of the first KEEP samples; a delegated kernel set leaves the tensors inside
its partition unwritten, so they are kept only where they were written), and ``versions``.
"""
import argparse
import os

import numpy as np

RESOLVERS = {"tflite-reference": "BUILTIN_REF", "tflite": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "xnnpack": "BUILTIN"}
SAMPLES = 8
KEEP = 2  # samples whose intermediate tensors are kept


def _seed(k):
    import keras
    keras.utils.set_random_seed(k)
    return np.random.default_rng(k)


def mobilenet_v2():
    """MobileNetV2-style: conv s2 + ReLU6, inverted residual blocks (1x1 expand, depthwise, 1x1 project,
    residual ADD), a stride-2 block, global average pool (MEAN), FC, softmax.  Odd sizes keep every SAME
    padding symmetric."""
    import keras
    from keras import layers as L
    x = inp = keras.Input((33, 33, 3), batch_size=1)
    x = L.ReLU(6.0)(L.Conv2D(8, 3, strides=2, padding="same")(x))

    def block(x, expand, out, stride):
        y = L.ReLU(6.0)(L.Conv2D(x.shape[-1] * expand, 1)(x))
        y = L.ReLU(6.0)(L.DepthwiseConv2D(3, strides=stride, padding="same")(y))
        y = L.Conv2D(out, 1)(y)
        return L.Add()([x, y]) if stride == 1 and out == x.shape[-1] else y

    x = block(x, 3, 8, 1)
    x = block(x, 3, 16, 2)
    x = block(x, 3, 16, 1)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Softmax()(L.Dense(10)(x))
    return keras.Model(inp, x), (1, 33, 33, 3)


def ds_cnn():
    """Keyword-spotting DS-CNN (Hello Edge): conv 9x3 s2 + ReLU on a 49x11 MFCC map, depthwise-separable
    blocks (one with depth multiplier 2), average pool over the map, FC, softmax."""
    import keras
    from keras import layers as L
    x = inp = keras.Input((49, 11, 1), batch_size=1)
    x = L.ReLU()(L.Conv2D(16, (9, 3), strides=2, padding="same")(x))
    for mult, ch in ((1, 16), (2, 24)):
        x = L.ReLU()(L.DepthwiseConv2D(3, padding="same", depth_multiplier=mult)(x))
        x = L.ReLU()(L.Conv2D(ch, 1)(x))
    x = L.AveragePooling2D((25, 6))(x)
    x = L.Flatten()(x)
    x = L.Softmax()(L.Dense(12)(x))
    return keras.Model(inp, x), (1, 49, 11, 1)


def mlp():
    """An MLP with LOGISTIC, TANH and LEAKY_RELU between FULLY_CONNECTED layers."""
    import keras
    from keras import layers as L
    x = inp = keras.Input((20,), batch_size=1)
    x = L.Activation("sigmoid")(L.Dense(32)(x))
    x = L.Activation("tanh")(L.Dense(32)(x))
    x = L.LeakyReLU(negative_slope=0.2)(L.Dense(24)(x))
    x = L.Dense(8)(x)
    return keras.Model(inp, x), (1, 20)


def uint8_io():
    """uint8 input and output (QUANTIZE uint8 -> int8 in, int8 -> uint8 out): PAD, conv, max pool,
    CONCATENATION of two branches with their own scales, average pool, SUB, MUL, FC."""
    import keras
    import tensorflow as tf
    from keras import layers as L
    x = inp = keras.Input((15, 15, 2), batch_size=1)
    x = L.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]]))(x)
    x = L.ReLU()(L.Conv2D(8, 3)(x))
    x = L.MaxPooling2D(3, strides=2)(x)
    a = L.ReLU(6.0)(L.Conv2D(6, 1)(x))
    b = L.Conv2D(4, 3, padding="same")(x)
    x = L.Concatenate()([a, b])
    x = L.AveragePooling2D(3, strides=2)(x)
    x = L.Flatten()(x)
    h = L.Dense(16)(x)
    g = L.Dense(16)(x)
    x = L.Multiply()([L.Subtract()([h, g]), g])
    x = L.Dense(5)(x)
    return keras.Model(inp, x), (1, 15, 15, 2)


def same_pad():
    """The layout corners: asymmetric SAME padding (stride 2 on an even size, an even kernel, pools), an
    explicit PAD, HARD_SWISH, MEAN with keep_dims, a flatten of an H x W x C map into FULLY_CONNECTED, and
    two outputs."""
    import keras
    import tensorflow as tf
    from keras import layers as L
    x = inp = keras.Input((16, 16, 3), batch_size=1)
    x = L.ReLU(6.0)(L.Conv2D(8, 3, strides=2, padding="same")(x))
    x = L.Activation("hard_swish")(L.Conv2D(8, 4, padding="same")(x))
    x = L.Lambda(lambda t: tf.pad(t, [[0, 0], [0, 2], [1, 0], [0, 0]]))(x)
    x = L.AveragePooling2D(3, strides=2, padding="same")(x)
    x = L.MaxPooling2D(2, strides=1, padding="same")(x)
    a = L.Dense(6)(L.Flatten()(x))
    b = L.Dense(4)(L.Flatten()(L.GlobalAveragePooling2D(keepdims=True)(x)))
    return keras.Model(inp, [a, b]), (1, 16, 16, 3)


def broadcast():
    """Broadcasting ADD, SUB and MUL: a squeeze-and-excite block (MUL of [1, H, W, C] by a computed [1, C],
    which LiteRT extends to [1, 1, 1, C]), a per-channel affine (MUL and ADD of constant [C] vectors), a SUB
    of the map's mean ([1, H, W, C] - [1, 1, 1, C]), ADDs of scalar constants to a map and to a row, and a
    MUL of a [1, C] row by a constant [C].  20 channels: whole NEON groups and a tail in the optimized
    kernels."""
    import keras
    import tensorflow as tf
    from keras import layers as L

    class Affine(L.Layer):
        def __init__(self, beta=True, **kw):
            super().__init__(**kw)
            self.with_beta = beta

        def build(self, shape):
            self.gamma = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.RandomUniform(0.5, 1.5))
            if self.with_beta:
                self.beta = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.RandomNormal(0, 0.5))

        def call(self, x):
            return x * self.gamma + self.beta if self.with_beta else x * self.gamma

    x = inp = keras.Input((6, 7, 3), batch_size=1)
    x = L.ReLU()(L.Conv2D(20, 3, padding="same")(x))
    s = L.Dense(5, activation="relu")(L.GlobalAveragePooling2D()(x))
    s = Affine(beta=False)(L.Dense(20, activation="sigmoid")(s))
    s = L.Lambda(lambda t: t + tf.constant(0.5))(s)
    x = L.Multiply()([x, L.Reshape((1, 1, 20))(s)])
    x = Affine()(x)
    x = L.Subtract()([x, L.GlobalAveragePooling2D(keepdims=True)(x)])
    x = L.Lambda(lambda t: t + tf.constant(0.25))(x)
    x = L.Conv2D(20, 1)(x)
    x = L.Dense(12)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, x), (1, 6, 7, 3)


def _requantized(fb, edits):
    """`fb` with new (scale, zero point) for tensors and new values for constant int8 tensors: {tensor index:
    (scale, zero point, value or None)}, through the schema's object API (the converter's own file, edited)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(fb, 0))
    sg = m.subgraphs[0]
    for k, (scale, zp, value) in edits.items():
        t = sg.tensors[k]
        t.quantization.scale, t.quantization.zeroPoint = [scale], [zp]
        if value is not None:
            buf = m.buffers[t.buffer]
            buf.data = np.full(len(buf.data), value, np.int8).view(np.uint8)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def broadcast_ties(fb):
    """The broadcast model with the scales of its two constant ADDs set where the optimized kernels' NEON
    loops round differently from their scalar loops (found by search over scale triples): the [1, H, W, C] +
    constant [C] ADD (AddElementwiseInt8's NEON loop, at (q_a, q_b) = (-68, 65)) and the [1, C] + scalar ADD
    (AddScalarBroadcast's NEON loop, at (-79, 1)); the constants hold those values."""
    from tensorflow.lite.python import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(fb, 0))
    sg = m.subgraphs[0]
    adds = [o for o in sg.operators if max(m.operatorCodes[o.opcodeIndex].builtinCode,
                                           m.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)
            == schema.BuiltinOperator.ADD]
    scalar = next(o for o in adds if len(sg.tensors[o.inputs[1]].shape) == 0)
    vector = next(o for o in adds if len(sg.tensors[o.inputs[1]].shape) == 1)
    return _requantized(fb, {
        vector.inputs[1]: (0.007753962185233831, 38, 65), vector.outputs[0]: (0.026468168944120407, -86, None),
        scalar.inputs[0]: (0.07916879653930664, -86, None), scalar.inputs[1]: (0.03243165463209152, 19, 1),
        scalar.outputs[0]: (0.05917685106396675, 31, None)})


def uint8_requantize(fb):
    """The MLP with uint8 input and output, edited so that every QUANTIZE requantizes with a type change: the
    input's (uint8 -> int8) and the output's (int8 -> uint8) get other scales and zero points than the int8
    tensors beside them, and after the first FULLY_CONNECTED an int8 -> uint8 -> int8 pair of QUANTIZE
    operators (new scales) feeds the rest."""
    import copy

    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(fb, 0))
    sg = m.subgraphs[0]

    def code(o):
        c = m.operatorCodes[o.opcodeIndex]
        return max(c.builtinCode, c.deprecatedBuiltinCode)

    def quant(t, scale, zp):
        t.quantization.scale, t.quantization.zeroPoint = [scale], [zp]

    t_in, t_out = sg.tensors[sg.inputs[0]], sg.tensors[sg.outputs[0]]
    quant(t_in, t_in.quantization.scale[0] * 1.37, 140)
    quant(t_out, t_out.quantization.scale[0] * 0.71, 119)
    k = next(i for i, o in enumerate(sg.operators) if code(o) == schema.BuiltinOperator.FULLY_CONNECTED)
    fc, q_in = sg.operators[k], next(o for o in sg.operators if code(o) == schema.BuiltinOperator.QUANTIZE)
    src = sg.tensors[fc.outputs[0]]
    new = []
    for dtype, scale, zp in ((schema.TensorType.UINT8, src.quantization.scale[0] * 1.19, 133),
                             (schema.TensorType.INT8, src.quantization.scale[0] * 0.87, -5)):
        t = copy.deepcopy(src)
        t.type, t.name = dtype, src.name + (b"_u8" if dtype == schema.TensorType.UINT8 else b"_back")
        quant(t, scale, zp)
        sg.tensors.append(t)
        new.append(len(sg.tensors) - 1)
    for o in sg.operators[k + 1:]:
        o.inputs = [new[1] if i == fc.outputs[0] else i for i in o.inputs]
    for i, (a, b) in enumerate(((fc.outputs[0], new[0]), (new[0], new[1]))):
        q = copy.deepcopy(q_in)
        q.inputs, q.outputs = [a], [b]
        sg.operators.insert(k + 1 + i, q)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# name -> (model, the type of the model's input and output: int8, uint8 or float32, the converter's default, or
# "dynamic": dynamic-range quantization, float32 in and out; then the edits of the converted file, if any)
MODELS = {"mobilenet_v2": (mobilenet_v2, "int8"), "ds_cnn": (ds_cnn, "int8"), "mlp": (mlp, "int8"),
          "uint8_io": (uint8_io, "uint8"), "same_pad": (same_pad, "int8"), "mlp_float_io": (mlp, "float32"),
          "broadcast": (broadcast, "int8"), "broadcast_ties": (broadcast, "int8", broadcast_ties),
          "uint8_requantize": (mlp, "uint8", uint8_requantize), "mlp_dynamic": (mlp, "dynamic")}


def convert(model, shape, rng, io):
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if io == "dynamic":  # dynamic-range quantization: no representative dataset
        return conv.convert()
    reps = [rng.normal(0, 1, size=shape).astype(np.float32) for _ in range(32)]
    conv.representative_dataset = lambda: ([r] for r in reps)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io != "float32":
        conv.inference_input_type = conv.inference_output_type = getattr(tf, io)
    return conv.convert()


def interpreter(fb, resolver, preserve):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=fb, experimental_op_resolver_type=getattr(OpResolverType, resolver),
                     num_threads=1, experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def goldens(fb, shape, rng):
    it = interpreter(fb, "BUILTIN_REF", False)
    d = it.get_input_details()[0]
    xf = rng.normal(0, 1.2, size=(SAMPLES,) + shape[1:]).astype(np.float32)
    x = xf
    if d["dtype"] != np.float32:
        s, z = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.rint(xf / s) + z, info.min, info.max).astype(d["dtype"])
    out = {"x": x}
    for name, resolver in RESOLVERS.items():
        it = interpreter(fb, resolver, True)
        written = {k for op in it._get_ops_details() for k in op["outputs"]}
        details = [t for t in it.get_tensor_details() if t["index"] in written and t["dtype"] in (np.int8, np.uint8)]
        ys = {k: [] for k in range(len(it.get_output_details()))}
        ts = {}
        for i in range(SAMPLES):
            it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
            it.invoke()
            for k, od in enumerate(it.get_output_details()):
                ys[k].append(it.get_tensor(od["index"])[0])
            for t in details:
                ts.setdefault(t["index"], []).append(it.get_tensor(t["index"]).copy())
        for k, v in ys.items():
            out[f"y:{name}:{k}"] = np.stack(v)
        for idx, v in ts.items():
            if len(v) == SAMPLES:
                out[f"t:{name}:{idx}"] = np.concatenate(v[:KEEP])
    return out


def versions():
    import tensorflow as tf
    from importlib.metadata import version
    return f"ai-edge-litert {version('ai-edge-litert')}; tensorflow {tf.__version__} (converter)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("names", nargs="*", help="the models to make (default: all)")
    args = ap.parse_args()
    for k, (name, (make, io, *edit)) in enumerate(MODELS.items()):
        if args.names and name not in args.names:
            continue
        rng = _seed(100 + (next(i for i, v in enumerate(MODELS.values()) if v[0] is make) if edit else k))
        model, shape = make()
        fb = convert(model, shape, rng, io)
        for e in edit:
            fb = e(fb)
        with open(os.path.join(args.out, name + ".tflite"), "wb") as f:
            f.write(fb)
        g = goldens(fb, shape, np.random.default_rng(200 + k))
        np.savez_compressed(os.path.join(args.out, name + ".npz"), versions=np.array(versions()), **g)
        print(f"{name}: {len(fb)} bytes, {len(g)} arrays")


if __name__ == "__main__":
    main()
