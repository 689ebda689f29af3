"""Transformer encoders from ONNX (fixq.io.onnx_sequence, docs/onnx.md): a tiny random transformers BertModel
exported by torch.onnx.export (TorchScript exporter at its default opset, 14 and 17, eager and sdpa attention;
the dynamo exporter where onnxscript is installed) imports as a fixq sequence graph whose float reference equals
ONNX Runtime's and transformers' outputs, equals the import_bert route on the same weights, quantizes dynamically
and runs from the CLI; what it does not understand is one line naming the node, op type and opset."""
import importlib.util

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fixq  # noqa: E402
from fixq import graph as G  # noqa: E402
from fixq.cli import cli  # noqa: E402
from fixq.io import OnnxError, import_bert, import_onnx  # noqa: E402

# torch's TorchScript-exporter deprecation notes and tracer warnings
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

CONFIG = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64, hidden_act="gelu",
              layer_norm_eps=1e-12, max_position_embeddings=24, vocab_size=50, type_vocab_size=2)
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
AXES = {0: "batch", 1: "seq"}
DYNAMO = importlib.util.find_spec("onnxscript") is not None


class Hidden(torch.nn.Module):
    """BertModel's last hidden state from positional ids, mask and token types (what the exporter traces)."""

    def __init__(self, bert, pooled=False):
        super().__init__()
        self.bert, self.pooled = bert, pooled

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state
        if not self.pooled:
            return h
        m = attention_mask.unsqueeze(-1).to(h.dtype)   # sentence-transformers' mean pooling, then Normalize
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2.0, dim=1)


def bert(attn="eager", seed=0, **cfg):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**dict(CONFIG, **cfg), attn_implementation=attn)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():   # LayerNorm weights away from 1 and 0, so that folding them is checked
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def export(model, path, opset=None, pooled=False, dynamo=False, axes=True, names=NAMES):
    ex = feeds(np.random.default_rng(5), n=2, length=7)
    args = tuple(torch.from_numpy(ex[k]) for k in names)
    kw = dict(input_names=names, output_names=["out"], opset_version=opset, dynamo=dynamo)
    if dynamo:
        b, s = torch.export.Dim("batch"), torch.export.Dim("seq", max=CONFIG["max_position_embeddings"])
        kw.update(dynamic_shapes={k: {0: b, 1: s} for k in names}, external_data=False)
    elif axes:
        kw["dynamic_axes"] = {k: AXES for k in names} | {"out": {0: "batch"} if pooled else AXES}
    with torch.no_grad():
        torch.onnx.export(Hidden(model, pooled).eval(), args, str(path), **kw)
    return str(path)


def feeds(rng, n=3, length=9):
    mask = np.ones((n, length), np.int64)
    for i in range(1, n):
        mask[i, max(1, length - 3 * i):] = 0    # right padding, as tokenizers pad; every row keeps a token
    return {"input_ids": rng.integers(0, CONFIG["vocab_size"], (n, length)), "attention_mask": mask,
            "token_type_ids": rng.integers(0, 2, (n, length))}


def ort_run(path, f):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, f)[0]


def torch_run(model, f, pooled=False):
    with torch.no_grad():
        return Hidden(model, pooled)(*(torch.from_numpy(f[k]) for k in NAMES)).numpy()


def opset_of(path):
    return next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))


CASES = [(attn, opset, False) for attn in ("eager", "sdpa") for opset in (None, 14, 17)] + [("sdpa", None, True)]


@pytest.mark.parametrize("attn,opset,dynamo", CASES)
def test_float_import_equals_ort_and_transformers(tmp_path, attn, opset, dynamo):
    if dynamo and not DYNAMO:
        pytest.skip("the dynamo exporter needs onnxscript")
    model = bert(attn)
    path = export(model, tmp_path / "bert.onnx", opset, dynamo=dynamo)
    g = import_onnx(path)
    ops = [n.op for n in g.nodes]
    assert ops.count("layer_norm") == 5 and ops.count("gelu") == 2 and ops.count("linear") == 12
    assert ops.count("attention_mask") == 1 and ops.count("softmax") == 2 and ops.count("matmul") == 4
    assert [i["name"] for i in g.inputs] == NAMES and g.dims == {"seq": CONFIG["max_position_embeddings"]}
    rng = np.random.default_rng(1)
    for f in (feeds(rng), feeds(rng, n=1, length=CONFIG["max_position_embeddings"]), feeds(rng, n=4, length=2)):
        y, ref = G.run_float(g, f), ort_run(path, f)
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max(), f"opset {opset_of(path)}"
        np.testing.assert_allclose(y, torch_run(model, f), atol=1e-5)


