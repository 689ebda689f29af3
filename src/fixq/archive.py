"""fixq's two archive formats, read and written in one place (docs/engine.md).

- Float models (``fixq.graph/1``): an ``.npz`` of float weights with PyTorch ``state_dict`` keys and
  the graph as JSON under ``__graph__``; :func:`load_float_model` returns a validated
  :class:`fixq.graph.Graph`.
- Quantized models (``fixq.qmodel/1``): an ``.npz`` with ``__format__``, ``__meta__`` (JSON: options,
  tensors, the fused steps) and one array per parameter; :func:`read_archive` checks every key
  before anything runs, :func:`write_archive` writes one atomically.

Every archive is read with ``allow_pickle=False``.  A file that is not an ``.npz`` (a PyTorch
checkpoint, an ONNX or TFLite model, a single ``.npy``) is named as what it is, with the way in.
Every file is written to a temporary name in its directory and renamed into place, with the mode a
plain ``open()`` would give it.
"""
import contextlib
import json
import math
import os
import stat
import zipfile
import zlib

import numpy as np

from ._core import VERSION
from . import graph as G
from ._validate import INT_RANGES

QMODEL_FORMAT = "fixq.qmodel/1"
QMODEL_VERSION = 1
WEIGHT_TYPES = ("int8", "fp16", "ternary", "binary", "fp32")
LOWBIT_KEY = {"ternary": "weight_codes", "binary": "weight_bits"}
ACT_TYPES = {"int8": np.int8, "uint8": np.uint8}


class ArchiveError(ValueError):
    """An archive that is damaged, not an archive, of an unknown or newer format, or inconsistent."""


# ---------------------------------------------------------------------------------------------
# Writing

@contextlib.contextmanager
def atomic_path(path):
    """The path of a new, empty file in `path`'s directory, renamed onto `path` when the block ends and
    removed if it raises: a reader sees the old file or the whole new one, never a part.  The file has
    the mode ``open(path, "w")`` would give it: an existing file's mode, else 0o666 less the umask (the
    kernel applies it, as for ``open``).  An OSError from creating it names the directory."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(d, f".fixq-{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise OSError(e.errno, f"cannot create a file in {d} ({e.strerror or e})") from None
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a new binary file that replaces `path` as a whole (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


def write_float_model(path, g):
    """Write the ``fixq.graph/1`` archive of validated graph `g` (its weights plus ``__graph__``) atomically."""
    out = dict(g.weights)
    out["__graph__"] = np.array(json.dumps(g.spec))
    atomic_write(path, lambda f: np.savez(f, **out))


def write_archive(path, meta, arrays):
    """Write a ``fixq.qmodel/1`` archive of `meta` and `arrays` atomically."""
    out = {"__format__": np.array(QMODEL_FORMAT), "__meta__": np.array(json.dumps(meta))}
    out.update(arrays)
    atomic_write(path, lambda f: np.savez(f, **out))


# ---------------------------------------------------------------------------------------------
# Reading .npz files safely

_NPZ_HOWTO = "fixq reads float models as .npz (numpy.savez of the weights plus a __graph__; docs/engine.md)"


def _what_file(path):
    """What a file that numpy cannot read as an .npz is, and how to get from it to fixq, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    suffix = os.path.splitext(str(path))[1].lower()
    torch_howto = ("a PyTorch checkpoint (torch.save); fixq does not unpickle: save its state_dict with "
                   "numpy.savez(path, **{k: v.numpy() for k, v in sd.items()}) plus a __graph__ (docs/engine.md)")
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return torch_howto if suffix in (".pt", ".pth", ".bin", ".ckpt") else \
            "a Python pickle; fixq does not unpickle. " + _NPZ_HOWTO
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            return None
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return torch_howto
        return None
    if head[4:8] == b"TFL3":
        return ("a TensorFlow Lite model (.tflite); a full-integer one runs as it is: fixq run MODEL.tflite, or "
                "fixq import MODEL.tflite -o model.q.npz (Python: fixq.import_tflite; docs/tflite.md)")
    if suffix == ".onnx":
        return ("an ONNX model (.onnx); import it first: fixq import MODEL.onnx -o model.npz (Python: "
                "fixq.import_onnx; docs/onnx.md)")
    if head[:6] == b"\x93NUMPY":
        return "a single .npy array, not an .npz archive. " + _NPZ_HOWTO
    return None


