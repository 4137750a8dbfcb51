"""Custom prompts: run one or more checkpoints on your own problems (upload or paste), see what each
one answered, how many attempts it took and which decisions (STOP / RESAMPLE) it made.

Pages only draw: reading and parsing live in ui.services.custom_prompts_upload, running in
ui.services.custom_prompts_run.
"""

from __future__ import annotations

import time

import streamlit as st

from ds_core.episodes.tasks import EXAMPLE_PROMPTS
from ui.common import (
    DS_FORMAT_NOTE,
    chart,
    get_checkpoint,
    pick_checkpoints,
    results_store,
    sampling_inputs,
    table,
    text_format_inputs,
    user_errors,
)
from ui.services.custom_prompts_run import run_prompts
from ui.services.custom_prompts_upload import (
    MAX_BYTES,
    MAX_ROWS,
    errors_frame,
    parse_rows,
    preview_frame,
    read_text,
    read_upload,
)
from ui.services.episodes import with_prompt_settings

st.set_page_config(page_title="Custom prompts · DS-Lens", layout="wide")

DEFAULT_TEXT = "\n".join(
    ["123*456", "123 x 4567", "What is 321 times 654?", "987 × 65432 =", "123*4567890", "what is the meaning of life?"]
)
SHOW = ("all rows", "wrong answers", "rows that resampled", "rows with flags")
RESULT_KEY = "cp_result"


@st.cache_data(show_spinner=False, max_entries=16)
def _read_upload(name: str, data: bytes):
    prompts = read_upload(name, data)
    return prompts, *parse_rows(prompts)


@st.cache_data(show_spinner=False, max_entries=16)
def _read_text(text: str):
    prompts = read_text(text)
    return prompts, *parse_rows(prompts)


st.title("Custom prompts")
st.markdown(
    "Run checkpoints on **your own problems** and see, row by row, the answer, the number of "
    "attempts, the decision sequence (`[STOP]` keeps an answer, `[RESAMPLE]` tries again) and the "
    "**decision share** (decision tokens / generated tokens: the few tokens the decision policy "
    "writes). Accepted forms: "
    + ", ".join(f"`{e}`" for e in EXAMPLE_PROMPTS)
    + "; operands of 1 to 12 digits. The shipped checkpoints were trained on multiplication only "
    "(3x3 and 3x4 in distribution)."
)
st.caption(
    f"Limits: {MAX_BYTES // 1_000_000} MB and {MAX_ROWS} non-empty rows per input. CSV: the `prompt` "
    "column (without one, the first column), optional `expected` column; JSONL: one object per line "
    "with a `prompt` key; TXT: one problem per line. Text must be UTF-8. Rows that do not parse are "
    "listed with the reason; the other rows run."
)

c_up, c_text = st.columns(2)
uploaded = c_up.file_uploader(
    f"Upload prompts (CSV, JSONL or TXT; at most {MAX_BYTES // 1_000_000} MB, {MAX_ROWS} rows)",
    key="cp_upload",  # no `type=`: any file reaches our reader, which refuses binary files with a message
    help="Format from the extension (.csv/.tsv, .jsonl/.ndjson, .json, .txt); other names are sniffed.",
)
pasted = c_text.text_area(
    "…or paste prompts, one per line (used when no file is uploaded)", value=DEFAULT_TEXT, height=170, key="cp_text"
)

prompts = parsed = None
errors = ()
with user_errors("Cannot read the input"):
    if uploaded is not None:
        prompts, parsed, errors = _read_upload(uploaded.name, uploaded.getvalue())
    elif pasted.strip():
        prompts, parsed, errors = _read_text(pasted)
    else:
        st.info("Upload a file or paste prompts to start.")

st.subheader("Checkpoints and sampling")
c1, c2, c3, c4, c5 = st.columns([3, 1, 1, 1, 1])
ckpt_paths = pick_checkpoints("Checkpoints", key="cp_ckpts", container=c1)
temperature, top_p, max_attempts, seed = sampling_inputs("cp", (c2, c3, c4, c5))
fmt = text_format_inputs("cp")

if prompts is not None:
    st.write(
        f"**{prompts.source}** ({prompts.fmt}): {prompts.n_rows} row(s) read, "
        f"**{len(parsed)}** will run, {len(errors)} cannot (listed below)."
    )
    for note in prompts.notes:
        st.info(note)
    if errors:
        with st.expander(f"Rows that do not parse ({len(errors)})", expanded=True):
            table(errors_frame(errors), "rows that do not parse", key="cp_dl_parse_errors")
    if parsed:
        with st.expander(f"Rows that will run ({len(parsed)})"):
            st.dataframe(preview_frame(parsed), hide_index=True, width="stretch")

