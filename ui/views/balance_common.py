"""What the Gradient balance page's three views share: cached service calls, the shipped
precompute, a stored-or-compute block, number formatting and errors as messages."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pandas as pd
import streamlit as st

import ds_core.analysis.balance.dataset as BD
import ds_core.analysis.balance.length_sweep as BS
import ds_core.analysis.balance.shipped as B
import ds_core.analysis.toy_sweeps as BT
from ds_core.analysis.balance.results import BalanceError
from ds_core.analysis.toy import ToyConfig
from ds_core.engine.engines import app_engine, where_computed
from ds_core.models.checkpoint import content_hash
from ds_core.objectives import LABELS
from ds_core.paths import SHIPPED_DIR
from ui.charts import balance as C
from ui.charts import balance_toy as CT
from ui.common import results_store, user_errors
from ui.services.timings import estimate_text, record


@contextlib.contextmanager
def errors(what: str):
    """user_errors, plus bad settings (BalanceError, ToyConfig's ValueError) as a message."""
    with user_errors(what):
        try:
            yield
        except ValueError as e:
            st.error(f"{what}: {e}")


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


SWEEP_STATES = 30  # recorded toy steps re-evaluated per L in the "same states" sweep
DEMOS = {
    "reflection traces (0/1/2 wrong attempts: 0.4/0.4/0.2)": BT.REFLECTION_DEMOS,
    "one correct attempt (SFT without reflection)": BT.SINGLE_DEMOS,
}


@st.cache_data(show_spinner=False, max_entries=64)
def toy(cfg_items: tuple, demo: tuple) -> BT.ToyView:
    return BT.toy_view(ToyConfig(**dict(cfg_items)), demo)


@st.cache_data(show_spinner=False, max_entries=64)
def toy_sweep(cfg_items: tuple, lengths: tuple, mode: str, demo: tuple) -> pd.DataFrame:
    return BT.toy_length_sweep(
        ToyConfig(**dict(cfg_items)), lengths, mode=mode, demo_wrong=demo, max_states=SWEEP_STATES
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def fig1(cfg_items: tuple, demo: tuple, log_abs: bool):
    return CT.figure1(toy(cfg_items, demo).frame, log_abs=log_abs)


@st.cache_resource(show_spinner=False, max_entries=32)
def policy_fig(cfg_items: tuple, demo: tuple):
    return CT.toy_policy_fig(toy(cfg_items, demo).frame)


@st.cache_data(show_spinner=False, max_entries=4)
def shipped(path: str, mtime: float) -> B.Shipped:
    return B.load_shipped(path)


@st.cache_data(show_spinner=False, max_entries=32)
def stored_dataset(
    path: str, digest: str, sizes: str, n: int, objectives: tuple, seed: int = 0, cfg: tuple = (), fmt: tuple = ()
):
    """The stored dataset result for these settings: `cfg` SamplingConfig's fields in order (()
    the defaults), `fmt` the page's prompt settings (ui.common.text_format_inputs)."""
    from ds_core.models.device import current_placement
    from ui.services.calibration import checkpoint_ref

    extra = BD.run_key_extra(checkpoint_ref(path, path, fmt).fmt_key if fmt else None, current_placement())
    return BD.stored_dataset(results_store(), path, sizes, n, objectives, seed, sampling_of(cfg), extra)


def sampling_of(cfg: tuple):
    from ds_core.models.sampling import SamplingConfig

    return SamplingConfig(*cfg)


@st.cache_data(show_spinner=False, max_entries=32)
def stored_sweep(path: str, digest: str, sizes: str, per_size: int, n_wrong: int, objectives: tuple):
    return BS.stored_length_sweep(results_store(), path, sizes, per_size, n_wrong, objectives)


@st.cache_data(show_spinner=False, max_entries=16)
def sweep_figure(frame: pd.DataFrame, metric: str):
    return C.sweep_fig(frame, metric=metric, labels=LABELS)


@st.cache_data(show_spinner=False, max_entries=16)
def dataset_figure(frame: pd.DataFrame, metric: str, kind: str, facet: str, colour: str):
    return C.dataset_fig(
        frame,
        metric=metric,
        kind=kind,
        facet=None if facet == "none" else facet,
        colour=None if colour == "none" else colour,
        labels=LABELS,
    )


def progress_bar(text: str):
    bar = st.progress(0.0, text=text)
    return lambda f, t: bar.progress(min(max(float(f), 0.0), 1.0), text=t)


def stored_or_compute(read, compute, cached, key: str, what: str, timing: tuple):
    """The stored result (read()), or a button that computes it with a progress bar and stores it
    (compute(progress, engine): on the Ray cluster at $DS_LENS_RAY_ADDRESS when set, else engine
    None); `cached` is the st.cache_data reader to clear once stored. `timing` =
    (kind, checkpoint hash, units, unit name): the estimate shown is measured on this machine
    (ui.services.timings), and the run's own time is recorded for the next one."""
    kind, digest, units, unit_name = timing
    res = read()
    if res is None:
        st.info(
            f"Not in the results store yet. {estimate_text(kind, digest, units, unit_name)} "
            f"Computed {where_computed()}."
        )
        if st.button("Compute and store", key=key):
            with app_engine() as engine:
                res = compute(progress_bar(what), engine)
            cached.clear()
            if res.n_computed:
                record(kind, digest, res.wall_s, res.n_computed)
            st.success(
                f"Computed {res.n_computed} attributions ({res.n_cached} from the "
                f"attribution cache) in {res.wall_s:.1f} s; stored."
            )
    else:
        st.caption(f"From the results store (`{results_store().path}`).")
    for note in res.notes if res is not None else ():
        st.caption(note)
    return res


def load_shipped_or_none() -> B.Shipped | None:
    p = B.SHIPPED_FILE
    try:
        return shipped(str(p), p.stat().st_mtime if p.is_file() else 0.0)
    except BalanceError as e:
        st.warning(f"Shipped precompute unavailable: {e}")
        return None


def shipped_caption(sh: B.Shipped, part: str) -> None:
    meta = sh.meta
    hashes = {}
    for name in meta.get("checkpoints", {}):
        d = SHIPPED_DIR / name
        if (d / "config.json").is_file():
            hashes[name] = content_hash(d)
    stale = sh.stale(hashes)
    st.caption(
        f"**Shipped precompute** (`ds_core/data/{Path(sh.path).name}`, written "
        f"{meta.get('created', '?')} by `{meta.get('command', '?')}`, code "
        f"{meta.get('code_version', '?')}); settings: `{meta.get(part, {})}`. Choose *compute / results "
        "store* to compute other settings or checkpoints."
    )
    if stale:
        st.warning(
            f"The shipped numbers for {', '.join(stale)} were computed from a different "
            "version of that checkpoint (content hash changed): recompute below or rerun "
            "`python -m ds_core balance precompute`."
        )


def objective_label(o: str) -> str:
    return LABELS.get(o, o)
