"""The worker pool's bursts (src/fixq/_csrc/parallel.c, ``_core.ParallelBurst``): holds nest and are released
whatever raises, come from any thread, survive fork in the child, and change no result at any thread count."""
import concurrent.futures
import os
import threading
import time

import numpy as np
import pytest

import fixq
from fixq import _core, float_ops as F
from fixq.io import import_bert
from fixq.quantizer import quantize_model
from test_transformer import feeds, write_model


def ops(threads):
    """Every parallel kernel a sequence model calls, at shapes that split over threads: the results' bytes."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((130, 384), np.float32)
    w = rng.integers(-127, 128, (1152, 384), dtype=np.int8)
    ws = rng.uniform(0.001, 0.01, 1152).astype(np.float32)
    b = rng.standard_normal(1152).astype(np.float32)
    y = F.dynamic_linear(x, fixq.pack_weights(w), ws, b, "row", threads)
    yt = F.dynamic_linear(x, fixq.pack_weights(w), ws, b, "tensor", threads, act="gelu")
    q, k, v = (np.ascontiguousarray(y[:, i * 384:(i + 1) * 384]).reshape(1, 130, 6, 64) for i in range(3))
    mask = np.zeros((1, 1, 1, 130), np.float32)
    mask[..., 120:] = np.finfo(np.float32).min
    att = F.attention(q, k, v, 0.125, mask, threads=threads)
    packed = F.attention(q, k, v, 0.125, threads=threads, seq_offsets=[0, 7, 70, 130])
    ln = F.layer_norm(np.tile(x, (4, 1)), np.ones(384, np.float32), np.zeros(384, np.float32), 1e-12, threads=threads)
    g = F.gelu(np.tile(y, (4, 1)), threads=threads)
    a8 = rng.integers(-128, 128, (200, 300), dtype=np.int8)
    q8 = fixq.qlinear(a8, rng.integers(-128, 128, (260, 300), dtype=np.int8), multiplier=1 << 30, shift=-12,
                      threads=threads)
    return [r.tobytes() for r in (y, yt, att, packed, ln, g, q8)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bert") / "tiny")
    write_model(d)
    return quantize_model(import_bert(d), dynamic=True)


def test_holds_nest_and_release_whatever_raises():
    assert _core.parallel_holds() == 0
    with _core.ParallelBurst(2):
        assert _core.parallel_holds() == 1
        with _core.ParallelBurst(4):
            assert _core.parallel_holds() == 2
        assert _core.parallel_holds() == 1
    assert _core.parallel_holds() == 0
    with pytest.raises(KeyError):
        with _core.ParallelBurst(2):
            raise KeyError("inside a burst")
    assert _core.parallel_holds() == 0
    with _core.ParallelBurst(1):  # one thread: no workers to keep
        assert _core.parallel_holds() == 0
    burst = _core.ParallelBurst(2)
    burst.__exit__(None, None, None)  # a release without its hold stops at none open
    assert _core.parallel_holds() == 0


def test_a_release_without_a_hold_of_its_own_leaves_another_threads_burst_open():
    opened, done = threading.Event(), threading.Event()

    def holder():
        with _core.ParallelBurst(2):
            opened.set()
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert opened.wait(10)
        _core.ParallelBurst(2).__exit__(None, None, None)  # this thread holds nothing
        assert _core.parallel_holds() == 1
    finally:
        done.set()
        t.join()
    assert _core.parallel_holds() == 0


def test_results_are_the_same_at_every_thread_count_in_and_out_of_a_burst(isa):
    ref = ops(1)
    for threads in (1, 2, 4):
        assert ops(threads) == ref, f"threads={threads}"
        with _core.ParallelBurst(threads):
            assert ops(threads) == ref, f"threads={threads} in a burst"
            with _core.ParallelBurst(2):  # a narrower hold inside
                assert ops(threads) == ref, f"threads={threads} in nested bursts"
    assert _core.parallel_holds() == 0


def test_a_model_call_is_one_burst_with_the_bits_of_one_thread(tiny, isa):
    rng = np.random.default_rng(32)
    f = feeds(rng, 4, 12)
    ref = tiny.run(f, threads=1)
    for threads in (2, 4, 2):
        y = tiny.run(f, threads=threads)
        np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32), err_msg=f"threads={threads}")
        assert _core.parallel_holds() == 0
    with pytest.raises(ValueError):
        tiny.run({"input_ids": f["input_ids"]}, threads=2)
    assert _core.parallel_holds() == 0


def test_bursts_from_several_threads_while_the_pool_is_busy(isa):
    """Python threads each holding their own burst: one call at a time has the kept workers, the others start
    threads of their own; every result is exact and every hold is released."""
    ref = ops(1)

    def work(i):
        with _core.ParallelBurst(2 + i % 3):
            return all(ops(2 + i % 3) == ref for _ in range(3))

    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        assert all(ex.map(work, range(6)))
    assert _core.parallel_holds() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_inside_a_burst():
    """The child of a fork inside a burst has no workers and no hold open; it makes new workers, holds and
    releases, and gets the same results; the parent's hold stays open until its own release."""
    ref = ops(1)
    with _core.ParallelBurst(2):
        assert ops(2) == ref  # the workers are up and polling
        pid = os.fork()
        if pid == 0:
            ok = _core.parallel_holds() == 0 and ops(2) == ref
            with _core.ParallelBurst(3):
                ok = ok and _core.parallel_holds() == 1 and ops(3) == ref
            os._exit(0 if ok and _core.parallel_holds() == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _core.parallel_holds() == 1
        assert ops(2) == ref
    assert _core.parallel_holds() == 0


def _allowed(tid):
    """The CPUs a thread of this process may run on (its Cpus_allowed_list)."""
    with open(f"/proc/self/task/{tid}/status") as f:
        line = next(x for x in f if x.startswith("Cpus_allowed_list:"))
    cpus = set()
    for part in line.split(":", 1)[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or not hasattr(os, "sched_getaffinity"),
                    reason="Linux thread affinity")
def test_workers_keep_within_the_processs_cpus(isa):
    """A worker that moves off the caller's CPU keeps to the caller's CPUs, and never to none; the caller's own
    affinity is never touched."""
    mine = os.sched_getaffinity(0)
    want = ops(1)
    with _core.ParallelBurst(4):
        for _ in range(3):
            assert ops(4) == want
    assert os.sched_getaffinity(0) == mine
    for tid in os.listdir("/proc/self/task"):
        cpus = _allowed(tid)
        assert cpus and cpus <= mine


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                    or not os.path.isdir("/proc/self/task"), reason="Linux, 2 or more CPUs")
def test_workers_keep_within_an_affinity_narrowed_after_they_started():
    x = np.random.default_rng(0).standard_normal((4096, 1024)).astype(np.float32)
    F.gelu(x, threads=2)  # the pool's worker starts with every CPU
    time.sleep(0.05)  # and goes to sleep
    mine = os.sched_getaffinity(0)
    narrow = {min(mine)}
    try:
        for t in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(t), narrow)
        for _ in range(50):
            with _core.ParallelBurst(2):
                for _ in range(5):
                    F.gelu(x, threads=2)
        assert all(_allowed(t) <= narrow for t in os.listdir("/proc/self/task"))
    finally:
        for t in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(t), mine)
