"""The app shell: cached checkpoints and store, checkpoint pickers, user-error handling, downloads.

Every page imports this module. Models are cached with `st.cache_resource` (one copy per server,
shared by all browser sessions, keyed by path and content hash so a rewritten checkpoint reloads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from ds_core.errors import UserError
from ds_core.models.checkpoint import Checkpoint, CheckpointError, content_hash, find_checkpoints, load_checkpoint
from ds_core.models.real_model import models_dir
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore, default_data_dir, jsonread
from ds_core.store.csvio import to_csv
from ds_core.training import lab_index
from ds_core.training.lab_index import lab_runs
from ui.services.explorer import MAX_ATTEMPTS as MAX_PAGE_ATTEMPTS  # the pages' cap on the retry cap

log = logging.getLogger("ds_lens.app")

# how to read a transcript of the shipped checkpoints (every page that shows one says it)
DS_FORMAT_NOTE = (
    "Transcripts of the shipped checkpoints write numbers least-significant digit first: `123*7654` "
    "is 321 × 4567 and an answer `88065` is 56088; an attempt ends with its check "
    "`#R(a)*R(b)>p,R(answer)`, then `[STOP]` or `[RESAMPLE]`."
)
USER_CHECKPOINTS = "user_checkpoints"  # st.session_state key: list[str] of extra checkpoint dirs
USER_CHECKPOINTS_FILE = "user_checkpoints.json"  # the same list, kept in the data directory

# Errors a user can cause (ds_core.errors.UserError, and undecodable text) are shown as a
# message, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, UnicodeDecodeError)


# --- cached resources --------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store_at(path: str) -> ResultsStore:
    return ResultsStore(path)


def results_store() -> ResultsStore:
    """The results store at $DS_LENS_DATA (or ./data), one connection pool per location."""
    return _store_at(str(default_data_dir()))


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(path: str, digest: str) -> Checkpoint:
    return load_checkpoint(path)


def get_checkpoint(path: str | Path) -> Checkpoint:
    """The loaded checkpoint at `path` (cached; reloaded when its content hash changes).
    Raises CheckpointError for a path that is not a loadable checkpoint."""
    p = Path(path).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise CheckpointError(f"{p} is not a checkpoint directory (it needs a config.json)")
    return _load(str(p.resolve()), content_hash(p))


# --- checkpoint choices ------------------------------------------------------------------------
def checkpoint_choices() -> dict[str, str]:
    """Label -> directory for the shipped checkpoints, the models built under $DS_LENS_DATA/models
    (`make real-model`), the ones the user added on Home, then the DS lab's runs with weights
    (labelled lab/<condition>, other seeds after seed 0 as "lab/<condition> · seed N")."""
    out = {p.name: str(p) for p in find_checkpoints(SHIPPED_DIR)}
    for p in find_checkpoints(models_dir()):
        out.setdefault(p.name, str(p))
    for extra in user_checkpoints():
        label = Path(extra).name
        while label in out and out[label] != extra:
            label = f"{label}'"
        out[label] = extra
    for run in lab_runs(lab_index.LAB_DIR):  # last: ten conditions must not push the others out of view
        if run.has_weights:
            out.setdefault(run.label, str(run.path))
    return out


def _user_file() -> Path:
    return default_data_dir() / USER_CHECKPOINTS_FILE


def user_checkpoints() -> list[str]:
    """The directories the user added (this session's list; a new session starts from the list
    kept in the data directory, without the directories that have gone)."""
    if USER_CHECKPOINTS not in st.session_state:
        kept: list[str] = []
        try:
            doc = jsonread.read(_user_file(), expect=list) if _user_file().is_file() else []
            kept = [p for p in doc if isinstance(p, str) and Path(p).is_dir()]
        except jsonread.JSONReadError as e:
            log.warning("ignoring %s: %s", _user_file(), e)
        st.session_state[USER_CHECKPOINTS] = kept
    return st.session_state[USER_CHECKPOINTS]


def _save_user_checkpoints() -> None:
    try:  # kept for the next session; a read-only data directory keeps them for this one only
        _user_file().parent.mkdir(parents=True, exist_ok=True)
        _user_file().write_text(json.dumps(user_checkpoints(), indent=1) + "\n")
    except OSError as e:
        log.warning("cannot keep the added checkpoints in %s: %s", _user_file(), e)


def add_user_checkpoint(path: str) -> None:
    """Add a checkpoint directory for every page, after loading it (the loader's refusals, as a
    CheckpointError, before anything is added); kept in the data directory across sessions."""
    get_checkpoint(path)
    lst = user_checkpoints()
    if path not in lst:
        lst.append(path)
        _save_user_checkpoints()


def remove_user_checkpoint(path: str) -> None:
    lst = user_checkpoints()
    if path in lst:
        lst.remove(path)
        _save_user_checkpoints()


def pick_checkpoint(label: str, key: str, default: str = "rl", container=st) -> str | None:
    """A selectbox over checkpoint_choices(); returns the chosen directory (None if none exist)."""
    choices = checkpoint_choices()
    if not choices:
        container.info(f"No checkpoints found under {SHIPPED_DIR}.")
        return None
    names = list(choices)
    idx = names.index(default) if default in names else 0
    name = container.selectbox(label, names, index=idx, key=key)
    return choices[name]


def pick_checkpoints(
    label: str, key: str, default: tuple[str, ...] = ("sft_reflection", "rl"), container=st
) -> list[str]:
    choices = checkpoint_choices()
    names = list(choices)
    chosen = container.multiselect(label, names, default=[n for n in default if n in names] or names[:2], key=key)
    return [choices[n] for n in chosen]


# --- sampling settings ---------------------------------------------------------------------------


def sampling_inputs(prefix: str, columns) -> tuple[float, float, int, int]:
    """The sampling controls every sampling page shows, in four containers: temperature, top-p,
    retry cap and seed (widget keys `{prefix}_temp`, `_top_p`, `_attempts`, `_seed`). Returns
    (temperature, top_p, max_attempts, seed); ds_core.models.sampling.SamplingConfig validates them."""
    c_t, c_p, c_m, c_s = columns
    temperature = c_t.number_input(
        "Temperature", 0.0, 5.0, 1.0, 0.1, key=f"{prefix}_temp", help="1.0 as in the paper; 0 = greedy"
    )
    top_p = c_p.number_input("Top-p", 0.05, 1.0, 1.0, 0.05, key=f"{prefix}_top_p")
    max_attempts = c_m.number_input(
        "Max attempts",
        1,
        MAX_PAGE_ATTEMPTS,
        4,
        1,
        key=f"{prefix}_attempts",
        help="retry cap: [RESAMPLE] after this many attempts ends the episode",
    )
    seed = c_s.number_input("Seed", 0, 2**31 - 1, 0, 1, key=f"{prefix}_seed")
    return float(temperature), float(top_p), int(max_attempts), int(seed)


def max_tokens_input(prefix: str, container) -> int | None:
    """A cap on an episode's generated tokens (widget key `{prefix}_max_new`); 0 keeps the
    format's budget (DS-Lens' own format: from the problem; text models: 256 per attempt). Returns
    None for no cap."""
    n = container.number_input(
        "Max new tokens (0: the format's budget)",
        0,
        100_000,
        0,
        32,
        key=f"{prefix}_max_new",
        help="caps the whole episode; a capped episode is flagged 'truncated'. Text models at temperature 1 "
        "can write until the budget (256 tokens per attempt): a cap keeps a run short",
    )
    return int(n) or None


def text_format_inputs(prefix: str) -> tuple:
    """The prompt and marker settings of a text-format checkpoint (any LM without DS-Lens'
    [STOP]/[RESAMPLE] tokens), in a collapsed expander. Returns the changed settings as sorted
    (name, value) pairs for ds_core.episodes.text_format.customized; () when all are the defaults."""
    from ds_core.episodes.roles import DEFAULT_RESAMPLE_MARKERS  # imports transformers: only on this page
    from ds_core.episodes.text_format import SYSTEM_PROMPT, USER_TEMPLATE

    defaults = {
        "system": SYSTEM_PROMPT,
        "instruction": USER_TEMPLATE,
        "resample_markers": ", ".join(DEFAULT_RESAMPLE_MARKERS),
    }
    with st.expander("Prompt and markers (text-format checkpoints: chat and other natural-language models)"):
        st.caption(
            "Used only by checkpoints without [STOP]/[RESAMPLE] tokens. The instruction is the user message of a "
            "chat model (or the whole prompt of a plain one): {a}, {b}, {word} and {op} are the problem."
        )
        got = {
            "system": st.text_area("System prompt (empty: none)", defaults["system"], key=f"{prefix}_fmt_system"),
            "instruction": st.text_input("Instruction", defaults["instruction"], key=f"{prefix}_fmt_instruction"),
            "resample_markers": st.text_input(
                "Resample markers (comma-separated)", defaults["resample_markers"], key=f"{prefix}_fmt_markers"
            ),
        }
    return tuple(sorted((k, v) for k, v in got.items() if v != defaults[k]))


# --- errors ------------------------------------------------------------------------------------
@contextlib.contextmanager
def user_errors(what: str = ""):
    """Show a user-caused error as a message (no traceback); unexpected ones are logged and shown
    as one line too, so the page keeps working."""
    try:
        yield
    except USER_ERRORS as e:
        st.error(f"{what}{': ' if what else ''}{e}")
    except (StopException, RerunException):  # st.stop() / st.rerun() pass through
        raise
    except Exception as e:  # noqa: BLE001 - the app must not show a traceback
        log.exception("unexpected error")
        st.error(
            f"{what}{': ' if what else ''}unexpected error ({type(e).__name__}: {e}); see the server log for details"
        )


# --- downloads and charts ----------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "table"


def table(df: pd.DataFrame, name: str, key: str | None = None, container=st, **kw) -> None:
    """A dataframe with a CSV download button under it."""
    container.dataframe(df, hide_index=True, width="stretch", **kw)
    container.download_button(
        f"Download {name} (CSV)",
        to_csv(df).encode(),  # formula-leading cells neutralised (ds_core.store.csvio)
        file_name=f"{_slug(name)}.csv",
        mime="text/csv",
        key=key or f"dl_{_slug(name)}",
    )


def chart(fig, name: str, key: str | None = None, container=st) -> None:
    """A plotly chart; its mode bar's camera button downloads a PNG named after the chart."""
    container.plotly_chart(
        fig,
        width="stretch",
        key=key or f"chart_{_slug(name)}",
        config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": _slug(name), "scale": 2}},
    )
