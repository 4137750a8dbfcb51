"""Evaluation runs and the command line: store round trips, problem selection, the table, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_cli_error

import ds_core.analysis.evaluate as ev
from ds_core.analysis.evaluate import EvalResult, evaluate, format_table, problems_for, run_key
from ds_core.cli import main
from ds_core.episodes.tasks import TEST_SET_VERSION, TaskSpec, parse_sizes, sample_problems
from ds_core.episodes.tasks import test_set as fixed_test_set
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.model import init_model
from ds_core.models.sampling import SamplingConfig
from ds_core.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]

TINY = dict(hidden=32, layers=2, heads=2)
CFG = SamplingConfig(max_new_tokens=40)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, char_tokenizer) -> Path:
    d = tmp_path_factory.mktemp("ckpts") / "tiny"
    save_checkpoint(d, init_model(char_tokenizer, "llama", seed=0, **TINY), char_tokenizer, Card(condition="tiny-sft"))
    return d


@pytest.fixture(scope="module")
def ckpt(ckpt_dir):
    return load_checkpoint(ckpt_dir)


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path / "data")


def _json(x) -> str:
    return json.dumps(x, sort_keys=True, default=str)


def _rows_without_source(result: EvalResult) -> str:
    return _json([{k: v for k, v in r.items() if k != "from_store"} for r in result.rows()])


def _no_rollout(*a, **k):
    raise AssertionError("rollout must not be called: the run is in the store")


# --- evaluate ------------------------------------------------------------------------------------------
def test_second_call_reads_the_store(ckpt, store, monkeypatch):
    sizes = parse_sizes("3x3-3x4")
    first = evaluate(ckpt, sizes, n=6, cfg=CFG, seed=0, store=store, n_boot=20)
    assert [s.from_store for s in first.sizes] == [False, False]
    assert all(s.wall_s is not None and s.wall_s >= 0 for s in first.sizes)
    assert [s.spec for s in first.sizes] == ["3x3", "3x4"]
    assert all(s.report.n == 6 for s in first.sizes)
    for s in first.sizes:
        assert store.has_run(s.key)
        eps = store.load_episodes(s.key)
        assert len(eps) == 6
        assert [e.problem for e in eps] == fixed_test_set(s.spec)[:6]
        rec = store.get_run(s.key)
        assert rec.meta["task"] == f"{s.spec}@test-v{TEST_SET_VERSION}"
        assert rec.summary == json.loads(json.dumps(s.report.to_dict()))

    monkeypatch.setattr(ev, "rollout", _no_rollout)
    second = evaluate(ckpt, sizes, n=6, cfg=CFG, seed=0, store=store, n_boot=20)
    assert [s.from_store for s in second.sizes] == [True, True]
    assert all(s.wall_s is None for s in second.sizes)
    assert _json(second.to_dict()) == _json(first.to_dict())
    assert _rows_without_source(second) == _rows_without_source(first)
    assert [s.key for s in second.sizes] == [s.key for s in first.sizes]
    # the report is the same object graph, field by field
    for a, b in zip(first.sizes, second.sizes):
        assert _json(a.report.to_dict()) == _json(b.report.to_dict())
    assert "store" in format_table(second) and "new" in format_table(first)


def test_recompute_and_no_store_sample_again(ckpt, store, monkeypatch):
    sizes = [TaskSpec.parse("3x3")]
    first = evaluate(ckpt, sizes, n=4, cfg=CFG, store=store, n_boot=10)
    calls = []
    real = ev.rollout

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ev, "rollout", counting)
    again = evaluate(ckpt, sizes, n=4, cfg=CFG, store=store, n_boot=10, recompute=True)
    assert len(calls) == 1 and not again.sizes[0].from_store
    assert _json(again.to_dict()) == _json(first.to_dict())  # deterministic
    none = evaluate(ckpt, sizes, n=4, cfg=CFG, store=None, n_boot=10)
    assert len(calls) == 2 and not none.sizes[0].from_store
    assert _json(none.to_dict()) == _json(first.to_dict())


def test_batch_size_is_not_part_of_the_key(ckpt, store, monkeypatch):
    sizes = [TaskSpec.parse("3x5")]
    evaluate(ckpt, sizes, n=3, cfg=SamplingConfig(max_new_tokens=40, batch_size=2), store=store, n_boot=5)
    monkeypatch.setattr(ev, "rollout", _no_rollout)
    r = evaluate(ckpt, sizes, n=3, cfg=SamplingConfig(max_new_tokens=40, batch_size=64), store=store, n_boot=5)
    assert r.sizes[0].from_store


def test_different_settings_are_different_runs(ckpt, store):
    sizes = [TaskSpec.parse("3x3")]
    a = evaluate(ckpt, sizes, n=3, cfg=CFG, store=store, n_boot=5)
    b = evaluate(ckpt, sizes, n=3, cfg=SamplingConfig(max_new_tokens=40, temperature=0.5), store=store, n_boot=5)
    c = evaluate(ckpt, sizes, n=3, cfg=CFG, seed=1, store=store, n_boot=5)
    d = evaluate(ckpt, sizes, n=4, cfg=CFG, store=store, n_boot=5)
    assert not any(r.sizes[0].from_store for r in (a, b, c, d))
    assert len({r.sizes[0].key.digest() for r in (a, b, c, d)}) == 4
    assert len(store.list_runs(ckpt.hash)) == 4


def test_partially_stored_grid(ckpt, store, monkeypatch):
    evaluate(ckpt, [TaskSpec.parse("3x3")], n=3, cfg=CFG, store=store, n_boot=5)
    sampled = []
    real = ev.rollout

    def recording(model, tokenizer, fmt, requests, *a, **k):
        sampled.append(list(requests))
        return real(model, tokenizer, fmt, requests, *a, **k)

    monkeypatch.setattr(ev, "rollout", recording)
    r = evaluate(ckpt, parse_sizes("3x3-3x4"), n=3, cfg=CFG, store=store, n_boot=5)
    assert [s.from_store for s in r.sizes] == [True, False]
    assert sampled == [fixed_test_set("3x4")[:3]]  # only the missing size is sampled


def test_episodes_of_a_run_do_not_depend_on_the_other_sizes(ckpt, tmp_path):
    # Regression (was a bug, fixed): ds_core/analysis/evaluate.py:101 samples all sizes of a call in one rollout()
    # over the flat list
    # of problems, and rollout seeds each episode by its index in that list. So the episodes stored
    # under one RunKey (checkpoint, task, sampling, seed, n) depend on which other sizes were in
    # the same call, and on which of them were already in the store. Input: n=5, seed 0:
    # evaluate(sizes=[3x4]) vs evaluate(sizes=[3x3, 3x4]). Expected: identical 3x4 episodes (same
    # RunKey); got: different episodes (and different reports) for the same key.
    one, two = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    r1 = evaluate(ckpt, [TaskSpec.parse("3x4")], n=5, cfg=CFG, store=one, n_boot=5)
    r2 = evaluate(ckpt, parse_sizes("3x3-3x4"), n=5, cfg=CFG, store=two, n_boot=5)
    key = r1.sizes[0].key
    assert r2.sizes[1].key == key
    e1, e2 = one.load_episodes(key), two.load_episodes(key)
    assert [e.token_ids for e in e1] == [e.token_ids for e in e2]


def test_progress_counts_sampled_episodes(ckpt, store):
    calls = []
    evaluate(
        ckpt,
        parse_sizes("3x3,3x6"),
        n=4,
        cfg=CFG,
        store=store,
        n_boot=5,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls and calls[-1] == (8, 8)
    assert all(t == 8 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    evaluate(
        ckpt,
        parse_sizes("3x3,3x6"),
        n=4,
        cfg=CFG,
        store=store,
        n_boot=5,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == []  # nothing sampled


def test_result_rows_and_dict(ckpt):
    r = evaluate(ckpt, parse_sizes("3x3,2x2"), n=3, cfg=CFG, seed=2, n_boot=5)
    assert r.checkpoint == str(ckpt.path) and r.checkpoint_hash == ckpt.hash and r.seed == 2
    assert r.sampling == CFG.to_dict()
    rows = r.rows()
    assert [x["size"] for x in rows] == ["3x3", "2x2"]
    for row in rows:
        assert row["n"] == 3 and 0 <= row["accuracy"] <= 1
        assert row["wilson_lo"] <= row["accuracy"] <= row["wilson_hi"]
        for name in ("p_s", "p_dC", "p_dW", "predicted"):
            assert {name, f"{name}_lo", f"{name}_hi"} <= set(row)
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d["sizes"]) == {"3x3", "2x2"}
    assert d["sizes"]["3x3"]["n"] == 3
    assert r.sizes[1].key.task_spec == "2x2@sampled-2"


# --- problems_for -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [f"3x{k}" for k in range(3, 10)])
def test_problems_for_uses_the_fixed_test_set(size):
    spec = TaskSpec.parse(size)
    task, probs = problems_for(spec, 100, seed=5)
    assert task == f"{size}@test-v{TEST_SET_VERSION}"
    assert probs == fixed_test_set(spec) and len(probs) == 100
    task, probs = problems_for(spec, 7, seed=5)
    assert task == f"{size}@test-v{TEST_SET_VERSION}" and probs == fixed_test_set(spec)[:7]
    assert problems_for(spec, 7, seed=6) == (task, probs)  # the seed does not change a test set


@pytest.mark.parametrize("size,n", [("3x3", 101), ("3x9", 500), ("3x10", 5), ("2x2", 5), ("3+4", 5), ("4x3", 100)])
def test_problems_for_samples_otherwise(size, n):
    spec = TaskSpec.parse(size)
    task, probs = problems_for(spec, n, seed=3)
    assert task == f"{spec.name}@sampled-3"
    assert probs == sample_problems(spec, n, seed=3) and len(probs) == n
    assert all(p.size == spec.name for p in probs)
    task4, probs4 = problems_for(spec, n, seed=4)
    assert task4 == f"{spec.name}@sampled-4" and probs4 != probs


def test_run_key_fields(ckpt):
    k = run_key(ckpt.hash, "3x3@test-v1", 10, CFG, 3)
    assert (k.checkpoint_hash, k.task_spec, k.seed, k.n) == (ckpt.hash, "3x3@test-v1", 3, 10)
    assert dict(k.sampling) == CFG.key()


# --- the table -----------------------------------------------------------------------------------------
def test_format_table_has_every_size(ckpt):
    sizes = parse_sizes("3x3-3x5,2x2")
    r = evaluate(ckpt, sizes, n=2, cfg=SamplingConfig(max_new_tokens=20), n_boot=5)
    table = format_table(r)
    lines = table.splitlines()
    assert len(lines) == 2 + len(sizes)
    assert "acc%" in lines[0] and "Wilson" in lines[0] and "src" in lines[0]
    assert set(lines[1]) == {"-"}
    for line, spec in zip(lines[2:], sizes):
        assert line.split()[0] == spec.name and line.split()[1] == "2"
        assert line.rstrip().endswith("new")
    assert "nan" not in table.lower()


# --- the command line ----------------------------------------------------------------------------------
def _env():
    env = dict(os.environ)
    env.pop("DS_LENS_DATA", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "ds_core", "eval", *args]


def _table_sources(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("3x3", "3x4"):
            out[parts[0]] = parts[-1]
    return out


@pytest.mark.slow
def test_cli_eval_then_store_then_json(ckpt_dir, tmp_path):
    data = tmp_path / "data"
    base = _cli("--checkpoint", str(ckpt_dir), "--sizes", "3x3-3x4", "--n", "5", "--data-dir", str(data), "--quiet")
    # an error run in a real process, alongside the first run (two cores)
    bad = subprocess.Popen(
        _cli(
            "--checkpoint", str(tmp_path / "missing"), "--sizes", "3x3", "--n", "5", "--data-dir", str(data), "--quiet"
        ),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.run(base, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    bad_out, bad_err = bad.communicate(timeout=120)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert _table_sources(first.stdout) == {"3x3": "new", "3x4": "new"}
    assert "acc%" in first.stdout and "tiny-sft" in first.stdout
    assert (data / "results.sqlite").is_file()

    assert bad.returncode == 2
    assert "Traceback" not in bad_err
    assert [ln for ln in bad_err.splitlines() if "error:" in ln] == [bad_err.strip()]
    assert "does not exist" in bad_err and bad_out == ""

    out_json = tmp_path / "out.json"
    second = subprocess.run(
        base + ["--json", str(out_json)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert _table_sources(second.stdout) == {"3x3": "store", "3x4": "store"}
    # same numbers both times
    strip = [ln.rsplit(None, 1)[0] for ln in first.stdout.splitlines() if ln.split()[:1] in (["3x3"], ["3x4"])]
    strip2 = [ln.rsplit(None, 1)[0] for ln in second.stdout.splitlines() if ln.split()[:1] in (["3x3"], ["3x4"])]
    assert strip == strip2
    report = json.loads(out_json.read_text())
    assert set(report["sizes"]) == {"3x3", "3x4"}
    assert report["checkpoint_hash"] == load_checkpoint(ckpt_dir).hash
    assert report["sizes"]["3x3"]["n"] == 5 and report["seed"] == 0
    assert report["sampling"]["temperature"] == 1.0


def _run_main(capsys, *args) -> tuple[int, str, str]:
    rc = main(["eval", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _pickle_only(tmp_path, ckpt) -> Path:
    d = tmp_path / "pickled"
    d.mkdir()
    ckpt.model.config.save_pretrained(str(d))
    ckpt.tokenizer.save_pretrained(str(d))
    torch.save(ckpt.model.state_dict(), d / "pytorch_model.bin")
    return d


@pytest.mark.parametrize("case", ["missing", "pickle", "sizes", "temperature", "n0", "datadir", "top_p", "range"])
def test_cli_errors_exit_2_with_one_line(case, ckpt, ckpt_dir, tmp_path, capsys):
    args = {"--checkpoint": str(ckpt_dir), "--sizes": "3x3", "--n": "2", "--data-dir": str(tmp_path / "data")}
    word = {
        "missing": "does not exist",
        "pickle": "pickle",
        "sizes": "cannot read size",
        "temperature": "temperature",
        "n0": "--n",
        "datadir": "data",
        "top_p": "top_p",
        "range": "range",
    }[case]
    if case == "missing":
        args["--checkpoint"] = str(tmp_path / "nope")
    elif case == "pickle":
        args["--checkpoint"] = str(_pickle_only(tmp_path, ckpt))
    elif case == "sizes":
        args["--sizes"] = "3xfoo"
    elif case == "temperature":
        args["--temperature"] = "-1"
    elif case == "n0":
        args["--n"] = "0"
    elif case == "datadir":
        f = tmp_path / "a-file"
        f.write_text("not a directory")
        args["--data-dir"] = str(f)
    elif case == "top_p":
        args["--top-p"] = "0"
    elif case == "range":
        args["--sizes"] = "3x5-3x3"
    argv = [x for kv in args.items() for x in kv] + ["--quiet"]
    rc, out, err = _run_main(capsys, *argv)
    assert_clean_cli_error(rc, out, err, word)
    if case != "datadir":
        assert not (tmp_path / "data" / "results.sqlite").exists()


def test_cli_bad_threads_is_a_clean_error(ckpt_dir, tmp_path, capsys):
    # Regression (was a bug, fixed): ds_core/cli/commands.py (set_threads) calls torch.set_num_threads(args.threads)
    # for any non-zero value;
    # `--threads -1` makes torch raise RuntimeError("set_num_threads expects a positive integer"),
    # which main() does not catch (only CheckpointError, RolloutError, StoreError, TaskError,
    # ValueError, OSError). Expected: exit code 2 and one 'error:' line; got: an uncaught
    # RuntimeError (exit code 1 and a Traceback from `python -m ds_core`).
    before = torch.get_num_threads()
    try:
        rc, out, err = _run_main(
            capsys,
            "--checkpoint",
            str(ckpt_dir),
            "--sizes",
            "3x3",
            "--n",
            "2",
            "--data-dir",
            str(tmp_path / "data"),
            "--quiet",
            "--threads",
            "-1",
        )
    except RuntimeError as e:
        pytest.fail(f"--threads -1 raised {type(e).__name__}: {e}")
    finally:
        torch.set_num_threads(before)
    assert rc == 2 and err.startswith("error:")


def test_cli_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["eval"])  # --checkpoint is required
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    with pytest.raises(SystemExit) as ei:
        main(["eval", "--checkpoint", "x", "--n", "many"])
    assert ei.value.code == 2


def test_cli_in_process_success_and_no_store(ckpt_dir, tmp_path, capsys):
    rc, out, err = _run_main(
        capsys,
        "--checkpoint",
        str(ckpt_dir),
        "--sizes",
        "3x3",
        "--n",
        "3",
        "--no-store",
        "--quiet",
        "--max-new-tokens",
        "30",
        "--n-boot",
        "5",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert rc == 0, err
    assert _table_sources(out) == {"3x3": "new"}
    assert "store " not in out.splitlines()[0]  # no store line in the header
    assert not (tmp_path / "data").exists()
