"""Calibration: accuracy per size (Table 1) and the calibration model p_s, p_d|C, p_d|W with the
predicted accuracy (Figures 2-3), for any checkpoints, served from the results store.

Pages only draw: the numbers come from ui.services.calibration (the frames shown from
ui.services.calibration_views), the charts from ui.charts.calibration.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run as a page or alone (AppTest): ds_core and ui live in the repo root
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from ds_core.analysis.decisions import DEFAULT_N  # noqa: E402
from ds_core.engine.engines import where_computed  # noqa: E402
from ds_core.models.checkpoint import CheckpointError  # noqa: E402
from ds_core.paper import LABELS  # noqa: E402
from ds_core.store import StoreError  # noqa: E402
from ds_core.training import lab_index  # noqa: E402
from ui.charts.calibration import accuracy_figure, calibration_figure, predicted_observed_figure  # noqa: E402
from ui.charts.regret import regret_figure  # noqa: E402
from ui.common import (  # noqa: E402
    add_user_checkpoint,
    chart,
    checkpoint_choices,
    get_checkpoint,
    max_tokens_input,
    pick_checkpoints,
    results_store,
    table,
    text_format_inputs,
    user_errors,
)
from ui.services.calibration import (
    MAX_N,
    MAX_SEED,
    CheckpointRef,
    Settings,
    checkpoint_ref,
    eval_json_problem,
    gather,
    parse_size_list,
)
from ui.services.calibration_compute import compute_missing, measured_seconds, missing_episodes
from ui.services.calibration_regret import percent_regret, regret_command, regret_grid
from ui.services.calibration_views import (
    calibration_long,
    figure2_reading,
    paper_frame,
    percent_view,
    predicted_observed,
    table1_frame,
)
from ui.services.timings import seconds_text
from ui.views.calibration_lab import lab_section

SHIPPED = ("base", "sft", "sft_reflection", "rl")
COMPUTED = "cal_computed"  # session_state: run digests sampled in this session

PROBABILITY_COLUMNS = (
    "value",
    "lo",
    "hi",
    "predicted",
    "predicted_lo",
    "predicted_hi",
    "observed",
    "observed_lo",
    "observed_hi",
    "predicted_minus_observed",
)


def _percent(df) -> dict:
    """Show probabilities as % on screen; the CSV keeps them as fractions (0..1)."""
    return {c: st.column_config.NumberColumn(c, format="percent") for c in df.columns if c in PROBABILITY_COLUMNS}


st.set_page_config(page_title="Calibration · DS-Lens", layout="wide")
st.title("Calibration")
st.markdown(
    "Accuracy per size with the paper's 95% Wald intervals (**Table 1**), and the calibration model "
    "of section 4.2: **p_s** = P(an attempt is correct), **p_d|C** = P(STOP | correct), "
    "**p_d|W** = P(RESAMPLE | wrong), and the accuracy they predict, "
    "p_s·p_d|C / (1 − [p_s(1 − p_d|C) + (1 − p_s)·p_d|W]), against the observed one "
    "(**Figures 2–3**, bootstrap 95% intervals: 100 resamples of the episodes). Training sizes: "
    "3x3, 3x4; 3x5..3x9 are out of distribution, and so is anything smaller (2x2, 1x1: the shipped "
    "checkpoints never trained on it)."
)

# --- controls ------------------------------------------------------------------------------------
PENDING = "cal_pending_ckpt"  # session_state: a checkpoint label to add to the picker
if PENDING in st.session_state:  # applied before the picker exists (Streamlit's rule)
    st.session_state["cal_ckpts"] = list(
        dict.fromkeys([*st.session_state.get("cal_ckpts", []), st.session_state.pop(PENDING)])
    )

c1, c2 = st.columns([3, 2])
paths = pick_checkpoints("Checkpoints", key="cal_ckpts", default=SHIPPED, container=c1)
sizes_text = c2.text_input(
    "Sizes",
    value="3x3-3x9",
    key="cal_sizes",
    help="A range like '3x3-3x9' or a list like '3x3, 3x5, 3x10' (at most 16 sizes, 1..12 digits a side).",
)
c3, c4, c5, c6 = st.columns(4)
n = int(
    c3.number_input(
        "Problems per size (n)",
        min_value=1,
        max_value=MAX_N,
        value=100,
        step=10,
        key="cal_n",
        help="n ≤ 100 on 3x3..3x9: the first n problems of the fixed "
        "test set; otherwise n problems sampled with the seed.",
    )
)
seed = int(c4.number_input("Seed", min_value=0, max_value=MAX_SEED, value=0, step=1, key="cal_seed"))
temperature = float(c5.number_input("Temperature", min_value=0.0, max_value=5.0, value=1.0, step=0.1, key="cal_temp"))
max_new = max_tokens_input("cal", c6)
fmt = text_format_inputs("cal")
interval = c6.radio("Accuracy interval", ["Wald (paper)", "Wilson"], key="cal_interval", horizontal=True)
interval_key = "wald" if interval.startswith("Wald") else "wilson"

with st.expander("Add a local checkpoint directory"):
    new_dir = st.text_input(
        "Checkpoint directory (any Hugging Face causal LM)", key="cal_new_dir", placeholder="/path/to/model_dir"
    )
    if st.button("Add checkpoint", key="cal_add"):
        p = Path(new_dir.strip()).expanduser()
        if not new_dir.strip() or not p.is_dir() or not (p / "config.json").is_file():
            st.error(f"{p} is not a checkpoint directory (it needs a config.json).")
        else:
            with user_errors("Not added"):
                add_user_checkpoint(str(p))
                st.session_state[PENDING] = next(k for k, v in checkpoint_choices().items() if v == str(p))
                st.rerun()

# --- the grid ------------------------------------------------------------------------------------
if not paths:
    st.info("Choose at least one checkpoint.")
    st.stop()

grid = None
with user_errors("Cannot show this request"):
    sizes = parse_size_list(sizes_text)
    settings = Settings(n=n, seed=seed, temperature=temperature, max_new_tokens=max_new)
    labels = {v: k for k, v in checkpoint_choices().items()}
    refs: list[CheckpointRef] = []
    for p in paths:
        try:
            refs.append(checkpoint_ref(labels.get(p, Path(p).name), p, fmt))
        except CheckpointError as e:
            st.warning(f"Skipped {p}: {e}")
    for ref in refs:
        if (why := eval_json_problem(ref.path)) is not None:
            st.warning(why)  # its runs are computed instead
    store = None
    try:
        store = results_store()
    except StoreError as e:
        st.warning(
            f"The results store cannot be opened ({e}). Showing the checkpoints' eval.json "
            "numbers only; computing is off until the store works."
        )
    computed = st.session_state.setdefault(COMPUTED, set())
    grid = gather(refs, sizes, settings, store, computed)
if grid is None:
    st.stop()
for note in grid.notes:
    st.warning(note)

if grid.missing:
    todo = missing_episodes(grid)
    secs, untimed = measured_seconds(grid, store)
    if secs is not None:
        cost = f"{seconds_text(secs)} on this machine, from the store's timings of earlier runs"
    else:
        cost = (
            f"no estimate: {', '.join(untimed)} {'has' if len(untimed) == 1 else 'have'} no timed run in the "
            "store yet (the first run is timed and estimates use it)"
        )
    notice = st.empty()
    notice.info(
        f"{len(grid.missing)} of {len(grid.frame)} cells have no results for these settings "
        f"({todo} episodes to sample; {cost}). They are stored, so this happens once; changing a control "
        f"while it runs stops it (finished sizes are kept). Sampled {where_computed()}."
    )
    if st.button("Compute missing runs", type="primary", key="cal_compute", disabled=store is None):
        bar = st.progress(0.0, text="Loading checkpoints…")
        last = [-1]

        def on_progress(done: int, total: int, label: str) -> None:
            pct = int(100 * done / max(total, 1))
            if pct != last[0]:
                last[0] = pct
                bar.progress(min(pct, 100) / 100, text=f"Sampling {label}: {done}/{total} episodes")

        with user_errors("Computing the missing runs"):
            t0 = time.perf_counter()
            digests = compute_missing(grid, get_checkpoint, store, on_progress)
            st.session_state[COMPUTED] = computed | digests
            grid = gather(refs, sizes, settings, store, st.session_state[COMPUTED])
            bar.empty()
            notice.success(f"Computed and stored {len(digests)} runs in {time.perf_counter() - t0:.1f} s.")

counts = grid.counts()
st.caption(
    " · ".join(f"{v} missing" if k == "missing" else f"{v} from {k}" for k, v in counts.items() if v)
    + f" ({len(grid.frame)} "
    "cells). Sources: **store** = the results store "
    f"(`{store.path if store else 'unavailable'}`), **computed** = sampled in this session "
    "and stored, **eval.json** = the checkpoint's own eval.json (written by `python -m "
    "ds_core report`; read, not imported, and used only when its content hash, seed, n and "
    "sampling settings match), **missing** = not computed yet."
)

frame = grid.frame
size_names = list(grid.sizes)

# --- Table 1 -------------------------------------------------------------------------------------
st.subheader("Accuracy (Table 1)")
matching = [r.paper_condition for r in grid.refs if r.paper_condition]
paper_rows = st.multiselect(
    "Paper reference rows (Zhao et al. 2026, Table 1)",
    list(LABELS),
    format_func=LABELS.get,
    default=list(dict.fromkeys(matching)),  # no key: follows the chosen checkpoints
    help="The paper's numbers: Qwen2.5-7B-Instruct under the authors' SFT/RL, n = 100, 3x3..3x9 "
    "only. A different model and training; compare the shapes, not the values.",
)
paper_rows = [c for c in LABELS if c in paper_rows]  # the paper's order
st.caption(
    "Rows named after a checkpoint are DS-Lens measurements: accuracy % "
    f"({'Wald' if interval_key == 'wald' else 'Wilson'} 95% interval). Rows 'paper: …' are "
    "the paper's published accuracy % (a 7B model; not our conditions). Blank: missing."
)
table(table1_frame(frame, paper_rows, interval_key, size_names), "calibration_table1", key="cal_dl_table1")
chart(
    accuracy_figure(frame, paper_frame(paper_rows, size_names), interval_key, size_names),
    "calibration_accuracy_vs_size",
    key="cal_chart_acc",
)

# --- Figure 2 ------------------------------------------------------------------------------------
st.subheader("p_s, p_d|C, p_d|W vs size (Figure 2)")
st.caption(
    "p_s: first attempts. p_d|C and p_d|W pool every attempt followed by a decision; a "
    "gap means undefined (no correct, or no wrong, attempt at that size)."
)
for line in figure2_reading(frame):
    st.markdown(line)
long = calibration_long(frame)
chart(calibration_figure(long, size_names), "calibration_figure2", key="cal_chart_fig2")
table(long, "calibration_p_s_p_dC_p_dW", key="cal_dl_fig2", column_config=_percent(long))

# --- Figure 3 ------------------------------------------------------------------------------------
st.subheader("Predicted vs observed accuracy (Figure 3)")
st.caption(
    "Predicted: the limit of unbounded independent retries given p_s, p_d|C, p_d|W; "
    "observed: the final answer's accuracy with the retry cap. Points on the dotted line "
    "agree. A point is missing where the prediction is undefined."
)
po = predicted_observed(frame)
chart(predicted_observed_figure(po), "calibration_predicted_vs_observed", key="cal_chart_fig3")
table(po, "calibration_predicted_vs_observed", key="cal_dl_fig3", column_config=_percent(po))

# --- decision regret -----------------------------------------------------------------------------
st.subheader("What the decisions cost (decision regret)")
st.caption(
    "**own** = the episodes' accuracy; **optimal** = the accuracy of the same attempts with every verdict "
    "the Q-optimal one (keep a correct attempt, revise a wrong one; where the model kept a wrong attempt, "
    f"the revision is continued {DEFAULT_N} times with optimal verdicts); **regret** = optimal − own = "
    "**wrong kept** + **correct revised**; **no save**: the share of all episodes that were kept wrong "
    "and that no optimal "
    "continuation saved (the sampling policy's limit, not the decision's). Bootstrap 95% over episodes. "
    "Source: **store** (`python -m ds_core decisions`), **shipped** (ds_core/data/decisions_v1.json, "
    "computed on this checkpoint's content with these settings) or **missing**."
)
regret, regret_notes = regret_grid(grid.refs, sizes, settings, store)
for note in regret_notes:
    st.warning(note)
chart(regret_figure(regret, size_names), "calibration_decision_regret", key="cal_chart_regret")
table(percent_regret(regret), "calibration_decision_regret", key="cal_dl_regret")
todo_refs = [r for r in grid.refs if (regret[regret["checkpoint"] == r.label]["source"] == "missing").any()]
if todo_refs:
    st.info(
        "Missing regret cells are computed by the command line (a full run, 7 sizes x 100 problems with "
        f"{DEFAULT_N} continuations per decision, takes tens of minutes on a CPU) and then show here:"
    )
    missing_sizes = {
        r.label: list(regret[(regret["checkpoint"] == r.label) & (regret["source"] == "missing")]["size"])
        for r in todo_refs
    }
    st.code("\n".join(regret_command(r, missing_sizes[r.label], settings) for r in todo_refs), language="bash")

with st.expander("All numbers (per checkpoint and size, %)"):
    table(percent_view(frame), "calibration_all", key="cal_dl_all")

# --- the DS lab ----------------------------------------------------------------------------------
lab_section(lab_index.LAB_DIR)
