"""Benchmark: one Table-1 evaluation (7 sizes x 100 problems) in-process against the Ray engine
with 1 and 2 workers on this machine, the overhead per work unit, and a projection of throughput
against the number of workers.

    .venv/bin/python bench/engine.py [--checkpoint checkpoints/sft_reflection] [--n 100] [--chunk 50]

Every run samples the same episodes into its own empty store (checked: all the tables are equal).
Measured: the in-process time L0 (one rollout call, one torch thread), the same job cut into the
engine's units and run in-process (L: what smaller rollout batches cost, without Ray), the Ray
times R1, R2 (1 and 2 one-thread workers; Ray's start-up and the actors' checkpoint loading are
timed apart). Model of cost for w workers and U units: T(w) = ceil(U/w) * (L/U + o), with o the
overhead per unit measured as (R1 - L) / U (shipping a unit and its episodes, the store writes).
The projection assumes one core per worker and units of equal cost; on this 2-core machine only
w = 1, 2 are measured, and the driver shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ds_core.analysis.evaluate import evaluate, problems_for
from ds_core.engine import jobs
from ds_core.engine.engines import InProcessEngine, RayEngine
from ds_core.engine.jobs import sample_units
from ds_core.episodes.tasks import parse_sizes
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore


def table(result) -> str:
    return json.dumps(result.to_dict()["sizes"], sort_keys=True, default=str)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(SHIPPED_DIR / "sft_reflection"))
    ap.add_argument("--sizes", default="3x3-3x9")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=jobs.SAMPLE_CHUNK, help="problems per unit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    jobs.SAMPLE_CHUNK = args.chunk
    ck = load_checkpoint(args.checkpoint)
    sizes = parse_sizes(args.sizes)
    units = len(sizes) * -(-args.n // args.chunk)
    t0 = time.perf_counter()
    local = evaluate(ck, sizes, n=args.n, store=ResultsStore(tempfile.mkdtemp()))
    L0 = time.perf_counter() - t0
    print(f"in-process, one rollout call: {L0:6.1f} s  ({len(sizes)} sizes x {args.n} problems)")
    t0 = time.perf_counter()
    res = evaluate(ck, sizes, n=args.n, store=ResultsStore(tempfile.mkdtemp()), engine=InProcessEngine())
    L = time.perf_counter() - t0
    assert table(res) == table(local), "the units sampled other episodes"
    print(
        f"in-process, {units} units of {args.chunk}: {L:6.1f} s  (ratio {L / L0:.2f}: the cost of smaller "
        "rollout batches, no Ray)"
    )
    times = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        with RayEngine(workers=w) as eng:
            eng.start_actors()
            # start-up: the actors, their imports and the checkpoint load (one 1-problem unit each)
            task, probs = problems_for(sizes[0], 1, 0)
            warm = sample_units(ck, task, probs * w, SamplingConfig(), 0, chunk=1)
            list(eng.map(warm))
            up = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = evaluate(ck, sizes, n=args.n, store=ResultsStore(tempfile.mkdtemp()), engine=eng)
            times[w] = time.perf_counter() - t1
        assert table(res) == table(local), "the Ray engine sampled other episodes"
        print(
            f"ray, {w} worker{'s' * (w > 1)}: {times[w]:6.1f} s  (start-up {up:.1f} s apart)  "
            f"ratio to the one-call in-process time {times[w] / L0:.2f}"
        )
    o = (times[1] - L) / units
    print(
        f"Ray's overhead per unit (1 worker against the same units in-process): {o * 1000:.0f} ms "
        f"({100 * o * units / L:.1f}% of the units' in-process time)"
    )
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
