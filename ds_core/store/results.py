"""An embedded SQLite results store: sampled runs (keyed by `RunKey`), their episodes, a JSON cache.

The file is $DS_LENS_DATA/results.sqlite (default <repo>/data/). WAL mode: readers never wait for
the writer. Each operation opens its own connection, so one store is safe to share between threads
and processes. A run and all its episodes are written in one transaction: a writer killed half-way
leaves nothing visible. sqlite/OS failures surface as `StoreError` with a readable message.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ds_core.episodes.episode import Episode
from ds_core.errors import UserError
from ds_core.paths import REPO_ROOT
from ds_core.store import jsonread
from ds_core.store.jsonio import canonical_json, digest_of, dumps, from_jsonable, key_digest

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1
_DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    digest TEXT PRIMARY KEY, key TEXT NOT NULL, checkpoint_hash TEXT NOT NULL,
    task_spec TEXT NOT NULL, seed INTEGER NOT NULL, n INTEGER NOT NULL,
    created_at REAL NOT NULL, wall_s REAL, meta TEXT NOT NULL, summary TEXT NOT NULL,
    n_episodes INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS runs_checkpoint ON runs(checkpoint_hash);
CREATE TABLE IF NOT EXISTS episodes (
    run TEXT NOT NULL REFERENCES runs(digest) ON DELETE CASCADE, idx INTEGER NOT NULL,
    problem TEXT, correct INTEGER NOT NULL, final_answer TEXT, n_attempts INTEGER NOT NULL,
    flags TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (run, idx));
CREATE INDEX IF NOT EXISTS episodes_run ON episodes(run);
CREATE TABLE IF NOT EXISTS blobs (
    kind TEXT NOT NULL, digest TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (kind, digest));
"""


class StoreError(UserError, RuntimeError):
    """The results store cannot be opened, read or written."""


class StoreBusy(StoreError):
    """Another connection held the database lock for longer than the store's timeout."""


class FrozenDict(Mapping):
    """A read-only, hashable dict (nested containers are frozen too); equal to the plain dict."""

    __slots__ = ("_d", "_hash")

    def __init__(self, d: Mapping | None = None):
        self._d = {str(k): _freeze(v) for k, v in (d or {}).items()}
        self._hash = hash(canonical_json(self._d))  # also validates: JSON-able, no nan

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return repr(self._d)

    def to_dict(self) -> dict:
        return _thaw(self)


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    return [_thaw(x) for x in v] if isinstance(v, (list, tuple)) else v


def _freeze(v: Any) -> Any:
    if isinstance(v, Mapping):
        return v if isinstance(v, FrozenDict) else FrozenDict(v)
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


