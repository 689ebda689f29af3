"""Batch inference on Dask (``fixq.dask.run``) against a plain ``Model.run`` loop in one process: throughput
on 1 and 2 worker processes, scaling efficiency, the cost of one task and of the first run.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python bench/bench_dask.py [--mb 300] [--rounds 3]

The data set is generated: ``--mb`` megabytes of float32 digits-like samples (the bundled CNN's 1x8x8
input, 256 bytes a sample) in 8 ``.npy`` shards in a temporary directory, read memory-mapped by the loop
and by the workers (``fixq.dask.from_npy``), blocks of ``--rows`` samples, batches of 256.  Every system
computes all the float32 outputs and brings them back to this process.  Workers are local processes of
one thread each (``LocalCluster(n_workers=N, threads_per_worker=1)``) running fixq with ``threads=1``.
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

import fixq
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


def timed(fn, rounds):
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=300, help="data set size in MiB (default 300)")
    ap.add_argument("--rows", type=int, default=65536, help="samples per Dask block (default 65536, 16 MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import logging

    from dask.distributed import Client, LocalCluster
    import fixq.dask as fqd

    g, _ = fixq.load_float_model(bundled("digits_cnn.npz"))
    m = quantize_model(g, [np.load(bundled("digits_calib.npy"))])
    res = {"cpu": fixq.cpu_info()["selected"], "cores": os.cpu_count(), "mb": args.mb, "rows": args.rows,
           "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as d:
        paths, n = make_data(d, args.mb)
        res["samples"] = n
        want = loop(m, paths, n)
        t, ts = timed(lambda: loop(m, paths, n), args.rounds)
        res["loop"] = {"s": t, "rounds": ts, "samples_per_s": n / t}
        print(f"{n} samples ({args.mb} MiB) in {SHARDS} shards; loop: {n / t:,.0f} samples/s", flush=True)
        for w in args.workers:
            t0 = time.perf_counter()
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                              silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
                start = time.perf_counter() - t0
                x = fqd.from_npy(paths, rows=args.rows)
                t0 = time.perf_counter()
                got = fqd.run(m, x, batch_size=BATCH).compute()
                first = time.perf_counter() - t0
                assert np.array_equal(got, want), "the distributed outputs differ from the loop's"
                t, ts = timed(lambda: fqd.run(m, x, batch_size=BATCH).compute(), args.rounds)
                r = {"s": t, "rounds": ts, "samples_per_s": n / t, "tasks": x.numblocks[0], "first_run_s": first,
                     "cluster_start_s": start}
                # one task's cost: the same samples in blocks of one batch against blocks of --rows
                sub = x[:min(n, 64 * BATCH)]
                big, _ = timed(lambda: fqd.run(m, sub.rechunk(min(args.rows, len(sub))), BATCH).compute(), 3)
                small, _ = timed(lambda: fqd.run(m, sub.rechunk(BATCH), BATCH).compute(), 3)
                nb_big = -(-len(sub) // min(args.rows, len(sub)))
                r["task_overhead_ms"] = 1e3 * (small - big) / (len(sub) // BATCH - nb_big)
                res[f"dask_{w}"] = r
                client.close()
            print(f"dask {w} worker(s): {n / t:,.0f} samples/s ({r['tasks']} tasks, first run {first:.2f} s, "
                  f"{r['task_overhead_ms']:.2f} ms a task, cluster start {start:.1f} s)", flush=True)
    res["load_after"] = os.getloadavg()[0]
    if "dask_1" in res and "dask_2" in res:
        res["scaling_efficiency"] = res["dask_2"]["samples_per_s"] / (2 * res["dask_1"]["samples_per_s"])
    print()
    print("| system | samples/s | vs loop | time (s) |")
    print("|---|---|---|---|")
    print(f"| Model.run loop, 1 process | {res['loop']['samples_per_s']:,.0f} | 1.00x | {res['loop']['s']:.2f} |")
    for w in args.workers:
        r = res[f"dask_{w}"]
        print(f"| fixq.dask.run, {w} worker{'s' if w > 1 else ''} | {r['samples_per_s']:,.0f} | "
              f"{r['samples_per_s'] / res['loop']['samples_per_s']:.2f}x | {r['s']:.2f} |")
    if "scaling_efficiency" in res:
        print(f"\nscaling efficiency at 2 workers: {100 * res['scaling_efficiency']:.0f}%; "
              f"load average {res['load_before']:.2f} before, {res['load_after']:.2f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
