"""The calibration page's service: Table-1 accuracy and the section-4.2 calibration model for a grid
of (checkpoint, size) cells, served without a model whenever possible.

Design notes: docs/DESIGN.md, section `ui.services.calibration`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ds_core.analysis.metrics import QUANTITIES
from ds_core.episodes.tasks import TEST_SET_VERSION, TRAIN_SIZES, TaskError, TaskSpec, parse_sizes, task_name
from ds_core.models.checkpoint import CheckpointError, content_hash, read_card
from ds_core.models.sampling import RolloutError, SamplingConfig
from ds_core.paper import SIZES as PAPER_SIZES
from ds_core.paper import TABLE1
from ds_core.store import ResultsStore, RunKey, StoreError, jsonread

SOURCES = ("store", "computed", "eval.json", "missing")
MAX_SIZES = 16
MAX_N = 1000
MAX_SEED = 2**31 - 1
EVAL_JSON_MAX_BYTES = 8 * 1024 * 1024  # a report of every size 1x1..12x12 is ~100 kB
NAN = float("nan")


class CalibrationInputError(TaskError):
    """A request the page cannot serve (bad sizes, n, seed, temperature): shown as a message."""


# --- the request ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What identifies a run besides checkpoint and size: n, seed and the sampling settings."""

    n: int = 100
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    max_attempts: int = 4
    max_new_tokens: int | None = None

    def __post_init__(self):
        for name, lo, hi in (("n", 1, MAX_N), ("seed", 0, MAX_SEED)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise CalibrationInputError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
        try:
            cfg = self.sampling_config()
        except RolloutError as e:
            raise CalibrationInputError(str(e)) from None
        object.__setattr__(self, "temperature", cfg.temperature)
        object.__setattr__(self, "top_p", cfg.top_p)

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature,
            top_p=self.top_p,
            max_attempts=self.max_attempts,
            max_new_tokens=self.max_new_tokens,
        )

    def sampling_key(self) -> dict:
        """SamplingConfig(...).key(): what the run keys of ds_core.analysis.evaluate hold."""
        return self.sampling_config().key()


SAMPLING_DEFAULTS = Settings().sampling_key()  # for an eval.json that leaves a setting out


def parse_size_list(text: str, max_sizes: int = MAX_SIZES) -> list[TaskSpec]:
    """'3x3-3x9' or '3x5, 2x2' -> sizes, duplicates dropped, sorted by shape (operation, then the
    first operand's digits, then the second's: '2x2' comes before '3x3' however it was typed);
    TaskError when unreadable, empty, or more than `max_sizes`."""
    specs = parse_sizes(text)
    out, seen = [], set()
    for s in specs:
        if s.name not in seen:
            seen.add(s.name)
            out.append(s)
            if len(out) > max_sizes:
                raise CalibrationInputError(f"at most {max_sizes} sizes at once (asked for more)")
    if not out:
        raise CalibrationInputError("no sizes given: type sizes like '3x3-3x9' or '3x3, 3x5'")
    return sorted(out, key=lambda s: (s.op != "*", s.a_digits, s.b_digits))


def size_axis_title(sizes) -> str:
    """'size (3-digit × n-digit)' when every size is 3xN, else what they have in common."""
    specs = [TaskSpec.parse(s) if isinstance(s, str) else s for s in sizes]
    ops = {s.op for s in specs}
    sign = "×" if ops == {"*"} else ("+" if ops == {"+"} else "×/+")
    firsts = {s.a_digits for s in specs}
    first = f"{next(iter(firsts))}-digit" if len(firsts) == 1 else "digits"
    return f"size ({first} {sign} {'n-digit' if len(firsts) == 1 else 'digits'})"


def run_key_for(ckpt_hash: str, spec: TaskSpec, settings: Settings, fmt_key: dict | None = None) -> RunKey:
    """The store key ds_core.analysis.evaluate.evaluate uses for this cell (`fmt_key`: the text
    format's settings when the page edited them, as CheckpointRef.fmt_key)."""
    from ds_core.models.device import current_placement

    place = current_placement()
    extra = {}
    if fmt_key:
        extra["format"] = fmt_key
    if place:
        extra["placement"] = place
    return RunKey(
        ckpt_hash, task_name(spec, settings.n, settings.seed), settings.sampling_key(), settings.seed, settings.n, extra
    )


# --- checkpoints ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointRef:
    label: str  # what the page calls it (the picker's name)
    path: str
    hash: str  # content hash (config, weights, tokenizer)
    condition: str | None  # the card's condition
    paper_condition: str | None  # the paper's Table-1 row it corresponds to (None: none)
    fmt: tuple = ()  # the page's text-format settings ((name, value) pairs) applied to it
    fmt_key: dict | None = field(default=None, compare=False, hash=False)  # their RunKey form


