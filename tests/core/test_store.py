"""The SQLite results store: round trips, keys, atomic writes (SIGKILL mid-write), concurrency."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ds_core.episodes.episode import Episode
from ds_core.episodes.tasks import Problem
from ds_core.store import ResultsStore, RunKey, RunRecord, StoreBusy, StoreError, default_data_dir

REPO = Path(__file__).resolve().parents[2]

SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_attempts": 4, "max_new_tokens": 512}


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    from ds_core.episodes.formats import DSFormat
    from ds_core.episodes.tokenizer import build_tokenizer

    f, tok = DSFormat(), build_tokenizer()
    out = []
    for problem in (Problem(123, 4567), Problem(987, 6543), Problem(305, 1001), Problem(999, 999999999)):
        text = f.trace_text(problem, [f.attempt_text(problem)])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pl = len(tok(f.prompt_text(problem), add_special_tokens=False)["input_ids"])
        out.append(f.parse(problem, ids, pl, tok))
    # a malformed one too: the prompt plus a cut-off generation
    out.append(f.parse(problem, ids[: pl + 5], pl, tok, truncated=True))
    return out


def key(**kw) -> RunKey:
    d = dict(checkpoint_hash="ckpt-a", task_spec="3x4", sampling=SAMPLING, seed=0, n=5)
    d.update(kw)
    return RunKey(**d)


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path)


# --- keys ---------------------------------------------------------------------------------------
def test_digest_stable_and_distinct():
    a, b = key(), key(sampling=dict(reversed(list(SAMPLING.items()))))
    assert a == b and hash(a) == hash(b) and a.digest() == b.digest()
    assert len(a.digest()) == 64
    assert {a: 1}[b] == 1  # usable as a dict key
    assert (
        key(sampling={**SAMPLING, "temperature": 1}).digest() == key(sampling={**SAMPLING, "temperature": 1.0}).digest()
    )
    others = [
        key(seed=1),
        key(sampling={**SAMPLING, "temperature": 0.8}),
        key(n=6),
        key(task_spec="3x5"),
        key(checkpoint_hash="ckpt-b"),
        key(extra={"testset": "v1"}),
    ]
    digests = {k.digest() for k in others} | {a.digest()}
    assert len(digests) == len(others) + 1
    assert RunKey.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.sampling["temperature"] == 0.7 and a.sampling == SAMPLING


@pytest.mark.parametrize(
    "bad",
    [
        dict(checkpoint_hash=""),
        dict(task_spec="  "),
        dict(n=-1),
        dict(seed=1.5),
        dict(seed=True),
        dict(sampling={"t": float("nan")}),
        dict(sampling=[1]),
        dict(extra={"x": object()}),
    ],
)
def test_runkey_validation(bad):
    with pytest.raises(ValueError):
        key(**bad)


def test_runkey_immutable():
    k = key()
    with pytest.raises(Exception):
        k.seed = 3
    with pytest.raises(TypeError):
        k.sampling["temperature"] = 2.0


# --- basic store --------------------------------------------------------------------------------
def test_paths_and_wal(tmp_path, monkeypatch):
    s = ResultsStore(tmp_path / "a" / "b")
    assert s.path == tmp_path / "a" / "b" / "results.sqlite" and s.path.exists()
    s2 = ResultsStore(tmp_path / "x" / "mine.sqlite")
    assert s2.path == tmp_path / "x" / "mine.sqlite"
    with sqlite3.connect(s.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "episodes", "blobs"} <= tables
        assert "episodes_run" in {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    monkeypatch.setenv("DS_LENS_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert ResultsStore().path == tmp_path / "env" / "results.sqlite"
    monkeypatch.delenv("DS_LENS_DATA")
    assert default_data_dir() == REPO / "data"


def test_round_trip(store, episodes):
    k = key()
    assert store.get_run(k) is None and not store.has_run(k) and store.load_episodes(k) == []
    rec = store.put_run(k, episodes, meta={"model": "tiny", "path": Path("/x")}, summary={"accuracy": 0.8}, wall_s=1.5)
    assert isinstance(rec, RunRecord) and rec.n_episodes == len(episodes)
    got = store.get_run(k)
    assert got.key == k and got.digest == k.digest() and got.n_episodes == len(episodes)
    assert got.meta == {"model": "tiny", "path": "/x"} and got.summary == {"accuracy": 0.8}
    assert got.wall_s == 1.5 and abs(got.created_at - time.time()) < 60
    assert store.has_run(k) and store.has_run(k.digest())
    loaded = store.load_episodes(k)
    assert [e.to_dict() for e in loaded] == [e.to_dict() for e in episodes]
    assert loaded == episodes
    assert store.load_episodes(k.digest()) == episodes
    assert any(e.flags for e in loaded) and loaded[3].final_answer == 999 * 999999999
    # the queryable columns agree with the payload
    with sqlite3.connect(store.path) as con:
        rows = con.execute(
            "SELECT idx, correct, final_answer, n_attempts, flags, problem FROM episodes WHERE run=? ORDER BY idx",
            (k.digest(),),
        ).fetchall()
    assert [r[0] for r in rows] == list(range(len(episodes)))
    for r, e in zip(rows, episodes):
        assert bool(r[1]) == e.correct and r[3] == e.n_attempts and json.loads(r[4]) == list(e.flags)
        assert r[2] == (None if e.final_answer is None else str(e.final_answer))
        assert json.loads(r[5]) == e.problem.to_dict()
    # episodes may also be given as dicts
    k2 = key(seed=9)
    store.put_run(k2, [e.to_dict() for e in episodes])
    assert store.load_episodes(k2) == episodes


def test_replace_list_delete_update(store, episodes):
    k = key()
    store.put_run(k, episodes, summary={"v": 1})
    store.put_run(k, episodes[:2], summary={"v": 2}, meta={"again": True})
    rec = store.get_run(k)
    assert rec.n_episodes == 2 and rec.summary == {"v": 2} and rec.meta == {"again": True}
    assert store.load_episodes(k) == episodes[:2]
    store.put_run(key(seed=1), episodes[:1])
    store.put_run(key(checkpoint_hash="ckpt-b"), [])
    assert len(store.list_runs()) == 3
    assert {r.key.seed for r in store.list_runs("ckpt-a")} == {0, 1}
    assert [r.key.checkpoint_hash for r in store.list_runs("ckpt-b")] == ["ckpt-b"]
    assert store.list_runs("nope") == []
    assert store.get_run(key(checkpoint_hash="ckpt-b")).n_episodes == 0
    store.update_summary(k, {"v": 3, "bad": float("nan")})
    assert store.get_run(k).summary == {"v": 3, "bad": None}
    assert store.load_episodes(k) == episodes[:2]
    with pytest.raises(StoreError):
        store.update_summary(key(seed=42), {"v": 1})
    assert store.delete_run(k) is True and store.delete_run(k) is False
    assert store.get_run(k) is None and store.load_episodes(k) == []
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT count(*) FROM episodes WHERE run=?", (k.digest(),)).fetchone()[0] == 0


def test_failed_write_rolls_back(store, episodes):
    k = key()
    store.put_run(k, episodes[:2], summary={"v": "old"})

    def broken():
        yield from episodes
        raise RuntimeError("generation crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        store.put_run(k, broken(), summary={"v": "new"})
    assert store.get_run(k).summary == {"v": "old"} and store.load_episodes(k) == episodes[:2]
    with pytest.raises(RuntimeError):
        store.put_run(key(seed=3), broken())
    assert store.get_run(key(seed=3)) is None and store.load_episodes(key(seed=3)) == []
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT count(*) FROM episodes").fetchone()[0] == 2


def test_nan_and_inf(store, episodes):
    k = key()
    meta = {
        "loss": float("nan"),
        "list": [1.0, float("inf"), -float("inf")],
        "nested": {"x": math.nan},
        "tuple": (1, 2),
    }
    store.put_run(k, episodes[:1], meta=meta, summary={"acc": float("nan")}, wall_s=float("nan"))
    rec = store.get_run(k)
    # one JSON policy (ds_core.store.jsonio): nan -> null, +-inf kept (as "inf"/"-inf" in the file)
    assert rec.meta == {"loss": None, "list": [1.0, math.inf, -math.inf], "nested": {"x": None}, "tuple": [1, 2]}
    assert rec.summary == {"acc": None} and rec.wall_s is None
    store.put_blob("attr", {"layer": 3}, {"scores": [0.5, float("nan")]})
    assert store.get_blob("attr", {"layer": 3}) == {"scores": [0.5, None]}
    with pytest.raises(StoreError):
        store.put_run(key(seed=5), [], meta={"obj": object()})
    assert store.get_run(key(seed=5)) is None


def test_numpy_values(store):
    np = pytest.importorskip("numpy")
    store.put_blob("arr", {"n": np.int64(3)}, {"a": np.arange(3), "f": np.float32("nan"), "g": np.float64(0.5)})
    assert store.get_blob("arr", {"n": 3}) == {"a": [0, 1, 2], "f": None, "g": 0.5}


def test_blobs(store):
    assert store.get_blob("attribution", {"run": "abc", "layer": 1}) is None
    store.put_blob("attribution", {"run": "abc", "layer": 1}, {"scores": [1, 2, 3]})
    assert store.get_blob("attribution", {"layer": 1, "run": "abc"}) == {"scores": [1, 2, 3]}
    assert store.get_blob("other", {"run": "abc", "layer": 1}) is None
    assert store.get_blob("attribution", {"run": "abc", "layer": 2}) is None
    store.put_blob("attribution", {"run": "abc", "layer": 1}, {"scores": []})
    assert store.get_blob("attribution", {"run": "abc", "layer": 1}) == {"scores": []}
    assert store.delete_blob("attribution", {"run": "abc", "layer": 1})
    assert store.get_blob("attribution", {"run": "abc", "layer": 1}) is None
    with pytest.raises(StoreError):
        store.put_blob("x", {"k": float("nan")}, {})


def test_tampered_rows_are_store_errors(store, episodes):
    """A store file someone edited (deep or duplicate-keyed JSON in a row) gives a StoreError
    naming the row, never a RecursionError: its rows are read like any outside JSON."""
    k = key()
    store.put_run(k, episodes, summary={"accuracy": 0.8})
    store.put_blob("attribution", {"run": "abc"}, {"scores": [1]})
    deep = "[" * 100_000 + "]" * 100_000
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE episodes SET payload=? WHERE idx=0", (deep,))
        con.execute("UPDATE runs SET summary=?", ('{"accuracy": 1, "accuracy": 0}',))
        con.execute("UPDATE blobs SET value=?", (deep,))
    with pytest.raises(StoreError, match="episode 0 .* is unreadable .*nested"):
        store.load_episodes(k)
    with pytest.raises(StoreError, match="unreadable record .*appears twice"):
        store.get_run(k)
    with pytest.raises(StoreError, match="attribution result is unreadable .*nested"):
        store.get_blob("attribution", {"run": "abc"})


# --- bad paths ----------------------------------------------------------------------------------
def test_not_a_database(tmp_path):
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"this is certainly not an sqlite database file" * 100)
    with pytest.raises(StoreError, match="not a usable results database"):
        ResultsStore(tmp_path)
    with pytest.raises(StoreError):
        ResultsStore(bad)


def test_parent_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="cannot create data directory"):
        ResultsStore(tmp_path / "afile" / "sub")


def test_db_path_is_a_directory(tmp_path):
    (tmp_path / "results.sqlite").mkdir()
    with pytest.raises(StoreError, match="not a file"):
        ResultsStore(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="not writable"):
            ResultsStore(ro)
    finally:
        ro.chmod(0o755)


def test_unwritable_directory_reported(tmp_path, monkeypatch):
    """The permission check, forced (the test above is skipped when run as root)."""
    import ds_core.store.results as store_mod

    monkeypatch.setattr(store_mod.os, "access", lambda *a, **k: False)
    with pytest.raises(StoreError, match="not writable"):
        ResultsStore(tmp_path)


# --- crash safety and concurrency ---------------------------------------------------------------
WRITER = r"""
import json, sys, time
from pathlib import Path
from ds_core.episodes.episode import Episode
from ds_core.store import ResultsStore, RunKey
db, payload, ready, hold = sys.argv[1:5]
ep = Episode.from_dict(json.loads(Path(payload).read_text()))
store = ResultsStore(db)
store.put_run(RunKey("ckpt-a", "3x4", {"temperature": 0.7}, seed=1, n=1), [ep])  # committed
def slow():
    for i in range(100000):
        if i == 300:
            Path(ready).write_text("1")   # well inside the transaction
        if i >= 300:
            time.sleep(float(hold))
        yield ep
