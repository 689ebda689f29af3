"""A/B of two fixq source trees on all-MiniLM-L6-v2: one child process per tree (PYTHONPATH=SRC), taking turns
(A B, then B A) to run windows of calls; per case and thread count, the median per-call ms of each, the median of
the per-window B/A ratios, context switches a call (the child's getrusage, all its threads), the cores the
machine's other processes used (as bench_transformer.py), and whether the two trees' outputs have the same bits.
Cases: full1 / full32 (every token real, --full-length's texts), pad1 (bench_transformer's batch 1: the first
sentence padded to 128), pad32 (its batch 32), padall (every benchmark sentence, one call each).  --hog adds a busy process.

    PYTHONPATH=src python bench/ab_minilm.py MAIN/src src --cases full1,pad1 --threads 1,2 --windows 10
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = str(Path(__file__).resolve().parent)

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, %r)
import numpy as np
import minilm_peers as P
P.quiet()
import fixq
mdir = P.model_dir()
fq = P.fixq_int8(mdir)
texts = P.sentences()
tok = P.tokenizer(mdir)
full = P.tokenize([" ".join(texts[(24 * i + j) %% len(texts)] for j in range(24)) for i in range(32)], tok)
pad = P.tokenize(texts, tok)
X = {"full1": P.batch_of(full, 1), "full32": P.batch_of(full, 32), "pad1": P.batch_of(pad, 1),
     "pad32": P.batch_of(pad, 32),
     "padall": [P.batch_of({k: v[i:i + 1] for k, v in pad.items()}, 1) for i in range(len(texts))]}
def run(x, t):
    if isinstance(x, list):
        return [fq.run({"input_ids": y["input_ids"], "attention_mask": y["attention_mask"]}, threads=t) for y in x]
    return fq.run({"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}, threads=t)
print(json.dumps({"ready": fixq.__file__}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    x, t, n = X[cmd["case"]], cmd["threads"], cmd["calls"]
    run(x, t)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        y = run(x, t)
        ts.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = y if not isinstance(y, list) else y[0]
    print(json.dumps({"ts": ts, "vcs": (r1.ru_nvcsw - r0.ru_nvcsw) / n, "ivcs": (r1.ru_nivcsw - r0.ru_nivcsw) / n,
                      "cpu": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime),
                      "bits": __import__("hashlib").sha1(np.ascontiguousarray(out).tobytes()).hexdigest()}), flush=True)
''' % BENCH


def busy():
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", help="tree A's src directory")
    ap.add_argument("b", help="tree B's src directory")
    ap.add_argument("--cases", default="full1,pad1")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--window-s", type=float, default=0.4)
    ap.add_argument("--hog", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    kids = {}
    for name, src in (("A", args.a), ("B", args.b)):
        env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        kids[name] = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, text=True)
    for name, p in kids.items():
        print(name, json.loads(p.stdout.readline())["ready"], flush=True)
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if args.hog else None
    res = {}
    try:
        for case in args.cases.split(","):
            for t in [int(x) for x in args.threads.split(",")]:
                calls = {}
                for name, p in kids.items():  # calibrate calls per window
                    p.stdin.write(json.dumps({"case": case, "threads": t, "calls": 2}) + "\n")
                    p.stdin.flush()
                    r = json.loads(p.stdout.readline())
                    calls[name] = max(2, int(args.window_s / np.median(r["ts"])))
                n = min(calls.values())
                rec = {k: {"ms": [], "vcs": [], "ivcs": [], "load": []} for k in kids}
                bits = {}
                for w in range(args.windows):
                    order = list(kids) if w % 2 == 0 else list(kids)[::-1]
                    for name in order:
                        p = kids[name]
                        time.sleep(0.05)
                        c0, t0 = busy(), time.perf_counter()
                        p.stdin.write(json.dumps({"case": case, "threads": t, "calls": n}) + "\n")
                        p.stdin.flush()
                        r = json.loads(p.stdout.readline())
                        c1, wall = busy(), time.perf_counter() - t0
                        rec[name]["ms"].append(1e3 * float(np.median(r["ts"])))
                        rec[name]["vcs"].append(r["vcs"])
                        rec[name]["ivcs"].append(r["ivcs"])
                        rec[name]["load"].append(max(0.0, (c1 - c0) - r["cpu"]) / wall)
                        bits[name] = r["bits"]
                same = bits["A"] == bits["B"]
                a, b = (np.median(rec[k]["ms"]) for k in ("A", "B"))
                ratio = np.median(np.array(rec["B"]["ms"]) / np.array(rec["A"]["ms"]))
                line = (f"{case:7s} t={t} A {a:8.3f} ms  B {b:8.3f} ms  B/A {ratio:.3f} (per-window median)  "
                        f"vcs A {np.median(rec['A']['vcs']):.1f} B {np.median(rec['B']['vcs']):.1f}  "
                        f"ivcs A {np.median(rec['A']['ivcs']):.1f} B {np.median(rec['B']['ivcs']):.1f}  "
                        f"other load {np.median(rec['A']['load'] + rec['B']['load']):.2f}  calls/window {n}  "
                        f"same bits {same}")
                print(line, flush=True)
                res[f"{case} t={t}"] = rec
    finally:
        if hog is not None:
            hog.kill()
        for p in kids.values():
            p.stdin.close()
            p.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