# a plain mapping: SamplingConfig (and torch) are imported only when a run starts
sampling = {"temperature": float(temperature), "top_p": float(top_p), "max_attempts": max_attempts}
signature = (tuple(parsed or ()), tuple(ckpt_paths), tuple(sorted(sampling.items())), seed, fmt)

if st.button("Run prompts", type="primary", key="cp_run"):
    if not parsed:
        st.warning("No row parses: nothing to run. Fix the input first.")
    elif not ckpt_paths:
        st.warning("Pick at least one checkpoint.")
    else:
        with user_errors("Run failed"):
            bar = st.progress(0.0, text="loading checkpoints…")
            ckpts = with_prompt_settings([get_checkpoint(p) for p in ckpt_paths], fmt)
            last = [0.0]

            def progress(label: str, done: int, total: int) -> None:
                now = time.perf_counter()
                if done >= total or now - last[0] > 0.1:  # throttle: one update per 0.1 s
                    last[0] = now
                    bar.progress(done / total if total else 1.0, text=f"{label}: {done}/{total} episodes")

            run = run_prompts(
                ckpts, parsed, sampling, seed, store=results_store(), parse_errors=errors, progress=progress
            )
            bar.progress(1.0, text=f"done: {len(run.results)} episodes in {run.wall_s:.1f} s")
            st.session_state[RESULT_KEY] = (signature, run)

if RESULT_KEY in st.session_state:
    sig, run = st.session_state[RESULT_KEY]
    st.subheader("Results")
    if sig != signature:
        st.info(
            "These results are from an earlier run; the input or settings have changed since. "
            "Press **Run prompts** to update them."
        )
    cached = run.summary.loc[run.summary["from_store"], "checkpoint"].tolist()
    if cached:
        st.caption(f"Read from the results store (same checkpoint, rows, settings and seed): {', '.join(cached)}.")
    table(
        run.summary,
        "summary per checkpoint",
        key="cp_dl_summary",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("accuracy", "wald_lo", "wald_hi", "mean_attempts", "resampled", "decision_share", "malformed")
        },
    )
    if len(run.results):
        from ui.charts.custom import accuracy_figure, decisions_figure  # plotly: only with results

        g1, g2 = st.columns(2)
        chart(accuracy_figure(run.summary), "custom prompts accuracy", key="cp_chart_acc", container=g1)
        chart(decisions_figure(run.results), "custom prompts decisions", key="cp_chart_dec", container=g2)

    f1, f2 = st.columns([2, 2])
    show = f1.radio("Show", SHOW, horizontal=True, key="cp_show")
    names = sorted(run.results["checkpoint"].unique().tolist()) if len(run.results) else []
    only = f2.multiselect("Checkpoints shown", names, default=names, key="cp_show_ckpts")
    view = run.results[run.results["checkpoint"].isin(only)]
    if show == SHOW[1]:
        view = view[~view["correct"]]
    elif show == SHOW[2]:
        view = view[view["decisions"].str.contains("RESAMPLE", regex=False)]
    elif show == SHOW[3]:
        view = view[view["flags"].fillna("") != ""]
    filtered = len(view) != len(run.results)
    st.write(f"{len(view)} of {len(run.results)} result row(s)")
    table(
        view,
        "results (filtered)" if filtered else "results",
        key="cp_dl_results",
        column_config={
            "decision_share": st.column_config.NumberColumn(format="%.3f"),
            "correct": st.column_config.CheckboxColumn(),
            "generation": st.column_config.TextColumn(width="large"),
        },
    )
    st.download_button(
        "Download results (JSON, all rows, summary and errors)",
        run.to_json().encode(),
        file_name="custom_prompts_results.json",
        mime="application/json",
        key="cp_dl_json",
    )
    if len(run.errors):
        with st.expander(
            f"Row errors ({len(run.errors)}): rows that did not parse or do not fit a checkpoint's context",
            expanded=False,
        ):
            table(run.errors, "row errors", key="cp_dl_errors")
    if len(view):
        labels = [f"row {r.row} · {r.checkpoint} · {r.prompt[:40]}" for r in view.itertuples()]
        pick = st.selectbox("Generation of one row", range(len(labels)), format_func=lambda i: labels[i], key="cp_pick")
        r = view.iloc[int(pick or 0)]
        st.code(f"{r['generation']}", language=None, wrap_lines=True)
        st.caption(DS_FORMAT_NOTE)
        st.caption(
            f"answer {r['answer']} · expected {r['expected']} · attempts {r['attempts']} · "
            f"decisions {r['decisions'] or '(none)'} · flags {r['flags'] or '(none)'}"
        )