def checkpoint_ref(label: str, path: str | Path, fmt: tuple = ()) -> CheckpointRef:
    """Identify a checkpoint directory without loading its model (CheckpointError if not one).
    `fmt`: the page's prompt and marker settings; they apply to a text-format checkpoint only (its
    tokenizer is read to know), whose runs are then keyed by them."""
    p = Path(path).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise CheckpointError(f"{p} is not a checkpoint directory (it needs a config.json)")
    try:
        h = content_hash(p)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {p}: {e}") from None
    try:
        card = read_card(p)
    except CheckpointError:
        card = None
    condition = card.condition if card else None
    paper = next((c for c in (condition, p.name) if c in TABLE1), None)
    fmt_key = _format_key(str(p), h, tuple(fmt)) if fmt else None
    if fmt_key is None:
        fmt = ()
    return CheckpointRef(str(label), str(p), h, condition, paper, tuple(fmt), fmt_key)


@functools.lru_cache(maxsize=64)
def _format_key(path: str, digest: str, fmt: tuple) -> dict | None:
    """The RunKey form of `fmt` applied to the checkpoint's text format (None for a DS-format
    checkpoint). Reads the tokenizer once per (path, content hash, settings): a page reruns often."""
    from ds_core.analysis.evaluate import format_key
    from ds_core.episodes.formats import format_for
    from ds_core.episodes.text_format import customized
    from ds_core.models.checkpoint import load_tokenizer

    tok = load_tokenizer(path)
    base = format_for(tok)
    return format_key(customized(base, tok, **dict(fmt))) if base.name == "text" else None


_EVAL_MEMO: dict[tuple[str, int, int], tuple[dict | None, str | None]] = {}


def _read_eval(path: str | Path) -> tuple[dict | None, str | None]:
    """(eval.json as a dict, None), (None, why it cannot be used) or (None, None) when absent;
    memoised on mtime/size. Read through ds_core.store.jsonread (bounded size and depth, no
    duplicate keys) and checked for the shape `python -m ds_core report` writes."""
    f = Path(path) / "eval.json"
    try:
        st = f.stat()
    except OSError:
        return None, None
    memo = (str(f.resolve()), st.st_mtime_ns, st.st_size)
    if memo not in _EVAL_MEMO:
        what = f"eval.json of {Path(path).name}"
        try:
            d = jsonread.read(f, what, max_bytes=EVAL_JSON_MAX_BYTES, expect=dict)
            sizes = d.get("sizes")
            if not isinstance(sizes, dict):
                raise jsonread.JSONReadError(f"{what} has no 'sizes' object (it holds {jsonread.kind_of(sizes)})")
            bad = next((k for k, rep in sizes.items() if not isinstance(rep, dict) or not _valid_summary(rep)), None)
            if bad is not None:
                raise jsonread.JSONReadError(f"{what}: sizes[{bad!r}] is not an evaluation report")
            _EVAL_MEMO[memo] = (d, None)
        except jsonread.JSONReadError as e:
            _EVAL_MEMO[memo] = (None, f"{e}; its numbers are not used")
    return _EVAL_MEMO[memo]


def read_eval_json(path: str | Path) -> dict | None:
    """The checkpoint's eval.json as a dict; None if absent or unusable (eval_json_problem says why)."""
    return _read_eval(path)[0]


def eval_json_problem(path: str | Path) -> str | None:
    """Why the checkpoint's eval.json cannot be used (too big, too deep, a duplicate key, not
    JSON, the wrong shape), or None."""
    return _read_eval(path)[1]


def eval_json_report(ref: CheckpointRef, spec: TaskSpec, settings: Settings) -> dict | None:
    """eval.json's report for `spec` when it answers this exact request, else None.

    It must be of this content (checkpoint_hash), seed and sampling settings, and its n for the size
    must equal settings.n; `python -m ds_core report` evaluates the fixed test sets."""
    d = read_eval_json(ref.path)
    if d is None or d.get("checkpoint_hash") != ref.hash or d.get("seed") != settings.seed:
        return None
    sampling = d.get("sampling") or {}
    want = settings.sampling_key()
    try:
        if any((sampling.get(k) if k in sampling else SAMPLING_DEFAULTS[k]) != v for k, v in want.items()):
            return None
    except TypeError:
        return None
    rep = d["sizes"].get(spec.name)
    if not isinstance(rep, dict) or rep.get("n") != settings.n:
        return None
    if task_name(spec, settings.n, settings.seed) != f"{spec.name}@test-v{TEST_SET_VERSION}":
        return None
    return rep


# --- rows ----------------------------------------------------------------------------------------
def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NAN
    return v