def _check_members(path, zf):
    """Before anything is decompressed: each member named once, each member's size as its .npy header
    declares it (shape x itemsize after the header), and all of them within LIMITS["archive_bytes"]
    (zipfile never inflates a member past its declared size)."""
    seen, total = set(), 0
    for info in zf.infolist():
        if info.filename in seen:
            raise ArchiveError(f"{path}: member {info.filename!r} appears twice in the zip; a fixq archive names "
                               "each key once")
        seen.add(info.filename)
        total += info.file_size
        if total > G.LIMITS["archive_bytes"]:
            raise ArchiveError(f"{path}: its members hold more than {G.LIMITS['archive_bytes']} bytes uncompressed "
                               "(docs/security.md)")
        try:
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f, max_header_size=10000)
                header = f.tell()
        except (ValueError, SyntaxError, zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
                RuntimeError):
            continue  # not an .npy, or damaged: reading it names what is wrong
        if dtype.hasobject:
            continue  # a pickle: refused when read
        declared = header + math.prod(shape) * dtype.itemsize
        if declared != info.file_size:
            raise ArchiveError(f"{path}: member {info.filename!r} declares shape {shape} of {dtype} ({declared} "
                               f"bytes with its header) but holds {info.file_size} bytes")


def load_npz(path, what="model"):
    """The arrays of an .npz (allow_pickle=False), with damaged files, pickles and files of other kinds
    as one-line errors."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArchiveError(f"{path}: is a directory") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, NotImplementedError) as e:
        # NotImplementedError: zipfile's answer to a central directory entry needing a newer zip version
        kind = _what_file(path)
        if kind is not None:
            raise ArchiveError(f"{path}: is {kind}") from None
        raise ArchiveError(f"{path}: damaged or not an .npz archive ({' '.join(str(e).split())})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ArchiveError(f"{path}: is a single .npy array, not an .npz archive; save the {what} with numpy.savez")
    out = {}
    with z:
        _check_members(path, z.zip)
        if any(k == "data.pkl" or k.endswith("/data.pkl") for k in z.files):
            raise ArchiveError(f"{path}: is {_what_file(path) or 'not an .npz archive of arrays'}")
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise ArchiveError(f"{path}: key {k!r} holds a pickled object array; fixq archives hold only "
                                       "plain numeric and string arrays") from None
                raise ArchiveError(f"{path}: key {k!r} is damaged ({' '.join(str(e).split())})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
                # zipfile raises RuntimeError for an encrypted entry, NotImplementedError for an unknown method
                raise ArchiveError(f"{path}: key {k!r} is damaged ({' '.join(str(e).split())})") from None
    return out


# ---------------------------------------------------------------------------------------------
# Float models (fixq.graph/1)

def load_float_model(path, graph=None, activation=None):
    """(Graph, inferred) from a float ``.npz`` at `path`.

    `graph` (a dict, a JSON string, or the path of a .json file) overrides the archive's ``__graph__``.
    With neither, a sequential MLP is inferred from the ``<layer>.weight``/``<layer>.bias`` pairs and
    ``inferred`` is True; the activation between its layers must then be named, by `activation`
    (``"relu"``, ``"relu6"`` or ``"none"``) or by an ``__activation__`` string in the archive: fixq
    does not guess it."""
    arrays = load_npz(path)
    if "__format__" in arrays or "__meta__" in arrays:
        raise ArchiveError(f"{path}: is a fixq quantized model ({QMODEL_FORMAT}), not a float model; run it with "
                           "`fixq run`, or quantize the float .npz it was made from")
    spec_src = arrays.pop("__graph__", None)
    hint = arrays.pop("__activation__", None)
    if graph is not None:
        spec_src = _graph_arg(graph)
    weights = {}
    for k, v in arrays.items():
        if v.dtype not in (np.float16, np.float32, np.float64):
            raise ArchiveError(f"{path}: key {k!r} has dtype {v.dtype}; a float model holds float16, float32 or "
                               "float64 weights")
        weights[k] = np.ascontiguousarray(v, dtype=np.float32)
    if spec_src is not None:
        return G.validate(G.parse_spec(spec_src), weights), False
    if activation is None and hint is not None:
        if hint.dtype.kind != "U" or hint.ndim != 0:
            raise ArchiveError(f"{path}: key '__activation__' must be a string, one of {list(G.ACTIVATIONS)}")
        activation = str(hint)
    if activation is None:
        raise G.GraphError(f"{path}: has no __graph__, so fixq infers a sequential MLP from its weights but cannot "
                           f"know the activation between layers; name it (--activation "
                           f"{'|'.join(G.ACTIVATIONS)}, Python activation=) or add a __graph__ (docs/engine.md)")
    return G.validate(G.infer_mlp(weights, activation), weights), True


def _graph_arg(graph):
    """A `graph=` argument: a dict or JSON text as it is; any other string or path is a .json file."""
    if isinstance(graph, dict) or (isinstance(graph, str) and graph.lstrip().startswith("{")):
        return graph
    try:
        with open(graph, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise G.GraphError(f"graph: cannot read {str(graph)!r} ({getattr(e, 'strerror', None) or e})") from None


# ---------------------------------------------------------------------------------------------
# Quantized models (fixq.qmodel/1)

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
FUSED = ("linear", "conv2d", "add", "mul", "sub")  # the ops whose step may end in a fused act (and out_min/out_max)


def float_activations(options):
    """Whether a model of these options keeps float activations between steps (no activation qparams)."""
    return bool(options["dynamic"]) or options["weights"] in ("fp16", "fp32")


_WEIGHT_RANK = {"linear": 2, "conv2d": 4, "gather": 2, "layer_norm": 1}


def _step_keys(op):
    """The keys a step of `op` may hold: the common ones, the op's graph attributes (fixq.graph.OPS) but
    the weight keys, and what the plan adds."""
    keys = set(_STEP_KEYS) | (set(G.OPS[op][1]) - {"weight", "bias"})
    if op in _WEIGHT_RANK:
        keys.add("weight_shape")
    if op == "conv2d":
        keys.add("depthwise")
    if op in FUSED:
        keys |= {"out_min", "out_max"}
    if op == "softmax":
        keys.add("quantized")  # its output quantized by the target's own 8-bit kernel (ORT QLinearSoftmax)
    return keys


def _check_meta(meta):
    """__meta__'s structure: the options, names, shapes within fixq.graph.LIMITS, and steps that compute
    each tensor once and read only tensors computed before them."""
    def names(v):
        return isinstance(v, list) and v and all(isinstance(t, str) for t in v)

    if not isinstance(meta["options"], dict) or not isinstance(meta["tensors"], dict) \
            or not isinstance(meta["steps"], list):
        raise ArchiveError("key '__meta__' must hold 'options' and 'tensors' (objects) and 'steps' (a list)")
    for k in _OPTION_KEYS:
        if k not in meta["options"]:
            raise ArchiveError(f"key '__meta__' lacks options.{k}")
    if len(meta["steps"]) > G.LIMITS["nodes"]:
        raise ArchiveError(f"key '__meta__': {len(meta['steps'])} steps, more than {G.LIMITS['nodes']} "
                           "(docs/security.md)")
    tensors = meta["tensors"]
    sequence = "inputs" in meta
    if sequence:
        _check_sequence_meta(meta)
    for t, shape in tensors.items():  # fixq.graph's rule for the input shape, for every tensor
        G.check_name("key '__meta__': tensor", t)
        if sequence:
            tensors[t] = list(G.parse_shape(f"key '__meta__': tensor {t!r}", shape, meta["dims"]))
        elif (not isinstance(shape, list) or len(shape) not in (2, 4) or shape[0] is not None
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
            raise ArchiveError(f"key '__meta__': tensor {t!r} has shape {shape!r}; it must be [null, features] or "
                               "[null, C, H, W] with positive sizes")
        G.check_elements(t, "key '__meta__' gives it shape", tensors[t])
    if not isinstance(meta["input"], str) or meta["input"] not in tensors:
        raise ArchiveError(f"key '__meta__': input {meta['input']!r} is not one of its tensors")
    if meta["input_shape"] != tensors[meta["input"]]:
        raise ArchiveError(f"key '__meta__': input_shape {meta['input_shape']!r} is not the shape of tensor "
                           f"{meta['input']!r}, {tensors[meta['input']]!r}")
    inputs = [i["name"] for i in meta["inputs"]] if sequence else [meta["input"]]
    for i, name in enumerate(inputs):
        if name not in tensors or (sequence and list(meta["inputs"][i]["shape"]) != tensors[name]):
            raise ArchiveError(f"key '__meta__': input {name!r} is not one of its tensors, of the same shape")
    known, steps = set(inputs), set()
    for i, s in enumerate(meta["steps"]):
        if not isinstance(s, dict) or any(k not in s for k in _STEP_KEYS):
            raise ArchiveError(f"key '__meta__': step {i} must be an object with keys {', '.join(_STEP_KEYS)}")
        G.check_name(f"key '__meta__': step {i}", s["name"])
        if s["name"] in steps:
            raise ArchiveError(f"step {s['name']!r}: key 'name' is used twice")
        steps.add(s["name"])
        if not names(s["inputs"]):
            raise ArchiveError(f"step {s['name']!r}: key 'inputs' must be a non-empty list of tensor names")
        for t in s["inputs"]:
            if t not in tensors:
                raise ArchiveError(f"step {s['name']!r}: key 'inputs' names unknown tensor {t!r}")
            if t not in known:
                raise ArchiveError(f"step {s['name']!r}: key 'inputs' names tensor {t!r} before a step computes it")
        if not isinstance(s["output"], str) or s["output"] not in tensors:
            raise ArchiveError(f"step {s['name']!r}: output {s['output']!r} is not one of the tensors")
        if s["output"] in known:
            raise ArchiveError(f"step {s['name']!r}: output {s['output']!r} is computed twice (or is the input)")
        known.add(s["output"])
    if not names(meta["outputs"]) or not set(meta["outputs"]) <= known:
        raise ArchiveError(f"key '__meta__': outputs {meta['outputs']!r} are not tensors the steps compute")


def _check_sequence_meta(meta):
    """A sequence model's ``inputs`` and ``dims`` (fixq.graph.parse_input's rules; shapes become tuples of ints and
    Dims in place) and its options: dynamic int8 or fp32, ``granularity``, ``int8_attention``."""
    if not isinstance(meta["inputs"], list) or not 1 <= len(meta["inputs"]) <= G.LIMITS["inputs"]:
        raise ArchiveError(f"key '__meta__': inputs must list 1 to {G.LIMITS['inputs']} inputs")
    dims = meta["dims"] = G.parse_dims("key '__meta__'", meta.get("dims"))
    meta["inputs"] = [G.parse_input(f"key '__meta__': inputs[{i}]", inp, dims) for i, inp in enumerate(meta["inputs"])]
    if meta["inputs"][0]["name"] != meta["input"] or meta["inputs"][0]["optional"]:
        raise ArchiveError("key '__meta__': inputs[0] must be the input named by 'input', and not optional")
    if len({i["name"] for i in meta["inputs"]}) != len(meta["inputs"]):
        raise ArchiveError("key '__meta__': inputs name one input twice")
    opts = meta["options"]
    seq_keys = ("granularity", "int8_attention", "int8_gather")
    if opts["weights"] == "fp32" and not opts["dynamic"] and not any(k in opts for k in seq_keys):
        return
    if (opts["weights"] != "int8" or opts["dynamic"] is not True or opts.get("granularity") not in ("row", "tensor")
            or not isinstance(opts.get("int8_attention"), bool)
            or not isinstance(opts.get("int8_gather", False), bool)):
        raise ArchiveError("key '__meta__': a sequence model runs weights fp32, or int8 with dynamic true, granularity "
                           "'row' or 'tensor', int8_attention and int8_gather (optional) true or false; got options "
                           f"{ {k: opts.get(k) for k in ('weights', 'dynamic') + seq_keys} }")


def _check_steps(meta):
    """Every attribute of every step, by fixq.graph's own checks (fixq.graph.output_shape: types, ranges,
    kernels that fit, groups that divide the channels, LIMITS), each step's output shape equal to its
    tensor's, and what the plan adds (``weight_shape``, ``depthwise``, ``act``, ``out_min``/``out_max``)
    consistent with them; pairs are normalized to lists in place."""
    tensors, static = meta["tensors"], not float_activations(meta["options"])
    sequence = "inputs" in meta
    kinds = {i["name"]: "float" if i["dtype"] == "float32" else "int" for i in meta["inputs"]} if sequence else {}
    lo, hi = INT_RANGES[np.dtype(ACT_TYPES[meta["options"]["activations"]])]
    for s in meta["steps"]:
        name, op = s["name"], s["op"]
        if op not in G.OPS:
            raise ArchiveError(f"step {name!r}: key 'op' is {op!r}, not one of {sorted(G.OPS)}")
        if op in G.SEQUENCE_OPS and not sequence:
            raise ArchiveError(f"step {name!r}: key 'op' is {op!r}, an op of sequence models, and key '__meta__' lacks "
                               "their 'inputs'")
        extra = set(s) - _step_keys(op)
        if extra:
            raise ArchiveError(f"step {name!r}: unknown key {sorted(extra)[0]!r} for op {op}")
        n_in = G.OPS[op][0]
        if n_in is not None and s.get("constant") is not None:  # an add / mul / sub of a constant
            n_in -= 1
        if (n_in is None and len(s["inputs"]) < 2) or (n_in is not None and len(s["inputs"]) != n_in):
            raise ArchiveError(f"step {name!r}: key 'inputs' names {len(s['inputs'])} tensors; {op} takes "
                               f"{'2 or more' if n_in is None else n_in}")
        if s["act"] not in (None, "relu", "relu6") or (s["act"] is not None and op not in FUSED):
            raise ArchiveError(f"step {name!r}: key 'act' is {s['act']!r}; a {op} step takes "
                               + ("null, 'relu' or 'relu6'" if op in FUSED else "null"))
        w_shape = None
        if op in _WEIGHT_RANK:
            w_shape = s.get("weight_shape")
            if (not isinstance(w_shape, list) or len(w_shape) != _WEIGHT_RANK[op]
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in w_shape)):
                raise ArchiveError(f"step {name!r}: key 'weight_shape' is {w_shape!r}")
            G.check_elements(name, "key 'weight_shape'", [None] + w_shape)
        attrs = {k: s.get(k, d) for k, d in G.OPS[op][1].items() if k not in ("weight", "bias")}
        node = G.Node(name, op, list(s["inputs"]), attrs)
        if sequence:
            G.check_input_kinds(node, [kinds.get(t, "float") for t in s["inputs"]])
        shape = G.output_shape(node, [tuple(tensors[t]) for t in s["inputs"]], w_shape, sequence)
        if list(shape) != tensors[s["output"]]:
            raise ArchiveError(f"step {name!r}: its attributes give output shape {list(shape)}, but tensor "
                               f"{s['output']!r} has shape {tensors[s['output']]}")
        for k, v in attrs.items():
            s[k] = list(v) if isinstance(v, tuple) else v
        if s.get("quantized", True) is not True:
            raise ArchiveError(f"step {name!r}: key 'quantized' is {s['quantized']!r}; it is true or absent")
        if op == "conv2d":
            dw = G.is_depthwise(node, tensors[s["inputs"][0]][1])
            if s.setdefault("depthwise", dw) is not dw:
                raise ArchiveError(f"step {name!r}: key 'depthwise' is {s['depthwise']!r}, but groups={attrs['groups']} "
                                   f"and {tensors[s['inputs'][0]][1]} input channels make it {dw}")
        bounds = [s.get(k) for k in ("out_min", "out_max") if k in s]
        if static and s["act"] is not None and len(bounds) != 2:
            raise ArchiveError(f"step {name!r}: key 'act' is {s['act']!r} but keys 'out_min' and 'out_max' are missing")
        if bounds and not (len(bounds) == 2 and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                           and lo <= bounds[0] <= bounds[1] <= hi):
            raise ArchiveError(f"step {name!r}: keys 'out_min', 'out_max' are {bounds}; they must be integers "
                               f"with {lo} <= out_min <= out_max <= {hi}")
    if static:
        check_engine_limits(sum(s["op"] != "softmax" for s in meta["steps"]), len(meta["outputs"]), "key '__meta__'")


def check_engine_limits(n_steps, n_outputs, what):
    """A static int8 model's C plan holds its steps' tensors (softmax runs outside it), the float input and
    the quantized input, at most LIMITS["engine_tensors"], and at most LIMITS["engine_outputs"] outputs."""
    if n_steps + 2 > G.LIMITS["engine_tensors"] or n_outputs > G.LIMITS["engine_outputs"]:
        raise ArchiveError(f"{what}: {n_steps} steps and {n_outputs} outputs; a static int8 model runs at most "
                           f"{G.LIMITS['engine_tensors'] - 2} steps and {G.LIMITS['engine_outputs']} outputs "
                           "(docs/security.md); quantize it with dynamic=True (--dynamic)")


def _check_archive(meta, arrays):
    """Every key the plan needs, with its dtype and shape."""
    opts = meta["options"]
    weights = opts["weights"]
    if weights not in WEIGHT_TYPES or opts["activations"] not in ACT_TYPES:
        raise ArchiveError(f"key '__meta__': options weights={weights!r}, activations={opts['activations']!r} "
                           "are not ones this fixq runs")
    dynamic = float_activations(opts)
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
            o, k = shape[0], math.prod(shape[1:])
            if weights in LOWBIT_KEY:
                per = 4 if weights == "ternary" else 8
                _expect(arrays, f"{name}:{LOWBIT_KEY[weights]}", np.uint8, (o, (k + per - 1) // per), name)
            else:
                _expect(arrays, f"{name}:weight", {"fp16": np.float16, "fp32": np.float32}.get(weights, np.int8), shape,
                        name)
            _expect(arrays, f"{name}:bias", np.float32 if dynamic else np.int32, (o,), name)
            if weights in ("fp16", "fp32"):
                for k in ("weight", "bias"):
                    if not np.all(np.isfinite(arrays[f"{name}:{k}"])):
                        raise ArchiveError(f"step {name!r}: key '{name}:{k}' contains NaN or Inf")
                continue
            nch = arrays.get(f"{name}:weight_scale", np.zeros(0)).shape
            ch = nch[0] if len(nch) == 1 and nch[0] in (1, o) else o
            _expect(arrays, f"{name}:weight_scale", np.float32, (ch,), name)
            wzp = _expect(arrays, f"{name}:weight_zero_point", np.int32, (ch,), name)
            if np.any(wzp != 0) and (not dynamic or weights != "int8" or np.any((wzp < -128) | (wzp > 127))):
                raise ArchiveError(f"step {name!r}: key '{name}:weight_zero_point' must be 0 (symmetric weights), or "
                                   "within int8 in a dynamic int8 model")
            if not dynamic:
                for k, dt in (("multiplier", np.int32), ("shift", np.int32), ("scale", np.float32)):
                    _expect(arrays, f"{name}:{k}", dt, (ch,), name)
        elif op == "gather" and opts.get("int8_gather"):
            _expect(arrays, f"{name}:weight", np.int8, s["weight_shape"], name)
            sc = _expect(arrays, f"{name}:weight_scale", np.float32, s["weight_shape"][:1], name)
            if not (np.all(np.isfinite(sc)) and np.all(sc > 0)):
                raise ArchiveError(f"step {name!r}: key '{name}:weight_scale' must be finite and > 0")
        elif op in G.FLOAT_WEIGHTED:
            for k in G.FLOAT_WEIGHTED[op]:
                a = _expect(arrays, f"{name}:{k}", np.float32, s["weight_shape"], name)
                if not np.all(np.isfinite(a)):
                    raise ArchiveError(f"step {name!r}: key '{name}:{k}' contains NaN or Inf")
        elif op == "concat" and not dynamic:
            for k, dt in (("multiplier", np.int32), ("shift", np.int32), ("scale", np.float32)):
                _expect(arrays, f"{name}:{k}", dt, (len(s["inputs"]),), name)
        elif op in ("add", "mul", "sub") and s.get("constant") is not None:
            shape = s["constant_shape"]
            shape = [1] + (shape[1:] + shape[:1] if len(shape) == 3 else shape)  # internal layout, batch 1
            _expect(arrays, f"{name}:constant", act_dt, tuple(shape), name)
            _expect(arrays, f"{name}:constant_scale", np.float32, (), name)
            zp = _expect(arrays, f"{name}:constant_zero_point", np.int32, (), name)
            lo, hi = INT_RANGES[np.dtype(act_dt)]
            sc = arrays[f"{name}:constant_scale"]
            if not (lo <= int(zp) <= hi and np.isfinite(sc) and sc > 0):
                raise ArchiveError(f"step {name!r}: its constant's scale must be finite and > 0 and its zero point "
                                   f"inside {opts['activations']}")
        elif op in G.TABLE_OPS and not dynamic:
            _expect(arrays, f"{name}:table", act_dt, (256,), name)
        elif op == "batchnorm" and not dynamic:
            _expect(arrays, f"{name}:table", act_dt, (tshapes[s["inputs"][0]][1], 256), name)
        elif op == "global_avgpool" and not dynamic and f"{name}:multiplier" in arrays:
            # archives of fixq 0.1 keep the input's scale here, without a requantization
            for k, dt in (("multiplier", np.int32), ("shift", np.int32), ("scale", np.float32)):
                _expect(arrays, f"{name}:{k}", dt, (1,), name)


def _parse_format(value, path):
    if value.dtype.kind != "U" or value.ndim != 0:
        raise ArchiveError(f"{path}: key '__format__' must be a string")
    fmt = str(value)
    name, _, ver = fmt.partition("/")
    if name != "fixq.qmodel" or not ver.isdigit():
        raise ArchiveError(f"{path}: key '__format__' is {fmt!r}, not a fixq quantized model "
                           f"({QMODEL_FORMAT})")
    if int(ver) > QMODEL_VERSION:
        raise ArchiveError(f"{path}: format {fmt} is newer than this fixq {VERSION} reads "
                           f"({QMODEL_FORMAT}); upgrade fixq")
    return fmt


def read_archive(path):
    """(meta, arrays) of a fixq.qmodel archive, checked key by key."""
    arrays = load_npz(path, "quantized model")
    if "__format__" not in arrays:
        if "__graph__" in arrays or all(a.dtype.kind == "f" for k, a in arrays.items() if not k.startswith("__")):
            raise ArchiveError(f"{path}: is a float model, not a quantized one ({QMODEL_FORMAT}); quantize it "
                               f"first: fixq quantize {path} -o model.q.npz --calib data.npy")
        raise ArchiveError(f"{path}: no key '__format__'; not a fixq quantized model (make one with "
                           "`fixq quantize`)")
    _parse_format(arrays.pop("__format__"), path)
    if "__meta__" not in arrays:
        raise ArchiveError(f"{path}: key '__meta__' is missing")
    m = arrays.pop("__meta__")
    if m.dtype.kind != "U" or m.ndim != 0:
        raise ArchiveError(f"{path}: key '__meta__' must be a JSON string")
    try:
        meta = G.json_object(str(m), "key '__meta__'")
    except G.GraphError as e:
        raise ArchiveError(f"{path}: {e}") from None
    check_archive(meta, arrays, path)
    return meta, arrays


def check_archive(meta, arrays, what):
    """The checks of :func:`read_archive` on a quantized model's `meta` and `arrays` however they were made
    (an archive, an importer): every key, shape, attribute and limit; an ArchiveError naming `what`."""
    for k in ("format", "fixq_version", "options", "graph", "input", "input_shape", "outputs", "tensors", "steps"):
        if k not in meta:
            raise ArchiveError(f"{what}: key '__meta__' lacks {k!r}")
    try:
        _check_meta(meta)
        _check_steps(meta)
        _check_archive(meta, arrays)
    except (KeyError, TypeError) as e:
        raise ArchiveError(f"{what}: key '__meta__' is inconsistent ({type(e).__name__}: {e})") from None
    except (ArchiveError, G.GraphError) as e:
        raise ArchiveError(f"{what}: {e}") from None
