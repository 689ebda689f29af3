"""Where a MiniLM call's time goes, step by step, at 1 and 2 threads: bench_transformer.py's ``--full-length``
texts (every token real) through fixq's dynamic int8 model, each step of ``Model.run`` timed by wrapping the
executor's step functions.  Per step kind, the median over the calls of: the calling thread's CPU time at 1 and 2
threads, the other threads' CPU time at 2 (the pool worker's: the process's less the caller's), and the wall
times.  CPU times hold under other processes' load; wall times do not.

    PYTHONPATH=src python bench/steps_transformer.py [BATCH] [CALLS]     # 32 10
"""
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm_peers as P  # noqa: E402


def main(batch=32, calls=10):
    P.quiet()
    mdir, texts = P.model_dir(), P.sentences()
    texts = [" ".join(texts[(24 * i + j) % len(texts)] for j in range(24)) for i in range(32)]
    x = P.batch_of(P.tokenize(texts, P.tokenizer(mdir)), batch)
    feeds = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}
    model = P.fixq_int8(mdir)
    model.run(feeds, threads=1)
    runner = model._sequence
    steps, op_of = list(runner.steps), {s["output"]: s["op"] for s in model.meta["steps"]}
    kinds = [op_of[runner.names[out]] + ":" + fn.__qualname__.replace(".<locals>", "") for fn, out, _ in steps]
    times = {nt: collections.defaultdict(list) for nt in (1, 2)}  # (kind index, what) -> seconds

    def timed(nt):
        def wrap(k, fn):
            def step(env, threads):
                p0, c0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                out = fn(env, threads)
                t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
                times[nt][k, "caller"].append(c1 - c0)
                times[nt][k, "others"].append((p1 - p0) - (c1 - c0))
                times[nt][k, "wall"].append(t1 - t0)
                return out
            return step
        return [(wrap(k, fn), out, dead) for k, (fn, out, dead) in enumerate(steps)]
    try:
        for _ in range(calls):
            for nt in (1, 2):
                runner.steps = timed(nt)
                time.sleep(0.05)  # the pool's worker stops polling
                model.run(feeds, threads=nt)
    finally:
        runner.steps = steps
    groups = collections.defaultdict(list)
    for k, kind in enumerate(kinds):
        groups[kind].append(k)
    print(f"batch {batch} x 128, {calls} calls, medians in ms")
    cols = [(1, "caller"), (2, "caller"), (2, "others"), (1, "wall"), (2, "wall")]
    print(f"{'step kind':44s} {'n':>3} {'1t cpu':>8} {'2t cpu':>8} {'2t other':>8} {'1t wall':>8} {'2t wall':>8}")
    total = collections.Counter()
    for kind, ks in groups.items():
        v = [sum(float(np.median(times[nt][k, what])) for k in ks) * 1e3 for nt, what in cols]
        total.update(dict(enumerate(v)))
        print(f"{kind:44s} {len(ks):3d} " + " ".join(f"{t:8.2f}" for t in v))
    print(f"{'all steps':44s} {'':3s} " + " ".join(f"{total[i]:8.2f}" for i in range(len(cols))))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
