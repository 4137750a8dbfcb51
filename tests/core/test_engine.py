"""Batch jobs on Ray (ds_core.engine): the same numbers as in-process, retried units, resumed jobs.

One local Ray (2 CPUs) is started for the module and shared by every test (its start-up is the
module's main cost); each test uses the module's engine, whose two actors load the checkpoint once.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from ds_core.analysis.evaluate import evaluate, problems_for
from ds_core.analysis.regret import regret_run
from ds_core.attribution.dataset import attribute_dataset
from ds_core.engine.engines import EngineError, InProcessEngine, RayEngine
from ds_core.engine.jobs import SAMPLE_CHUNK, UNIT_KIND, sample_runs, sample_units
from ds_core.engine.units import CheckpointRef, WorkUnit
from ds_core.episodes.tasks import TaskSpec, parse_sizes
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore

CKPT = SHIPPED_DIR / "sft_reflection"


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(CKPT)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with room for 4 one-CPU workers: the module's 2 and a CLI run's 2."""
    with RayEngine(workers=4):
        yield


@pytest.fixture(scope="module")
def engine(cluster):
    with RayEngine(workers=2) as eng:  # joins the running Ray: its own actors, the cluster stays
        eng.start_actors()
        yield eng


def _doc(result) -> str:
    return json.dumps(result.to_dict(), sort_keys=True, default=str)


def _unit_blobs(store) -> int:
    return store._query("count units", "SELECT count(*) FROM blobs WHERE kind=?", (UNIT_KIND,))[0][0]


def test_eval_on_ray_equals_local(ckpt, engine, tmp_path):
    sizes = parse_sizes("3x3,3x5")
    local, remote = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    n = SAMPLE_CHUNK + 2  # 2 units per size
    a = evaluate(ckpt, sizes, n=n, store=local)
    b = evaluate(ckpt, sizes, n=n, store=remote, engine=engine)
    assert _doc(a) == _doc(b)
    for s in a.sizes:
        assert local.load_episodes(s.key) == remote.load_episodes(s.key)
    assert _unit_blobs(remote) == 0  # a run stored whole leaves no unit behind


