"""Gradient balance, view 2: the sampling:decision ratio against the attempt length, in the toy
and on real models (teacher-forced traces, ds_core.analysis.balance.length_sweep)."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

import ds_core.analysis.balance.length_sweep as BS
import ds_core.analysis.toy_sweeps as BT
from ds_core.analysis.balance.results import normalize_sizes
from ds_core.analysis.toy import ToyConfig
from ds_core.models.checkpoint import content_hash
from ds_core.objectives import DEFAULT_OBJECTIVES
from ui.charts import balance as C
from ui.charts import balance_toy as CT
from ui.common import chart, get_checkpoint, pick_checkpoint, results_store, table
from ui.views.balance_common import (
    errors,
    fmt,
    load_shipped_or_none,
    objective_label,
    shipped_caption,
    stored_or_compute,
    stored_sweep,
    sweep_figure,
    toy_sweep,
)


def render(values: dict, defaults: dict, cfg_items: tuple, demo: tuple) -> None:
    st.subheader("Toy: ratio vs attempt length L")
    changed = {k: v for k, v in values.items() if v != defaults[k]}
    st.markdown(
        "The toy of the *Toy* view (its settings: "
        + (", ".join(f"`{k}={v}`" for k, v in changed.items()) if changed else "the defaults")
        + ") with the attempt length L varied. **Same states**: "
        "the gradients are re-evaluated at the logits and reference of up to 30 evenly spaced recorded steps of "
        "one run, with only L changed, which isolates the length effect. **Retrain**: the toy is "
        "trained afresh for every L (the states differ as well)."
    )
    lc = st.columns([2, 1])
    lengths = lc[0].multiselect(
        "attempt lengths L", [1, 2, 4, 8, 16, 32, 64, 128, 256], default=list(BT.DEFAULT_LENGTHS), key="sweep_lengths"
    )
    mode = lc[1].radio(
        "states",
        BT.SWEEP_MODES,
        key="sweep_mode",
        horizontal=True,
        format_func=lambda m: {"same_states": "same states", "retrain": "retrain per L"}[m],
    )
    if not lengths:
        st.info("Pick at least one attempt length.")
    else:
        with errors("Toy length sweep"):
            ToyConfig(**values)
            sw = toy_sweep(cfg_items, tuple(sorted(lengths)), mode, demo)
            chart(CT.toy_length_fig(sw, BT.TOY_LABELS), "toy ratio vs attempt length", key="chart_toy_len")
            piv = sw.pivot(index="attempt_length", columns="objective", values="median")
            lo, hi = piv.index.min(), piv.index.max()
            grow = {o: piv.loc[hi, o] / piv.loc[lo, o] if piv.loc[lo, o] else math.nan for o in piv}
            if hi > lo:
                st.markdown(
                    f"From L = {lo} to L = {hi} (×{hi / lo:g}) the median ratio changes by "
                    + ", ".join(
                        f"**{BT.TOY_LABELS.get(o, o)}** ×{fmt(grow[o])}" for o in BT.TOY_OBJECTIVES if o in grow
                    )
                    + "."
                )
            st.caption(
                "In the toy the surrogate's independence of L is built in (the L − 1 reasoning "
                "tokens of an attempt have zero-mean score terms, so in expectation each attempt "
                "counts once, Theorem 3.1); the KL and SFT sum L tokens per attempt. At the same "
                "states the k3 KL's and the SFT's ratios are exactly proportional to L."
            )
            table(sw, "toy length sweep", key="dl_toy_len")

    st.subheader("Real model: ratio vs sampling-token count")
    st.markdown(
        "Teacher-forced DS traces (`ds_core.episodes.traces.trace_episode`): one correct attempt and `[STOP]` "
        "per problem (or injected wrong attempts first), for problem sizes from 1x1 (16 sampling "
        "tokens) to 9x12 (~390), so the attempt length grows while the decision count stays fixed. "
        "Each trace is attributed under each objective (surrogate advantage +1, KL against the "
        "checkpoint's parent). The line joins the per-size medians; the slope table fits "
        "log10(y) = slope · log10(sampling tokens) + c."
    )
    src = st.radio("source", ["shipped precompute", "compute / results store"], horizontal=True, key="sweep_source")
    metric = st.selectbox(
        "quantity", list(BS.SWEEP_METRICS), key="sweep_metric", format_func=lambda m: C.METRIC_LABELS.get(m, m)
    )
    result_frame, slopes = None, None
    if src == "shipped precompute":
        sh = load_shipped_or_none()
        if sh is not None and len(sh.sweep):
            shipped_caption(sh, "length_sweep")
            cks = list(dict.fromkeys(sh.sweep["checkpoint"]))
            objs = list(dict.fromkeys(sh.sweep["objective"]))
            fc = st.columns(2)
            pick_ck = fc[0].multiselect("checkpoints", cks, default=cks, key="sweep_ckpts")
            pick_obj = fc[1].multiselect(
                "objectives", objs, default=objs, key="sweep_objs", format_func=objective_label
            )
            result_frame = sh.sweep[sh.sweep["checkpoint"].isin(pick_ck) & sh.sweep["objective"].isin(pick_obj)]
            slopes = sh.sweep_slopes[
                sh.sweep_slopes["checkpoint"].isin(pick_ck) & sh.sweep_slopes["objective"].isin(pick_obj)
            ]
    else:
        with errors("Length sweep"):
            path = pick_checkpoint("checkpoint", key="sweep_ck", default="rl")
            fc = st.columns(4)
            sizes = fc[0].text_input(
                "sizes", ",".join(BS.SWEEP_SIZES), key="sweep_sizes", help="comma-separated, ranges like 3x1-3x12"
            )
            per_size = int(fc[1].number_input("problems per size", 1, 20, BS.SWEEP_PER_SIZE, key="sweep_per_size"))
            n_wrong = int(fc[2].selectbox("wrong attempts before the correct one", [0, 1, 2], key="sweep_n_wrong"))
            objs = tuple(
                fc[3].multiselect(
                    "objectives",
                    list(DEFAULT_OBJECTIVES),
                    default=list(DEFAULT_OBJECTIVES),
                    key="sweep_objectives",
                    format_func=objective_label,
                )
            )
            if path and objs:
                res = stored_or_compute(
                    lambda: stored_sweep(path, content_hash(path), sizes, per_size, n_wrong, objs),
                    lambda cb, engine: BS.model_length_sweep(
                        get_checkpoint(path),
                        sizes,
                        per_size,
                        n_wrong,
                        objs,
                        store=results_store(),
                        progress=cb,
                        engine=engine,
                    ),
                    stored_sweep,
                    "sweep_compute",
                    "attributing traces",
                    (
                        "length sweep",
                        content_hash(path),
                        len(normalize_sizes(sizes)) * per_size * len(objs),
                        "attribution",
                    ),
                )
                if res is not None:
                    result_frame, slopes = res.frame, res.summary
            elif not objs:
                st.info("Pick at least one objective.")
    if result_frame is not None and len(result_frame):
        all_sizes = list(dict.fromkeys(result_frame["size"]))
        fit_sizes = st.multiselect(
            "sizes shown and fitted",
            all_sizes,
            default=all_sizes,
            key="sweep_fit_sizes",
            help="e.g. only the out-of-distribution sizes 3x6 and up, where "
            "the decision is uncertain for every checkpoint",
        )
        result_frame = result_frame[result_frame["size"].isin(fit_sizes)]
        if len(fit_sizes) != len(all_sizes):
            slopes = BS.loglog_slopes(result_frame)
    if result_frame is not None and len(result_frame):
        chart(sweep_figure(result_frame, metric), "model ratio vs sampling tokens", key="chart_model_len")
        sl = slopes[slopes["metric"] == metric] if slopes is not None else pd.DataFrame()
        st.markdown(
            f"**Log-log slopes of {C.METRIC_LABELS.get(metric, metric)}** against sampling "
            "tokens (1: grows like the token count; 0.5: like a sum of uncorrelated per-token "
            "gradients; 0: no length effect; growth = median at the longest / at the shortest size)"
        )
        table(sl, "model length sweep slopes", key="dl_model_len_slopes")
        st.caption(
            "What the numbers show (measured, not assumed): on one episode the surrogate, `sft_sum`, "
            "`sft_mean` and `kl_k1` have identical ratios: each weights every token's ∇log p by one "
            "constant (A, −1, −1/n, or 1 against a fixed reference), which cancels in |G_S|/|G_D|. "
            "Theorem 3.1's balance is about the expectation over sampled trajectories, which a "
            "per-trace ratio cannot show. Per trace, the ratio is dominated by how confident the "
            "decision token is (|∇log p([STOP])| ≈ 0 when p ≈ 1), not by the token count alone; "
            "compare |G_S| and |G_D| separately with the quantity selector."
        )
        with st.expander("Per-trace table"):
            table(result_frame, "model length sweep traces", key="dl_model_len_traces")
    elif result_frame is not None:
        st.info("No rows for this selection.")
