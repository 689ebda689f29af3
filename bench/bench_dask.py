"""Batch inference on Dask (``fixq.dask.run``) against a plain ``Model.run`` loop in one process: throughput
on 1 and 2 worker processes (and on Dask's threads in this process), scaling efficiency, the cost of one
task and of the first run.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python bench/bench_dask.py [--mb 300] [--rounds 3]

The data set is generated: ``--mb`` megabytes of float32 digits-like samples (the bundled CNN's 1x8x8
input, 256 bytes a sample) in 8 ``.npy`` shards in a temporary directory, read memory-mapped by the loop
and by the workers (``fixq.dask.from_npy``), blocks of ``--rows`` samples, batches of 256.  Every system
computes all the float32 outputs and brings them back to this process.  Workers are local processes of
one thread each (``LocalCluster(n_workers=N, threads_per_worker=1)``) running fixq with ``threads=1``.
Both clusters stay up and every system runs once per round, in turn, so that they share whatever else
the machine is doing; the table gives the median round.
"""
import argparse
import contextlib
import functools
import json
import logging
import os
import statistics
import tempfile
import time

import numpy as np
from dask.distributed import Client, LocalCluster, get_task_stream

import fixq
import fixq.dask as fqd
from fixq.cli.demo import bundled
from fixq.quantizer import quantize_model

BATCH = 256
SHARDS = 8


def make_data(directory, mb, seed=0):
    """`mb` megabytes of samples: the bundled test digits with noise, in SHARDS .npy files."""
    base = np.load(bundled("digits_test_x.npy"))
    n = mb * 2**20 // (base[0].size * 4)
    rng = np.random.default_rng(seed)
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(n), SHARDS)):
        x = base[rows % len(base)] + rng.standard_normal((len(rows),) + base.shape[1:], np.float32) * 0.5
        paths.append(os.path.join(directory, f"shard-{i}.npy"))
        np.save(paths[-1], x.astype(np.float32))
    return paths, n


def loop(m, paths, n):
    """The plain loop: each shard memory-mapped, Model.run batch by batch into one output array."""
    out, i = np.empty((n, 10), np.float32), 0
    for p in paths:
        x = np.load(p, mmap_mode="r")
        for j in range(0, len(x), BATCH):
            y = m.run(np.asarray(x[j:j + BATCH]))
            out[i:i + len(y)] = y
            i += len(y)
    return out


def task_cost_ms(run, x, m, rows):
    """One task's cost: the same samples in blocks of one batch against blocks of `rows`, per extra task."""
    sub = x[:min(len(x), 64 * BATCH)]
    big = min(rows, len(sub))
    ts = {}
    for size in (big, BATCH):
        y = fqd.run(m, sub.rechunk(size), BATCH)
        run(y)
        ts[size] = min(timed(lambda: run(y)) for _ in range(3))
    return 1e3 * (ts[BATCH] - ts[big]) / (len(sub) // BATCH - -(-len(sub) // big))


def busy_share(c, m, x, workers):
    """The share of one run's wall time the workers spent computing tasks (Dask's task stream): what the
    scheduler keeps them fed, whatever CPU time the machine gives them."""
    with get_task_stream(c) as stream:
        wall = timed(lambda: c.compute(fqd.run(m, x, BATCH), sync=True))
    busy = sum(s["stop"] - s["start"] for t in stream.data for s in t["startstops"] if s["action"] == "compute")
    return busy / (workers * wall)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=300, help="data set size in MiB (default 300)")
    ap.add_argument("--rows", type=int, default=65536, help="samples per Dask block (default 65536, 16 MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    g, _ = fixq.load_float_model(bundled("digits_cnn.npz"))
    m = quantize_model(g, [np.load(bundled("digits_calib.npy"))])
    res = {"cpu": fixq.cpu_info()["selected"], "cores": os.cpu_count(), "mb": args.mb, "rows": args.rows,
           "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        paths, n = make_data(d, args.mb)
        res["samples"] = n
        x = fqd.from_npy(paths, rows=args.rows)
        res["tasks"] = x.numblocks[0]
        want = loop(m, paths, n)
        systems = {"loop": lambda: loop(m, paths, n)}
        for threads in (1, 2):
            systems[f"threads_{threads}"] = functools.partial(
                lambda t: fqd.run(m, x, BATCH).compute(scheduler="threads", num_workers=t), threads)
        clients = {}
        for w in (1, 2):
            t0 = time.perf_counter()
            cluster = stack.enter_context(LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0", silence_logs=logging.ERROR))
            c = clients[w] = stack.enter_context(Client(cluster, set_as_default=False))
            res[f"cluster_{w}_start_s"] = time.perf_counter() - t0
            systems[f"workers_{w}"] = functools.partial(lambda c: c.compute(fqd.run(m, x, BATCH), sync=True), c)
        for name, fn in systems.items():   # the first run: workers import fixq and build the model
            res[f"{name}_first_s"] = timed(lambda: np.testing.assert_array_equal(fn(), want))
        times = {name: [] for name in systems}
        for _ in range(args.rounds):       # the systems take turns, so they share the machine's load
            for name, fn in systems.items():
                times[name].append(timed(fn))
        for name, ts in times.items():
            res[name] = {"s": statistics.median(ts), "rounds": ts, "samples_per_s": n / statistics.median(ts)}
        for w, c in clients.items():
            res[f"workers_{w}"]["task_ms"] = task_cost_ms(lambda y, c=c: c.compute(y, sync=True), x, m, args.rows)
            res[f"workers_{w}"]["busy"] = busy_share(c, m, x, w)
        res["threads_1"]["task_ms"] = task_cost_ms(lambda y: y.compute(scheduler="threads", num_workers=1), x, m,
                                                   args.rows)
    res["load_after"] = os.getloadavg()[0]
    res["scaling_efficiency"] = res["workers_2"]["samples_per_s"] / (2 * res["workers_1"]["samples_per_s"])
    base = res["loop"]["samples_per_s"]
    print(f"{n} samples ({args.mb} MiB) in {SHARDS} shards, {res['tasks']} blocks of {args.rows}; "
          f"load average {res['load_before']:.2f} before, {res['load_after']:.2f} after\n")
    print("| system | samples/s | vs loop | median s (rounds) | first run s | one task ms | workers busy |")
    print("|---|---|---|---|---|---|---|")
    for name, label in [("loop", "Model.run loop, 1 process"), ("threads_1", "fixq.dask.run, threads scheduler, 1"),
                        ("threads_2", "fixq.dask.run, threads scheduler, 2"),
                        ("workers_1", "fixq.dask.run, LocalCluster 1 worker"),
                        ("workers_2", "fixq.dask.run, LocalCluster 2 workers")]:
        r = res[name]
        task = f"{r['task_ms']:.1f}" if "task_ms" in r else ""
        busy = f"{100 * r['busy']:.0f}%" if "busy" in r else ""
        print(f"| {label} | {r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f}x | {r['s']:.2f} "
              f"({', '.join(f'{t:.2f}' for t in r['rounds'])}) | {res[name + '_first_s']:.2f} | {task} | {busy} |")
    print(f"\nscaling efficiency, 2 workers against 1: {100 * res['scaling_efficiency']:.0f}%; "
          f"cluster start {res['cluster_1_start_s']:.1f} s (1 worker), {res['cluster_2_start_s']:.1f} s (2)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
