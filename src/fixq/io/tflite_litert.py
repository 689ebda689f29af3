"""LiteRT's interpreter (the ``ai-edge-litert`` package, a test and bench extra) run as each of its kernel
sets, and the first operator where two runs of a .tflite model part ways (``fixq compare``)."""
import warnings

import numpy as np

from .tflite_file import TfliteError

# fixq target -> the interpreter's OpResolverType
RESOLVERS = {"tflite-reference": "BUILTIN_REF", "tflite": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "xnnpack": "BUILTIN"}


def litert():
    """The interpreter module, or None when ai-edge-litert is not installed."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        return None
    return interpreter


def interpreter(content, target, preserve=False, threads=1):
    """An allocated interpreter of the .tflite bytes `content` with `target`'s kernel set."""
    lr = litert()
    if lr is None:
        raise TfliteError("running LiteRT needs the ai-edge-litert package: pip install ai-edge-litert")
    try:
        with warnings.catch_warnings():  # preserve_all_tensors' memory warning: fixq keeps them on purpose
            warnings.simplefilter("ignore", UserWarning)
            it = lr.Interpreter(model_content=bytes(content), num_threads=threads,
                                experimental_op_resolver_type=getattr(lr.OpResolverType, RESOLVERS[target]),
                                experimental_preserve_all_tensors=preserve)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise TfliteError(f"LiteRT cannot load the model ({' '.join(str(e).split())[:200]})") from None
    return it


def run_litert(content, x, target, preserve=False):
    """(outputs, tensors) of LiteRT with `target`'s kernel set on batch `x`, one sample at a time (the
    model's batch is 1): the outputs as a list of arrays [N, ...], and with `preserve` every tensor an
    operator writes {index: [N, ...]}."""
    it = interpreter(content, target, preserve)
    inp = it.get_input_details()[0]["index"]
    outs = [d["index"] for d in it.get_output_details()]
    written = sorted({k for op in it._get_ops_details() for k in op["outputs"]}) if preserve else []
    ys, ts = [[] for _ in outs], {k: [] for k in written}
    for i in range(len(x)):
        it.set_tensor(inp, np.ascontiguousarray(x[i:i + 1]))
        it.invoke()
        for acc, k in zip(ys, outs):
            acc.append(it.get_tensor(k).copy())
        for k in written:
            ts[k].append(it.get_tensor(k).copy())
    return [np.concatenate(v) for v in ys], {k: np.concatenate(v) for k, v in ts.items()}


def first_divergence(operators, ta, tb):
    """(operator, tensor index, elements that differ, elements) of the first operator, in execution order,
    whose output differs between tensor maps `ta` and `tb` (both hold it), or None."""
    for o in operators:
        for k in o.outputs:
            if k in ta and k in tb:
                a, b = ta[k], tb[k].reshape(ta[k].shape)
                n = int(np.count_nonzero(a != b))
                if n:
                    return o, k, n, a.size
    return None