def test_pooled_export_equals_import_bert(tmp_path):
    """Mean pooling and normalize, exported, become masked_mean and l2_normalize; the graph gives import_bert's
    embeddings on the same weights, in float and in dynamic int8."""
    model = bert("sdpa", seed=3)
    model.save_pretrained(str(tmp_path / "bert"))
    path = export(model, tmp_path / "bert.onnx", 17, pooled=True)
    g, gb = import_onnx(path), import_bert(str(tmp_path / "bert"))
    assert [n.op for n in g.nodes][-2:] == ["masked_mean", "l2_normalize"]
    assert g.inputs[2]["optional"]
    rng = np.random.default_rng(2)
    f = feeds(rng, n=5, length=11)
    y = G.run_float(g, f)
    np.testing.assert_allclose(y, G.run_float(gb, f), atol=2e-7)
    ref = ort_run(path, f)
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    np.testing.assert_allclose(y, torch_run(model, f, pooled=True), atol=1e-6)
    for kw in (dict(weights="fp32"), dict(dynamic=True), dict(dynamic=True, granularity="tensor", int8_attention=True)):
        q, qb = fixq.quantize_model(g, **kw).run(f), fixq.quantize_model(gb, **kw).run(f)
        assert np.abs(q - qb).max() < 1e-5, kw
    without_types = {k: f[k] for k in NAMES[:2]}
    zero_types = dict(f, token_type_ids=0 * f["token_type_ids"])
    np.testing.assert_array_equal(G.run_float(g, without_types), G.run_float(g, zero_types))


def test_token_types_left_out_of_the_export(tmp_path):
    """Exported without token_type_ids, BertModel reads token type 0 for every token (its buffer): the import
    takes input_ids and attention_mask and gives the same outputs."""
    model = bert("sdpa", seed=1)
    path = export(model, tmp_path / "bert.onnx", 17, names=NAMES[:2])
    g = import_onnx(path)
    assert [i["name"] for i in g.inputs] == NAMES[:2]
    f = feeds(np.random.default_rng(3))
    f["token_type_ids"][:] = 0
    y, ref = G.run_float(g, {k: f[k] for k in NAMES[:2]}), torch_run(model, f)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    np.testing.assert_allclose(y, ort_run(path, {k: f[k] for k in NAMES[:2]}), atol=1e-5)