def report_row(rep: Mapping) -> dict:
    """A flat row from a CalibrationReport.to_dict() (the store's summary, eval.json's sizes[...])."""
    acc = rep.get("accuracy") or {}
    wald, wilson = acc.get("wald") or (None, None), acc.get("wilson") or (None, None)
    row = {
        "n": int(rep["n"]),
        "k": int(acc["k"]),
        "accuracy": _num(acc.get("p")),
        "wald_lo": _num(wald[0]),
        "wald_hi": _num(wald[1]),
        "wilson_lo": _num(wilson[0]),
        "wilson_hi": _num(wilson[1]),
    }
    for q in QUANTITIES:
        e = rep.get(q) or {}
        ci = e.get("ci") or (None, None)
        row[q], row[f"{q}_lo"], row[f"{q}_hi"] = _num(e.get("value")), _num(ci[0]), _num(ci[1])
        if q in ("p_s", "p_dC", "p_dW"):
            row[f"{q}_k"], row[f"{q}_n"] = e.get("k"), e.get("n")
    row["mean_attempts"] = _num(rep.get("mean_attempts"))
    row["malformed"] = _num(rep.get("malformed_fraction"))
    return row


def _valid_summary(rep) -> bool:
    try:
        report_row(rep)
        return True
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return False


COLUMNS = (
    [
        "checkpoint",
        "size",
        "source",
        "in_distribution",
        "n",
        "k",
        "accuracy",
        "wald_lo",
        "wald_hi",
        "wilson_lo",
        "wilson_hi",
    ]
    + [f"{q}{s}" for q in QUANTITIES for s in ("", "_lo", "_hi")]
    + [
        "p_s_k",
        "p_s_n",
        "p_dC_k",
        "p_dC_n",
        "p_dW_k",
        "p_dW_n",
        "mean_attempts",
        "malformed",
        "paper_condition",
        "paper_accuracy",
        "hash",
        "path",
        "run",
    ]
)


@dataclass(frozen=True)
class Grid:
    """The (checkpoint, size) grid of one request. `frame` has one row per cell (COLUMNS)."""

    refs: tuple[CheckpointRef, ...]
    sizes: tuple[str, ...]
    settings: Settings
    frame: pd.DataFrame = field(compare=False)
    missing: tuple[tuple[str, str], ...]  # (checkpoint label, size) of cells with no numbers
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        vc = self.frame["source"].value_counts() if len(self.frame) else {}
        return {s: int(vc.get(s, 0)) for s in SOURCES}


def gather(
    refs: Sequence[CheckpointRef],
    sizes: Sequence[TaskSpec],
    settings: Settings,
    store: ResultsStore | None,
    computed: Iterable[str] = (),
) -> Grid:
    """Every cell's numbers from the store, else eval.json, else a 'missing' row. Loads no model.

    A store that fails while reading is noted (`notes`) and the rest is served from eval.json."""
    computed = set(computed)
    rows, missing, notes = [], [], []
    for ref in refs:
        stored: dict[str, object] = {}
        if store is not None:
            try:
                stored = {r.digest: r for r in store.list_runs(ref.hash)}
            except StoreError as e:
                notes.append(f"results store unreadable, serving eval.json only: {e}")
                store = None
        for spec in sizes:
            key = run_key_for(ref.hash, spec, settings, ref.fmt_key)
            digest = key.digest()
            rec = stored.get(digest)
            base = {
                "checkpoint": ref.label,
                "size": spec.name,
                "in_distribution": spec.name in TRAIN_SIZES,
                "paper_condition": ref.paper_condition,
                "hash": ref.hash,
                "path": ref.path,
                "run": digest[:12],
            }
            paper = TABLE1.get(ref.paper_condition or "")
            base["paper_accuracy"] = (
                paper[PAPER_SIZES.index(spec.name)] / 100 if paper and spec.name in PAPER_SIZES else NAN
            )
            if rec is not None and _valid_summary(rec.summary):
                rows.append(
                    {**base, **report_row(rec.summary), "source": "computed" if digest in computed else "store"}
                )
                continue
            if rec is not None:
                notes.append(f"{ref.label} {spec.name}: stored run {digest[:12]} has no usable summary; recompute it")
            rep = eval_json_report(ref, spec, settings) if ref.fmt_key is None else None  # default prompts only
            if rep is not None and _valid_summary(rep):
                rows.append({**base, **report_row(rep), "source": "eval.json"})
                continue
            rows.append({**base, "source": "missing", "n": settings.n})
            missing.append((ref.label, spec.name))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS:
        if c not in (
            "checkpoint",
            "size",
            "source",
            "in_distribution",
            "paper_condition",
            "hash",
            "path",
            "run",
            "n",
            "k",
            "p_s_k",
            "p_s_n",
            "p_dC_k",
            "p_dC_n",
            "p_dW_k",
            "p_dW_n",
        ):
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    for c in ("n", "k", "p_s_k", "p_s_n", "p_dC_k", "p_dC_n", "p_dW_k", "p_dW_n"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("Int64")
    return Grid(tuple(refs), tuple(s.name for s in sizes), settings, frame, tuple(missing), tuple(dict.fromkeys(notes)))
