"""Benchmark: one Table-1 evaluation (7 sizes x 100 problems) in-process against the Ray engine
with 1 and 2 workers on this machine, the overhead per work unit, and a projection of throughput
against the number of workers.

    .venv/bin/python bench/engine.py [--checkpoint checkpoints/sft_reflection] [--n 100] [--chunk 25]

Every run samples the same episodes into its own empty store (checked: the three tables are equal).
Measured: the in-process time L (one torch thread), the Ray times R1, R2 (1 and 2 one-thread
workers; Ray's start-up and the actors' checkpoint loading are timed apart). Model of cost for w
workers and U units: T(w) = S + U/w * (L/U + o), with o the overhead per unit measured as
(R1 - L) / U (shipping a unit and its episodes, the store writes). The projection assumes one core
per worker and units of equal cost; on this 2-core machine only w = 1, 2 are measured, and the
driver shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ds_core.analysis.evaluate import evaluate
from ds_core.engine.engines import RayEngine
from ds_core.episodes.tasks import parse_sizes
from ds_core.models.checkpoint import load_checkpoint
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore


def table(result) -> str:
    return json.dumps(result.to_dict()["sizes"], sort_keys=True, default=str)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(SHIPPED_DIR / "sft_reflection"))
    ap.add_argument("--sizes", default="3x3-3x9")
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint(args.checkpoint)
    sizes = parse_sizes(args.sizes)
    from ds_core.engine.jobs import SAMPLE_CHUNK

    units = len(sizes) * -(-args.n // SAMPLE_CHUNK)
    t0 = time.perf_counter()
    local = evaluate(ck, sizes, n=args.n, store=ResultsStore(tempfile.mkdtemp()))
    L = time.perf_counter() - t0
    print(f"in-process: {L:6.1f} s  ({len(sizes)} sizes x {args.n} problems, {units} units of {SAMPLE_CHUNK})")
    times = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        with RayEngine(workers=w) as eng:
            eng.start_actors()
            eng.actor_pids()  # the actors are up
            up = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = evaluate(ck, sizes, n=args.n, store=ResultsStore(tempfile.mkdtemp()), engine=eng)
            times[w] = time.perf_counter() - t1
        assert table(res) == table(local), "the Ray engine sampled other episodes"
        print(
            f"ray, {w} worker{'s' * (w > 1)}: {times[w]:6.1f} s  (start-up {up:.1f} s apart)  "
            f"ratio to in-process {times[w] / L:.2f}"
        )
    o = (times[1] - L) / units
    print(f"overhead per unit: {o * 1000:.0f} ms ({100 * o * units / L:.1f}% of the in-process time)")
    print(f"speed-up with 2 workers over 1: {times[1] / times[2]:.2f} (measured, 2 cores shared with the driver)")
    print("throughput (episodes/s): model T(w) = ceil(U/w) * (L/U + o), one core per worker; measured where run")
    per_ep = len(sizes) * args.n
    for w in (1, 2, 4, 8, 16, 32):
        T = -(-units // w) * (L / units + o)
        seen = f"   measured {per_ep / times[w]:7.1f}" if w in times else ""
        print(f"  {w:>3} workers: model {per_ep / T:7.1f}{seen}")
    print(f"  at most {units} workers are useful with {units} units (one unit per worker at a time)")


if __name__ == "__main__":
    main()