# --- keys and records ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunKey:
    """What identifies a sampled run; `digest()` is its primary key. Hashable (usable as dict key)."""

    checkpoint_hash: str
    task_spec: str
    sampling: Mapping = field(default_factory=dict)  # temperature, top_p, max_attempts, max_new_tokens...
    seed: int = 0
    n: int = 0
    extra: Mapping = field(default_factory=dict)

    def __post_init__(self):
        for name in ("checkpoint_hash", "task_spec"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"RunKey.{name} must be a non-empty string, got {v!r}")
            object.__setattr__(self, name, v.strip())
        for name in ("seed", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or (name == "n" and v < 0):
                raise ValueError(f"RunKey.{name} must be an integer{' >= 0' * (name == 'n')}, got {v!r}")
        for name in ("sampling", "extra"):
            v = getattr(self, name)
            try:
                if not isinstance(v, Mapping):
                    raise TypeError(f"expected a dict, got {type(v).__name__}")
                object.__setattr__(self, name, FrozenDict(v))
            except (TypeError, ValueError) as e:
                raise ValueError(f"RunKey.{name} is not a valid key: {e}") from None

    def to_dict(self) -> dict:
        return {
            "checkpoint_hash": self.checkpoint_hash,
            "task_spec": self.task_spec,
            "sampling": self.sampling.to_dict(),
            "seed": self.seed,
            "n": self.n,
            "extra": self.extra.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> RunKey:
        return cls(
            d["checkpoint_hash"],
            d["task_spec"],
            d.get("sampling", {}),
            int(d.get("seed", 0)),
            int(d.get("n", 0)),
            d.get("extra", {}),
        )

    def digest(self) -> str:
        return digest_of(self.to_dict())


@dataclass(frozen=True)
class RunRecord:
    key: RunKey
    digest: str
    created_at: float  # unix time
    wall_s: float | None
    meta: dict
    summary: dict
    n_episodes: int


# --- the store ----------------------------------------------------------------------------------
def default_data_dir() -> Path:
    env = os.environ.get("DS_LENS_DATA")
    return Path(env).expanduser() if env else REPO_ROOT / "data"


class ResultsStore:
    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 30.0):
        p = Path(path).expanduser() if path is not None else default_data_dir()
        if not (p.suffix.lower() in _DB_SUFFIXES and not p.is_dir()):
            p = p / DB_NAME
        self.path = p
        self.timeout = float(timeout)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data directory {p.parent}: {e.strerror or e}") from None
        if p.exists() and not p.is_file():
            raise StoreError(f"results database path {p} exists but is not a file")
        if not os.access(p.parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.R_OK | os.W_OK)):
            raise StoreError(
                f"results database {p} is not writable (check permissions, or set DS_LENS_DATA to a writable directory)"
            )
        deadline = time.monotonic() + self.timeout
        while True:  # switching a new file to WAL can report "locked" without waiting: retry
            try:
                with self._db("open") as con:
                    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    version = con.execute("PRAGMA user_version").fetchone()[0]
                    if version < SCHEMA_VERSION:  # a new (or older) file: create the tables
                        con.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
                break
            except StoreBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if str(mode).lower() != "wal":
            raise StoreError(f"could not switch {p} to WAL journal mode (got {mode!r})")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{p} was written by a newer DS-Lens (schema {version} > {SCHEMA_VERSION})")

    def __repr__(self):
        return f"ResultsStore({str(self.path)!r})"

    # --- plumbing --------------------------------------------------------------------------------
    def _error(self, action: str, e: Exception) -> StoreError:
        msg = str(e)
        if "not a database" in msg or "malformed" in msg:
            return StoreError(
                f"{self.path} is not a usable results database ({msg}); move it away or point DS_LENS_DATA elsewhere"
            )
        if "locked" in msg or "busy" in msg:
            return StoreBusy(
                f"results database {self.path} is busy (another process is writing); "
                f"could not {action} within {self.timeout:g}s"
            )
        if "readonly" in msg or "unable to open" in msg:
            return StoreError(
                f"cannot {action} results database {self.path}: {msg} (check the path and its permissions)"
            )
        return StoreError(f"results database {self.path}: cannot {action}: {msg}")

    @contextmanager
    def _db(self, action: str, write: bool = False):
        """A fresh connection; `write`: inside BEGIN IMMEDIATE ... COMMIT. Closing an uncommitted
        transaction (any error, or a killed process) rolls it back."""
        con = None
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys=ON")
            if write:
                con.execute("BEGIN IMMEDIATE")
            yield con
            if write:
                con.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._error(action, e) from None
        finally:
            if con is not None:
                con.close()

    def _query(self, action: str, sql: str, args=()) -> list[tuple]:
        with self._db(action) as con:
            return con.execute(sql, args).fetchall()

    @staticmethod
    def _digest(key: RunKey | str) -> str:
        if isinstance(key, RunKey):
            return key.digest()
        if isinstance(key, str) and key:
            return key
        raise TypeError(f"expected a RunKey or a digest string, got {key!r}")

    # --- runs ------------------------------------------------------------------------------------
    def put_run(
        self,
        key: RunKey,
        episodes: Iterable[Episode | Mapping],
        meta: Mapping | None = None,
        summary: Mapping | None = None,
        wall_s: float | None = None,
    ) -> RunRecord:
        """Write (or atomically replace) a run and all its episodes in one transaction. `episodes`
        may be a generator; it is consumed inside the write lock, so pass slow producers as a list."""
        if not isinstance(key, RunKey):
            raise TypeError(f"key must be a RunKey, got {type(key).__name__}")
        digest = key.digest()
        meta_s, summary_s = dumps(meta or {}, "meta"), dumps(summary or {}, "summary")
        wall = float(wall_s) if wall_s is not None and math.isfinite(float(wall_s)) else None
        created = time.time()
        with self._db("write run", write=True) as con:
            con.execute("DELETE FROM episodes WHERE run=?", (digest,))
            con.execute("DELETE FROM runs WHERE digest=?", (digest,))
            con.execute(
                "INSERT INTO runs (digest, key, checkpoint_hash, task_spec, seed, n, created_at,"
                " wall_s, meta, summary) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    digest,
                    dumps(key.to_dict(), "key"),
                    key.checkpoint_hash,
                    key.task_spec,
                    key.seed,
                    key.n,
                    created,
                    wall,
                    meta_s,
                    summary_s,
                ),
            )
            count = 0
            for i, ep in enumerate(episodes):
                d = (ep if isinstance(ep, Episode) else Episode.from_dict(ep)).to_dict()
                fa = d["final_answer"]
                con.execute(
                    "INSERT INTO episodes (run, idx, problem, correct, final_answer, n_attempts,"
                    " flags, payload) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        digest,
                        i,
                        dumps(d["problem"], "problem") if d["problem"] else None,
                        int(bool(d["correct"])),
                        None if fa is None else str(fa),
                        len(d["attempts"]),
                        dumps(d["flags"], "flags"),
                        dumps(d, f"episode {i}"),
                    ),
                )
                count += 1
            con.execute("UPDATE runs SET n_episodes=? WHERE digest=?", (count, digest))
        return RunRecord(
            key, digest, created, wall, from_jsonable(json.loads(meta_s)), from_jsonable(json.loads(summary_s)), count
        )

    _RUN_COLS = "key, digest, created_at, wall_s, meta, summary, n_episodes"

    def _record(self, row) -> RunRecord:
        try:
            key = RunKey.from_dict(jsonread.loads(row[0], "the run key"))
            return RunRecord(
                key,
                row[1],
                row[2],
                row[3],
                from_jsonable(jsonread.loads(row[4], "the run's meta")),
                from_jsonable(jsonread.loads(row[5], "the run's summary")),
                row[6],
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{self.path}: run {row[1]} has an unreadable record ({e})") from None

    def get_run(self, key: RunKey | str) -> RunRecord | None:
        rows = self._query("read run", f"SELECT {self._RUN_COLS} FROM runs WHERE digest=?", (self._digest(key),))
        return self._record(rows[0]) if rows else None

    def has_run(self, key: RunKey | str) -> bool:
        return bool(self._query("read run", "SELECT 1 FROM runs WHERE digest=?", (self._digest(key),)))

    def list_runs(self, checkpoint_hash: str | None = None) -> list[RunRecord]:
        """Runs, newest first; only those of `checkpoint_hash` when given."""
        sql = f"SELECT {self._RUN_COLS} FROM runs"
        args: tuple = ()
        if checkpoint_hash is not None:
            sql, args = sql + " WHERE checkpoint_hash=?", (checkpoint_hash,)
        return [self._record(r) for r in self._query("list runs", sql + " ORDER BY created_at DESC", args)]

    def load_episodes(self, key_or_digest: RunKey | str) -> list[Episode]:
        digest = self._digest(key_or_digest)
        rows = self._query("read episodes", "SELECT idx, payload FROM episodes WHERE run=? ORDER BY idx", (digest,))
        out = []
        for idx, payload in rows:
            try:
                out.append(Episode.from_dict(jsonread.loads(payload, "the episode")))
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{self.path}: episode {idx} of run {digest[:12]} is unreadable ({e})") from None
        return out

    def delete_run(self, key: RunKey | str) -> bool:
        digest = self._digest(key)
        with self._db("delete run", write=True) as con:
            con.execute("DELETE FROM episodes WHERE run=?", (digest,))
            return con.execute("DELETE FROM runs WHERE digest=?", (digest,)).rowcount > 0

    def update_summary(self, key: RunKey | str, summary: Mapping) -> None:
        digest, s = self._digest(key), dumps(summary or {}, "summary")
        with self._db("update summary", write=True) as con:
            if con.execute("UPDATE runs SET summary=? WHERE digest=?", (s, digest)).rowcount == 0:
                raise StoreError(f"no run {digest[:12]} in {self.path}")

    # --- generic cache ---------------------------------------------------------------------------
    def put_blob(self, kind: str, key: Mapping, value: Mapping) -> str:
        """Store a JSON `value` under (kind, digest of `key`); replaces any previous value."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"blob kind must be a non-empty string, got {kind!r}")
        digest, (k, v) = key_digest(key), (dumps(key, "blob key"), dumps(value, "blob value"))
        with self._db("write blob", write=True) as con:
            con.execute(
                "INSERT OR REPLACE INTO blobs (kind, digest, key, value, created_at) VALUES (?,?,?,?,?)",
                (kind, digest, k, v, time.time()),
            )
        return digest

    def get_blob(self, kind: str, key: Mapping) -> dict | None:
        rows = self._query("read blob", "SELECT value FROM blobs WHERE kind=? AND digest=?", (kind, key_digest(key)))
        if not rows:
            return None
        try:  # the store is a file a user can point at: read like any outside JSON
            return jsonread.loads(rows[0][0], f"the {kind} blob", expect=dict)
        except jsonread.JSONReadError as e:
            raise StoreError(f"{self.path}: a stored {kind} result is unreadable ({e})") from None

    def delete_blob(self, kind: str, key: Mapping) -> bool:
        with self._db("delete blob", write=True) as con:
            return con.execute("DELETE FROM blobs WHERE kind=? AND digest=?", (kind, key_digest(key))).rowcount > 0