def test_cli_import_quantize_run(tmp_path):
    path = export(bert("sdpa"), tmp_path / "bert.onnx", 17, pooled=True)
    f = feeds(np.random.default_rng(4))
    np.savez(tmp_path / "in.npz", **f)
    runner = CliRunner()
    for args in (["import", path, "-o", str(tmp_path / "m.npz")],
                 ["quantize", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.q.npz"), "--dynamic"],
                 ["run", str(tmp_path / "m.q.npz"), str(tmp_path / "in.npz"), "-o", str(tmp_path / "q.npy")],
                 ["run", path, str(tmp_path / "in.npz"), "-o", str(tmp_path / "f.npy")]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 0, r.output
    with pytest.raises(ValueError, match=r"is a float ONNX model; .* --dynamic \(docs/onnx.md\)"):
        fixq.Model.load(path)
    q, y, ref = np.load(tmp_path / "q.npy"), np.load(tmp_path / "f.npy"), ort_run(path, f)
    assert np.abs(y - ref).max() <= 1e-5
    assert ((q * ref).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(ref, axis=1)).min() > 0.999


def test_refusals_are_one_line(tmp_path):
    # the tanh form of GELU is not read from ONNX: its Pow is named
    path = export(bert("eager", hidden_act="gelu_new"), tmp_path / "tanh.onnx", 17)
    with pytest.raises(OnnxError, match=r"^node '[^']+' \(Pow, opset 17\): .*\(docs/onnx.md") as e:
        import_onnx(path)
    assert "\n" not in str(e.value)
    path = export(bert("eager"), tmp_path / "fixed.onnx", 17, axes=False)
    with pytest.raises(OnnxError, match=r"symbolic sequence dim"):
        import_onnx(path)
    r = CliRunner().invoke(cli, ["import", path, "-o", str(tmp_path / "m.npz")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "symbolic sequence dim" in r.output


def test_sequence_dim_bounded_by_position_table(tmp_path):
    g = import_onnx(export(bert("eager"), tmp_path / "bert.onnx", 14))
    assert g.spec["dims"] == {"seq": CONFIG["max_position_embeddings"]}
    with pytest.raises(ValueError, match="seq dim must be 1 to 24"):
        G.run_float(g, feeds(np.random.default_rng(0), n=1, length=25))


def _edited(path, edit):
    m = onnx.load(path)
    edit(m)
    out = path.replace(".onnx", ".edited.onnx")
    onnx.save(m, out)
    return out


def _mask_cast(m):
    return next(n for n in m.graph.node if n.op_type == "Cast" and n.input[0] == "attention_mask")


def test_mask_chains_fixq_does_not_read(tmp_path):
    path = export(bert("eager"), tmp_path / "bert.onnx", 17)

    def unknown_op(m):
        _mask_cast(m).op_type = "Hardmax"

    with pytest.raises(OnnxError, match=r"^node '[^']+' \(Hardmax, opset 17\): this op is not supported on the "
                                        r"integer inputs"):
        import_onnx(_edited(path, unknown_op))

    def positive_bias(m):   # the masked positions get +1 instead of the float32 minimum
        consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
        const = next(consts[n.input[2]] for n in m.graph.node if n.op_type == "Where" and n.input[2] in consts)
        const.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(1, np.float32)))

    with pytest.raises(OnnxError, match=r"\(Add, opset 17\): adds a tensor computed from the integer inputs that is "
                                        r"not an attention mask's additive bias"):
        import_onnx(_edited(path, positive_bias))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_exported_attention_runs_fused(tmp_path, attn):
    """An export's attention (the scores scaled after their matmul; sdpa: query and key scaled each) runs as
    the fused float_ops.attention step where it has one scale, within float rounding of the separate steps;
    Fortran-ordered feeds run too."""
    path = export(bert(attn), tmp_path / "bert.onnx", 17, pooled=True)
    m = fixq.quantize_model(import_onnx(path), weights="fp32")
    fused = len(m._sequence.steps_all) - len(m._sequence.steps)
    assert fused == (8 * CONFIG["num_hidden_layers"] if attn == "eager" else 0)
    f = feeds(np.random.default_rng(6), n=4, length=10)
    y, ref = m.run(f), ort_run(path, f)
    assert np.abs(y - ref).max() <= 1e-5
    np.testing.assert_array_equal(m.run({k: np.asfortranarray(v) for k, v in f.items()}), y)


@pytest.mark.parametrize("attn, pooled", [("eager", True), ("eager", False), ("sdpa", True)])
def test_exported_padding_left_out_where_dead(tmp_path, attn, pooled):
    """In dynamic int8, a pooled export with fused attention runs its batches' real tokens alone, with the bits
    of the padded run; the last hidden state (its padding rows are outputs) and unfused attention run padded."""
    path = export(bert(attn, seed=4), tmp_path / "bert.onnx", 17, pooled=pooled)
    m, padded = (fixq.quantize_model(import_onnx(path), dynamic=True) for _ in range(2))
    assert (m._sequence.padding is not None) == (attn == "eager" and pooled)
    padded._sequence.padding = None
    f = feeds(np.random.default_rng(7), n=4, length=12)
    f["attention_mask"][0, 1:] = 0
    for threads in (1, 2):
        y, want = m.run(f, threads=threads), padded.run(f, threads=threads)
        np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32))


def test_quantize_dynamic_export_points_at_the_float_route(tmp_path):
    """ORT's quantize_dynamic of an encoder is not read; the one line says how such a model gets in."""
    from onnxruntime.quantization import quantize_dynamic
    path = export(bert("eager"), tmp_path / "bert.onnx", 17, pooled=True)
    quantize_dynamic(path, str(tmp_path / "bert_dyn.onnx"))
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "bert_dyn.onnx"), "-o", str(tmp_path / "m.npz")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "imported from its float export, then quantized with `fixq quantize --dynamic`" in r.output