store.put_run(RunKey("ckpt-a", "3x4", {"temperature": 0.7}, seed=2, n=100000), slow(),
              meta={"partial": True})
"""


def _start_writer(tmp_path, episode, hold=0.05):
    payload, ready = tmp_path / "ep.json", tmp_path / "ready"
    payload.write_text(json.dumps(episode.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "db"), str(payload), str(ready), str(hold)], cwd=REPO, env=env
    )
    deadline = time.time() + 60
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"writer did not reach the write (rc={proc.returncode})")
        time.sleep(0.02)
    return proc


def test_sigkill_mid_write_leaves_nothing(tmp_path, episodes):
    proc = _start_writer(tmp_path, episodes[0])
    try:
        time.sleep(0.2)
        store = ResultsStore(tmp_path / "db", timeout=5)
        # while the writer holds its transaction, readers see only committed data, without waiting
        t0 = time.time()
        assert [r.key.seed for r in store.list_runs()] == [1]
        assert store.get_run(RunKey("ckpt-a", "3x4", {"temperature": 0.7}, seed=2, n=100000)) is None
        assert time.time() - t0 < 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = ResultsStore(tmp_path / "db")
    partial = RunKey("ckpt-a", "3x4", {"temperature": 0.7}, seed=2, n=100000)
    assert store.get_run(partial) is None and not store.has_run(partial)
    assert store.load_episodes(partial) == []
    with sqlite3.connect(store.path) as con:
        assert con.execute("SELECT count(*) FROM episodes").fetchone()[0] == 1
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [r.key.seed for r in store.list_runs()] == [1]
    assert store.load_episodes(RunKey("ckpt-a", "3x4", {"temperature": 0.7}, seed=1, n=1)) == episodes[:1]
    # the database still accepts writes, including the key the dead writer was writing
    store.put_run(partial, episodes)
    assert store.load_episodes(partial) == episodes
    assert store.get_run(partial).n_episodes == len(episodes)


def test_busy_writer_gives_store_error(tmp_path, episodes):
    proc = _start_writer(tmp_path, episodes[0], hold=0.2)
    try:
        store = ResultsStore(tmp_path / "db", timeout=0.2)
        with pytest.raises(StoreBusy, match="busy"):
            store.put_run(key(seed=77), episodes)
        assert store.get_run(key(seed=77)) is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_concurrent_readers_and_writer_threads(store, episodes):
    errors: list[BaseException] = []
    stop = threading.Event()
    store.put_run(key(seed=0), episodes)

    def writer():
        try:
            for i in range(1, 25):
                store.put_run(key(seed=i), episodes * 10, summary={"i": i})
                store.put_blob("b", {"i": i}, {"v": i})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    def reader():
        try:
            while not stop.is_set():
                for rec in store.list_runs("ckpt-a"):
                    eps = store.load_episodes(rec.digest)
                    assert len(eps) == rec.n_episodes  # a run is never seen half-written
                assert store.load_episodes(key(seed=0)) == episodes
                store.get_blob("b", {"i": 1})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(store.list_runs()) == 25
    assert all(r.n_episodes == len(episodes) * 10 for r in store.list_runs() if r.key.seed > 0)


def test_two_stores_two_writers(tmp_path, episodes):
    """Two store objects (as two processes would) writing at once wait for each other."""
    a, b = ResultsStore(tmp_path), ResultsStore(tmp_path)
    errors = []

    def write(s, seeds):
        try:
            for i in seeds:
                s.put_run(key(seed=i), episodes * 5)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [
        threading.Thread(target=write, args=(a, range(0, 20))),
        threading.Thread(target=write, args=(b, range(20, 40))),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    assert len(a.list_runs()) == 40


INIT_RACE = r"""
import sys, time
from ds_core.store import ResultsStore
start = float(sys.argv[2])
while time.time() < start:
    pass
ResultsStore(sys.argv[1]).put_blob("k", {"p": sys.argv[3]}, {"v": 1})
"""


def test_processes_opening_a_fresh_db_at_once(tmp_path):
    start, env = time.time() + 1.5, {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INIT_RACE, str(tmp_path), str(start), str(i)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(12)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    store = ResultsStore(tmp_path)
    assert all(store.get_blob("k", {"p": str(i)}) == {"v": 1} for i in range(12))