def test_any_chunking_gives_the_same_episodes(ckpt):
    task, problems = problems_for(TaskSpec.parse("3x4"), 12, 0)
    cfg = SamplingConfig()
    runs = {}
    for chunk in (1, 7, 12):
        eps, units = sample_runs(ckpt, [(task, problems)], cfg, 0, InProcessEngine(), chunk=chunk)
        assert len(units[task]) == -(-12 // chunk)
        runs[chunk] = eps[task]
    assert runs[1] == runs[7] == runs[12]
    from ds_core.analysis.evaluate import episodes_without_store

    assert runs[7] == episodes_without_store(ckpt, TaskSpec.parse("3x4"), 12, cfg, 0)  # one in-process rollout


def test_attribution_on_ray_equals_local(ckpt, engine, tmp_path):
    local, remote = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    objectives = ["sft_sum", "surrogate", "kl_k3"]
    sizes = parse_sizes("3x3")
    runs_a = evaluate(ckpt, sizes, n=10, store=local)
    runs_b = evaluate(ckpt, sizes, n=10, store=remote, engine=engine)
    a = attribute_dataset(ckpt, {s.spec: s.key for s in runs_a.sizes}, objectives, store=local)
    b = attribute_dataset(ckpt, {s.spec: s.key for s in runs_b.sizes}, objectives, store=remote, engine=engine)
    assert b.n_computed == a.n_computed > 0 and b.n_cached == 0
    assert a.frame.drop(columns="cached").equals(b.frame.drop(columns="cached"))  # equal, not close
    again = attribute_dataset(ckpt, {s.spec: s.key for s in runs_b.sizes}, objectives, store=remote, engine=engine)
    assert again.n_computed == 0 and again.n_cached == a.n_computed  # every result was stored


def test_decisions_on_ray_equal_local(ckpt, engine, tmp_path):
    local, remote = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    va, pa, ta = regret_run(ckpt, ["3x3", "3x5"], n_problems=20, n=4, store=local)
    vb, pb, tb = regret_run(ckpt, ["3x3", "3x5"], n_problems=20, n=4, store=remote, engine=engine)  # units of 16 + 4
    assert len(va) > 40 and (pa["departure"] == "wrong kept").any()  # optimal continuations were rolled too
    assert va.equals(vb) and pa.equals(pb) and ta.equals(tb)
    assert _unit_blobs(remote) == 0


def test_a_killed_worker_has_its_units_retried(ckpt, engine, tmp_path):
    task, problems = problems_for(TaskSpec.parse("3x3"), 24, 0)
    cfg = SamplingConfig()
    want, _ = sample_runs(ckpt, [(task, problems)], cfg, 0, InProcessEngine(), chunk=3)
    victim = engine.actor_pids()[0]
    killed = []

    def progress(done, total):
        if done and not killed:  # a unit is back: its worker gets the next one, the other is busy
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    before = len(engine.retried)
    got, _ = sample_runs(ckpt, [(task, problems)], cfg, 0, engine, ResultsStore(tmp_path), chunk=3, progress=progress)
    assert killed and len(engine.retried) > before
    assert victim not in engine.actor_pids() and len(engine.actor_pids()) == 2  # replaced
    assert got[task] == want[task]


def test_a_unit_that_cannot_succeed_fails_the_job_with_its_reason(ckpt, engine):
    task, problems = problems_for(TaskSpec.parse("3x3"), 2, 0)
    good = sample_units(ckpt, task, problems, SamplingConfig(), 0)[0]
    stale = WorkUnit("sample", CheckpointRef(str(CKPT), "0" * 64), good.payload, good.size)
    with pytest.raises(EngineError, match="content hash .* the job expects 000000000000"):
        list(engine.map([good, stale]))
    missing = WorkUnit("sample", CheckpointRef("/nonexistent/ckpt", ckpt.hash), good.payload, good.size)
    with pytest.raises(EngineError, match="cannot be read"):
        list(engine.map([missing]))


def test_an_interrupted_job_leaves_whole_units_and_resumes(ckpt, engine, tmp_path):
    store = ResultsStore(tmp_path)
    sizes = parse_sizes("3x3")
    n = 2 * SAMPLE_CHUNK + 10  # 3 units

    def stop_after_one(done, total):
        if done >= SAMPLE_CHUNK:  # the first finished unit is stored
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(ckpt, sizes, n=n, store=store, engine=engine, progress=stop_after_one)
    assert store.list_runs() == [] and _unit_blobs(store) >= 1  # no half-written run
    done_units = _unit_blobs(store)
    inproc = InProcessEngine()
    resumed = evaluate(ckpt, sizes, n=n, store=store, engine=inproc)
    ran = [u for u in inproc.executed if u.kind == "sample"]  # (and one probe of where it samples)
    assert len(ran) == 3 - done_units  # the stored units are not run again
    fresh = evaluate(ckpt, sizes, n=n, store=ResultsStore(tmp_path / "fresh"))
    assert _doc(resumed) == _doc(fresh) and _unit_blobs(store) == 0


def test_cli_eval_on_ray_prints_the_local_table(engine, tmp_path, capsys):
    from ds_core.cli.main import main

    base = ["eval", "--checkpoint", str(CKPT), "--sizes", "3x3", "--n", "8", "--quiet"]
    assert main([*base, "--data-dir", str(tmp_path / "a")]) == 0
    local = capsys.readouterr().out
    assert main([*base, "--data-dir", str(tmp_path / "b"), "--engine", "ray", "--workers", "2"]) == 0
    remote = capsys.readouterr().out
    strip = lambda s: [ln for ln in s.splitlines() if "store" not in ln.split()[-1:] and "hash" not in ln]  # noqa: E731
    assert strip(local) == strip(remote)


def test_cli_refuses_ray_without_a_store(capsys):
    from ds_core.cli.main import main

    rc = main(["eval", "--checkpoint", str(CKPT), "--sizes", "3x3", "--n", "2", "--engine", "ray", "--no-store"])
    assert rc == 2 and "drop --no-store" in capsys.readouterr().err


def test_the_apps_compute_button_samples_on_the_configured_cluster(engine, tmp_path, monkeypatch):
    import ray

    from ds_core.engine import engines
    from ui.services.calibration import Settings, checkpoint_ref, gather, parse_size_list
    from ui.services.calibration_compute import compute_missing

    used = []
    real_map = engines.RayEngine.map

    def counting_map(self, units):
        used.append(self.address)
        return real_map(self, units)

    monkeypatch.setattr(engines.RayEngine, "map", counting_map)
    address = ray.get_runtime_context().gcs_address
    monkeypatch.setenv(engines.ADDRESS_ENV, address)
    assert address in engines.where_computed()
    ref = checkpoint_ref("sft_reflection", CKPT)
    settings = Settings(n=6, seed=4)
    store = ResultsStore(tmp_path)
    grid = gather([ref], parse_size_list("3x3"), settings, store)
    assert grid.missing
    digests = compute_missing(grid, load_checkpoint, store)
    assert set(used) == {address} and len(digests) == 1  # a probe of where it samples, then the units
    from ds_core.analysis.evaluate import episodes_without_store

    want = episodes_without_store(load_checkpoint(CKPT), TaskSpec.parse("3x3"), 6, settings.sampling_config(), 4)
    assert store.load_episodes(next(iter(digests))) == want


def test_runs_are_keyed_by_where_the_workers_sample(ckpt, cluster, tmp_path, monkeypatch):
    """Workers told to run in bfloat16 (as a GPU worker runs on its device) while the driver holds
    float32: the runs are keyed by the workers' placement and equal a bfloat16 run in-process."""
    from ds_core.analysis.evaluate import placement_key

    remote, local = ResultsStore(tmp_path / "r"), ResultsStore(tmp_path / "l")
    with RayEngine(workers=1, env={"DS_LENS_DTYPE": "bfloat16"}) as eng:
        res = evaluate(ckpt, parse_sizes("3x3"), n=6, store=remote, engine=eng)
    monkeypatch.setenv("DS_LENS_DTYPE", "bfloat16")
    half = load_checkpoint(CKPT)
    key = res.sizes[0].key
    assert key.extra["placement"] == placement_key(half.model) != placement_key(ckpt.model)
    there = evaluate(half, parse_sizes("3x3"), n=6, store=local)
    assert there.sizes[0].key == key and remote.load_episodes(key) == local.load_episodes(key)
