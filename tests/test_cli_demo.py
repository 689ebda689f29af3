"""``fixq demo``'s speed comparison: both sides on the same number of threads, said in the output."""
import pytest
from click.testing import CliRunner

from fixq.cli import cli
from fixq.cli._blas import _openblas, blas_threads


def test_demo_times_both_sides_on_the_same_threads():
    r = CliRunner().invoke(cli, ["demo", "--model", "mlp"])
    assert r.exit_code == 0, r.output
    assert "numpy float on 1 OpenBLAS thread, fixq int8 on 1 thread" in r.output or \
        "numpy float on its BLAS's own thread count" in r.output, r.output
    assert "speed: median of 7 runs" in r.output
    speed = [ln for ln in r.output.splitlines() if ln.strip().startswith("speed ")][0]
    assert speed.count("x)") == 2  # the float/int8 ratio at batch 450 and at batch 1


def test_blas_threads_sets_and_restores():
    fns = _openblas()
    if fns is None:
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    before = fns[1]()
    with blas_threads(1) as got:
        assert got == ("OpenBLAS", 1) and fns[1]() == 1
    assert fns[1]() == before
