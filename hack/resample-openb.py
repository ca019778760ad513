#!/usr/bin/env python3
"""Other mixes of the openb default pod list, for checking that the packing
policy holds beyond the four shipped traces (docs/simulator.md, "Other
mixes").

The shipped variants fix what they vary: in gpushare40 the GPU-sharing pods
carry 40 % of the GPU demand (28.5 % in default), in multigpu20 the
multi-GPU pods carry 20 % (7.3 %), and in gpuspec10 10 % of the GPU pods
name GPU models. This script makes more of each kind the same way: it keeps
the 1088 CPU-only pods and the number of GPU pods, and draws GPU pods with
replacement from the two groups of the default list in the ratio that gives
the wanted share of demand; gpuspecX gives X % of the GPU pods a model list
drawn from gpuspec10's lists for pods of the same GPU count. Standard
library only; each variant has its own fixed seed.

    hack/resample-openb.py [--traces DIR] [--out DIR]
"""
import argparse
import collections
import csv
import os
import random


def demand(r):
    return int(r["num_gpu"]) * int(r["gpu_milli"])


def is_share(r):
    return int(r["num_gpu"]) == 1 and int(r["gpu_milli"]) < 1000


def draw(a, b, frac, n, rng):
    """n pods from groups a and b, so a carries frac of their demand."""
    ma = sum(map(demand, a)) / len(a)
    mb = sum(map(demand, b)) / len(b)
    na = n if frac >= 1 else round(n * frac * mb / (frac * mb + (1 - frac) * ma))
    return [dict(rng.choice(a)) for _ in range(na)] + [dict(rng.choice(b)) for _ in range(n - na)]


def write(path, cols, rows, rng):
    rng.shuffle(rows)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i, r in enumerate(rows):
            r["name"] = "openb-pod-%04d" % i
            w.writerow(r)
    gpu = [r for r in rows if int(r["num_gpu"]) > 0]
    total = sum(map(demand, gpu))
    print("%s: %d pods; share pods %.1f %% of GPU demand, multi-GPU pods %.1f %%, model lists on %.1f %% of GPU pods" % (
        os.path.basename(path), len(rows),
        100 * sum(demand(r) for r in gpu if is_share(r)) / total,
        100 * sum(demand(r) for r in gpu if int(r["num_gpu"]) > 1) / total,
        100 * sum(1 for r in gpu if r["gpu_spec"]) / len(gpu)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=os.path.join(os.path.dirname(__file__), "../../shared/traces/alibaba-gpu-v2023"))
    ap.add_argument("--out", default="/tmp/openb-mixes")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.traces, "openb_pod_list_default.csv")) as fh:
        default = list(csv.DictReader(fh))
    cols = list(default[0].keys())
    cpu_only = [r for r in default if int(r["num_gpu"]) == 0]
    gpu = [r for r in default if int(r["num_gpu"]) > 0]
    out = lambda name: os.path.join(args.out, "openb_pod_list_%s.csv" % name)

    share = [r for r in gpu if is_share(r)]
    other = [r for r in gpu if not is_share(r)]
    for x in (20, 60, 80, 100):
        rng = random.Random(1000 + x)
        write(out("gpushare%d" % x), cols, [dict(r) for r in cpu_only] + draw(share, other, x / 100, len(gpu), rng), rng)

    multi = [r for r in gpu if int(r["num_gpu"]) > 1]
    single = [r for r in gpu if int(r["num_gpu"]) == 1]
    for x in (30, 50):
        rng = random.Random(2000 + x)
        write(out("multigpu%d" % x), cols, [dict(r) for r in cpu_only] + draw(multi, single, x / 100, len(gpu), rng), rng)

    specs = collections.defaultdict(list)
    with open(os.path.join(args.traces, "openb_pod_list_gpuspec10.csv")) as fh:
        for r in csv.DictReader(fh):
            if r["gpu_spec"]:
                specs[r["num_gpu"]].append(r["gpu_spec"])
    for x in (20, 33):
        rng = random.Random(3000 + x)
        rows = [dict(r) for r in default]
        gpu_rows = [r for r in rows if int(r["num_gpu"]) > 0]
        for r in rng.sample(gpu_rows, round(len(gpu_rows) * x / 100)):
            r["gpu_spec"] = rng.choice(specs.get(r["num_gpu"]) or specs["1"])
        write(out("gpuspec%d" % x), cols, rows, rng)


if __name__ == "__main__":
    main()
