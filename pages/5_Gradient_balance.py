"""Gradient balance: the paper's Figure-1 toy, the length sweep, and dataset-level distributions
of the sampling:decision gradient ratio per objective. Everything is computed in ds_core.balance and
its sibling modules (balance_toy, balance_sweep, balance_dataset, balance_results); this page only
draws."""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st

from ds_core import balance as B
from ds_core import balance_dataset as BD
from ds_core import balance_results as BR
from ds_core import balance_sweep as BS
from ds_core import balance_toy as BT
from ds_core.checkpoint import SHIPPED_DIR, content_hash
from ds_core.toy import ToyConfig
from ui.charts import balance as C
from ui.common import chart, get_checkpoint, pick_checkpoint, results_store, table, user_errors

st.set_page_config(page_title="Gradient balance · DS-Lens", layout="wide")


# ------------------------------------------------------------------------------- helpers
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


SWEEP_STATES = 30   # recorded toy steps re-evaluated per L in the "same states" sweep
DEMOS = {"reflection traces (0/1/2 wrong attempts: 0.4/0.4/0.2)": BT.REFLECTION_DEMOS,
         "one correct attempt (SFT without reflection)": BT.SINGLE_DEMOS}


@st.cache_data(show_spinner=False, max_entries=64)
def toy(cfg_items: tuple, demo: tuple) -> BT.ToyView:
    return BT.toy_view(ToyConfig(**dict(cfg_items)), demo)


@st.cache_data(show_spinner=False, max_entries=64)
def toy_sweep(cfg_items: tuple, lengths: tuple, mode: str, demo: tuple) -> pd.DataFrame:
    return BT.toy_length_sweep(ToyConfig(**dict(cfg_items)), lengths, mode=mode, demo_wrong=demo,
                              max_states=SWEEP_STATES)


@st.cache_resource(show_spinner=False, max_entries=32)
def fig1(cfg_items: tuple, demo: tuple, log_abs: bool):
    return C.figure1(toy(cfg_items, demo).frame, log_abs=log_abs)


@st.cache_resource(show_spinner=False, max_entries=32)
def policy_fig(cfg_items: tuple, demo: tuple):
    return C.toy_policy_fig(toy(cfg_items, demo).frame)


@st.cache_data(show_spinner=False, max_entries=4)
def shipped(path: str, mtime: float) -> B.Shipped:
    return B.load_shipped(path)


@st.cache_data(show_spinner=False, max_entries=32)
def stored_dataset(path: str, digest: str, sizes: str, n: int, objectives: tuple):
    return BD.stored_dataset(results_store(), path, sizes, n, objectives)


@st.cache_data(show_spinner=False, max_entries=32)
def stored_sweep(path: str, digest: str, sizes: str, per_size: int, n_wrong: int, objectives: tuple):
    return BS.stored_length_sweep(results_store(), path, sizes, per_size, n_wrong, objectives)


@st.cache_data(show_spinner=False, max_entries=16)
def sweep_figure(frame: pd.DataFrame, metric: str):
    return C.sweep_fig(frame, metric=metric, labels=BR.OBJECTIVE_LABELS)


@st.cache_data(show_spinner=False, max_entries=16)
def dataset_figure(frame: pd.DataFrame, metric: str, kind: str, facet: str, colour: str):
    return C.dataset_fig(frame, metric=metric, kind=kind, facet=None if facet == "none" else facet,
                         colour=None if colour == "none" else colour, labels=BR.OBJECTIVE_LABELS)


def progress_bar(text: str):
    bar = st.progress(0.0, text=text)
    return lambda f, t: bar.progress(min(max(float(f), 0.0), 1.0), text=t)


def stored_or_compute(read, compute, cached, key: str, what: str, cost: str):
    """The stored result (read()), or a button that computes it with a progress bar and stores it
    (compute(progress)); `cached` is the st.cache_data reader to clear once stored."""
    res = read()
    if res is None:
        st.info(f"Not in the results store yet. {cost}")
        if st.button("Compute and store", key=key):
            res = compute(progress_bar(what))
            cached.clear()
            st.success(f"Computed {res.n_computed} attributions ({res.n_cached} from the "
                       f"attribution cache) in {res.wall_s:.1f} s; stored.")
    else:
        st.caption(f"From the results store (`{results_store().path}`).")
    for note in (res.notes if res is not None else ()):
        st.caption(note)
    return res


def load_shipped_or_none() -> B.Shipped | None:
    p = B.SHIPPED_FILE
    try:
        return shipped(str(p), p.stat().st_mtime if p.is_file() else 0.0)
    except BR.BalanceError as e:
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
    st.caption(f"**Shipped precompute** (`ds_core/data/{Path(sh.path).name}`, written "
               f"{meta.get('created', '?')} by `{meta.get('command', '?')}`, code "
               f"{meta.get('code_version', '?')}; computing it from scratch takes about 20 minutes "
               f"on one CPU thread); settings: `{meta.get(part, {})}`. Choose *compute / results "
               "store* to compute other settings or checkpoints.")
    if stale:
        st.warning(f"The shipped numbers for {', '.join(stale)} were computed from a different "
                   "version of that checkpoint (content hash changed): recompute below or rerun "
                   "`python -m ds_core.balance precompute`.")


def objective_label(o: str) -> str:
    return BR.OBJECTIVE_LABELS.get(o, o)


# ------------------------------------------------------------------------------- page
st.title("Gradient balance")
st.markdown(
    "How an objective's gradient is shared between **sampling** tokens (the attempts) and "
    "**decision** tokens (`[STOP]`/`[RESAMPLE]`). The paper's Gradient Attribution Property: the "
    "GRPO **surrogate** weights every token by the same advantage A (Theorem 3.1, *balanced*); "
    "the **KL** penalty and **SFT** sum a per-token term over every token, so an attempt of L "
    "tokens gets about L times the decision's weight (Theorem 3.2, *unbalanced*). The ratio shown "
    "throughout is |G_S| / |G_D|: the norm of the sampling tokens' summed gradient over the "
    "decision tokens'.")

VIEWS = ("Toy (Figure 1)", "Length sweep", "Dataset distributions")
TOY_CFG, TOY_DEMO = "balance_toy_cfg", "balance_toy_demo"   # the toy settings, kept across views
view_name = st.radio("view", VIEWS, horizontal=True, key="balance_view", label_visibility="collapsed")
defaults = asdict(ToyConfig())
saved = {**defaults, **st.session_state.get(TOY_CFG, {})}
values = dict(saved)
demo_name = st.session_state.get(TOY_DEMO, list(DEMOS)[0])

# ============================================================================ 1. the toy
if view_name == VIEWS[0]:
    st.markdown(
        "Three logits (θ_s: an attempt is correct; θ_d|C: STOP when correct; θ_d|W: RESAMPLE "
        "when wrong) trained by gradient ascent on J = surrogate − w·KL, with the KL reference "
        "reset to the current logits every few steps (`ds_core/toy.py`). Exact expectations by "
        "default. The paper does not publish its toy's settings; these defaults show its picture.")
    if st.button("Reset toy settings to the defaults", key="toy_reset"):
        for c in BT.TOY_CONTROLS:
            st.session_state.pop(f"toy_{c.name}", None)
        st.session_state.pop("toy_demo", None)
        saved, demo_name = dict(defaults), list(DEMOS)[0]
    with st.expander("Toy settings (ToyConfig)", expanded=True):
        cols = st.columns(4)
        for i, c in enumerate(BT.TOY_CONTROLS):
            col = cols[i % 4]
            key = f"toy_{c.name}"
            if c.kind == "choice":
                values[c.name] = col.selectbox(c.label, c.options, index=c.options.index(saved[c.name]),
                                               key=key, help=c.help or None)
            elif c.kind == "int":
                values[c.name] = int(col.slider(c.label, int(c.lo), int(c.hi), int(saved[c.name]),
                                                int(c.step), key=key, help=c.help or None))
            else:
                values[c.name] = float(col.slider(c.label, float(c.lo), float(c.hi),
                                                  float(saved[c.name]), float(c.step), key=key,
                                                  help=c.help or None))
        demo_name = st.selectbox("SFT demonstrations (toy SFT, our extension)", list(DEMOS),
                                 index=list(DEMOS).index(demo_name), key="toy_demo",
                                 help="The toy of Figure 1 has no SFT; we add the SFT gradient of the "
                                      "expected token-summed log-likelihood of these demonstrations "
                                      "at each step's logits (ds_core/balance_toy.py).")
    st.session_state[TOY_CFG], st.session_state[TOY_DEMO] = dict(values), demo_name
demo = tuple(DEMOS[demo_name])
cfg_items = tuple(sorted(values.items()))

if view_name == VIEWS[0]:
    view = None
    with errors("Toy"):
        ToyConfig(**values)  # validates (ValueError -> message)
        view = toy(cfg_items, demo)
    if view is not None:
        s = view.summary
        m = st.columns(6)
        m[0].metric("surrogate S:D (median)", fmt(s["surrogate_ratio_median"]),
                    help="paper: about 1:1 (balanced)")
        m[1].metric("KL S:D (median)", fmt(s["kl_ratio_median"]),
                    help="over non-reset steps (the exact KL gradient is 0 at a reset); paper: above 2:1")
        m[2].metric("SFT S:D (median)", fmt(s["sft_ratio_median"]), help="toy extension")
        m[3].metric("θ_s push kept", fmt(s["update_kept_s"], 2),
                    help="share of the surrogate's push on θ_s that survives the KL in the net update")
        m[4].metric("decision push kept", fmt(s["update_kept_d"], 2),
                    help="the same for the decision logits (θ_d|C, θ_d|W)")
        m[5].metric("E[R] at the end", f"{s['final_reward_mean']:.2f}",
                    delta=f"{s['final_reward_mean'] - s['first_reward_mean']:+.2f} from the start")
        log_abs = st.checkbox("log |gradient| in panels (a), (b), (d)", key="toy_log_abs")
        chart(fig1(cfg_items, demo, log_abs), "toy figure 1", key="chart_toy_fig1")
        st.caption(
            "Read: (a) the surrogate pushes all three logits by comparable amounts; (b) the KL's "
            "pull on θ_s is much larger than on the decision logits (it sums L tokens per attempt, "
            "one per decision) and is zero at each reference reset (grey lines in (c)); (c) the "
            "ratio of the sampling to the decision part of each gradient; (d) what is left: the "
            "decision logits keep their push, θ_s is held near the reference. The ratio against "
            "L is in the *Length sweep* view.")
        chart(policy_fig(cfg_items, demo), "toy policy over training", key="chart_toy_policy")
        c1, c2 = st.columns([1, 1])
        with c1:
            st.markdown("**Summary** (`ToyRun.summary()` plus the toy SFT)")
            table(view.table, "toy summary", key="dl_toy_summary")
        with c2:
            st.markdown("**Per step** (`ToyRun.to_frame()` plus `sft_grad_*`, `sft_ratio`)")
            table(view.frame, "toy per step", key="dl_toy_steps", height=360)

# ============================================================================ 2. length sweep
if view_name == VIEWS[1]:
    st.subheader("Toy: ratio vs attempt length L")
    changed = {k: v for k, v in values.items() if v != defaults[k]}
    st.markdown(
        "The toy of the *Toy* view (its settings: "
        + (", ".join(f"`{k}={v}`" for k, v in changed.items()) if changed else "the defaults")
        + ") with the attempt length L varied. **Same states**: "
        "the gradients are re-evaluated at the logits and reference of up to 30 evenly spaced recorded steps of "
        "one run, with only L changed, which isolates the length effect. **Retrain**: the toy is "
        "trained afresh for every L (the states differ as well).")
    lc = st.columns([2, 1])
    lengths = lc[0].multiselect("attempt lengths L", [1, 2, 4, 8, 16, 32, 64, 128, 256],
                                default=list(BT.DEFAULT_LENGTHS), key="sweep_lengths")
    mode = lc[1].radio("states", BT.SWEEP_MODES, key="sweep_mode", horizontal=True,
                       format_func=lambda m: {"same_states": "same states", "retrain": "retrain per L"}[m])
    if not lengths:
        st.info("Pick at least one attempt length.")
    else:
        with errors("Toy length sweep"):
            ToyConfig(**values)
            sw = toy_sweep(cfg_items, tuple(sorted(lengths)), mode, demo)
            chart(C.toy_length_fig(sw, BT.TOY_LABELS), "toy ratio vs attempt length", key="chart_toy_len")
            piv = sw.pivot(index="attempt_length", columns="objective", values="median")
            lo, hi = piv.index.min(), piv.index.max()
            grow = {o: piv.loc[hi, o] / piv.loc[lo, o] if piv.loc[lo, o] else math.nan for o in piv}
            if hi > lo:
                st.markdown(
                    f"From L = {lo} to L = {hi} (×{hi / lo:g}) the median ratio changes by "
                    + ", ".join(f"**{BT.TOY_LABELS.get(o, o)}** ×{fmt(grow[o])}" for o in BT.TOY_OBJECTIVES
                                if o in grow) + ".")
            st.caption("In the toy the surrogate's independence of L is built in (the L − 1 reasoning "
                       "tokens of an attempt have zero-mean score terms, so in expectation each attempt "
                       "counts once, Theorem 3.1); the KL and SFT sum L tokens per attempt. At the same "
                       "states the k3 KL's and the SFT's ratios are exactly proportional to L.")
            table(sw, "toy length sweep", key="dl_toy_len")

    st.subheader("Real model: ratio vs sampling-token count")
    st.markdown(
        "Teacher-forced DS traces (`ds_core.balance_sweep.trace_episode`): one correct attempt and `[STOP]` "
        "per problem (or injected wrong attempts first), for problem sizes from 1x1 (16 sampling "
        "tokens) to 9x12 (~390), so the attempt length grows while the decision count stays fixed. "
        "Each trace is attributed under each objective (surrogate advantage +1, KL against the "
        "checkpoint's parent). The line joins the per-size medians; the slope table fits "
        "log10(y) = slope · log10(sampling tokens) + c.")
    src = st.radio("source", ["shipped precompute", "compute / results store"], horizontal=True,
                   key="sweep_source")
    metric = st.selectbox("quantity", list(BS.SWEEP_METRICS), key="sweep_metric",
                          format_func=lambda m: C.METRIC_LABELS.get(m, m))
    result_frame, slopes = None, None
    if src == "shipped precompute":
        sh = load_shipped_or_none()
        if sh is not None and len(sh.sweep):
            shipped_caption(sh, "length_sweep")
            cks = list(dict.fromkeys(sh.sweep["checkpoint"]))
            objs = list(dict.fromkeys(sh.sweep["objective"]))
            fc = st.columns(2)
            pick_ck = fc[0].multiselect("checkpoints", cks, default=cks, key="sweep_ckpts")
            pick_obj = fc[1].multiselect("objectives", objs, default=objs, key="sweep_objs",
                                         format_func=objective_label)
            result_frame = sh.sweep[sh.sweep["checkpoint"].isin(pick_ck) & sh.sweep["objective"].isin(pick_obj)]
            slopes = sh.sweep_slopes[sh.sweep_slopes["checkpoint"].isin(pick_ck)
                                     & sh.sweep_slopes["objective"].isin(pick_obj)]
    else:
        with errors("Length sweep"):
            path = pick_checkpoint("checkpoint", key="sweep_ck", default="rl")
            fc = st.columns(4)
            sizes = fc[0].text_input("sizes", ",".join(BS.SWEEP_SIZES), key="sweep_sizes",
                                     help="comma-separated, ranges like 3x1-3x12")
            per_size = int(fc[1].number_input("problems per size", 1, 20, BS.SWEEP_PER_SIZE, key="sweep_per_size"))
            n_wrong = int(fc[2].selectbox("wrong attempts before the correct one", [0, 1, 2], key="sweep_n_wrong"))
            objs = tuple(fc[3].multiselect("objectives", list(BR.DEFAULT_OBJECTIVES),
                                           default=list(BR.DEFAULT_OBJECTIVES), key="sweep_objectives",
                                           format_func=objective_label))
            if path and objs:
                res = stored_or_compute(
                    lambda: stored_sweep(path, content_hash(path), sizes, per_size, n_wrong, objs),
                    lambda cb: BS.model_length_sweep(get_checkpoint(path), sizes, per_size, n_wrong, objs,
                                                     store=results_store(), progress=cb),
                    stored_sweep, "sweep_compute", "attributing traces",
                    "Computing costs about 0.1-0.7 s per trace and objective on one CPU thread "
                    "(longer traces cost more).")
                if res is not None:
                    result_frame, slopes = res.frame, res.summary
            elif not objs:
                st.info("Pick at least one objective.")
    if result_frame is not None and len(result_frame):
        all_sizes = list(dict.fromkeys(result_frame["size"]))
        fit_sizes = st.multiselect("sizes shown and fitted", all_sizes, default=all_sizes,
                                   key="sweep_fit_sizes",
                                   help="e.g. only the out-of-distribution sizes 3x6 and up, where "
                                        "the decision is uncertain for every checkpoint")
        result_frame = result_frame[result_frame["size"].isin(fit_sizes)]
        if len(fit_sizes) != len(all_sizes):
            slopes = BS.loglog_slopes(result_frame)
    if result_frame is not None and len(result_frame):
        chart(sweep_figure(result_frame, metric), "model ratio vs sampling tokens", key="chart_model_len")
        sl = slopes[slopes["metric"] == metric] if slopes is not None else pd.DataFrame()
        st.markdown(f"**Log-log slopes of {C.METRIC_LABELS.get(metric, metric)}** against sampling "
                    "tokens (1: grows like the token count; 0.5: like a sum of uncorrelated per-token "
                    "gradients; 0: no length effect; growth = median at the longest / at the shortest size)")
        table(sl, "model length sweep slopes", key="dl_model_len_slopes")
        st.caption(
            "What the numbers show (measured, not assumed): on one episode the surrogate, `sft_sum`, "
            "`sft_mean` and `kl_k1` have identical ratios: each weights every token's ∇log p by one "
            "constant (A, −1, −1/n, or 1 against a fixed reference), which cancels in |G_S|/|G_D|. "
            "Theorem 3.1's balance is about the expectation over sampled trajectories, which a "
            "per-trace ratio cannot show. Per trace, the ratio is dominated by how confident the "
            "decision token is (|∇log p([STOP])| ≈ 0 when p ≈ 1), not by the token count alone; "
            "compare |G_S| and |G_D| separately with the quantity selector.")
        with st.expander("Per-trace table"):
            table(result_frame, "model length sweep traces", key="dl_model_len_traces")
    elif result_frame is not None:
        st.info("No rows for this selection.")

# ============================================================================ 3. dataset level
if view_name == VIEWS[2]:
    st.markdown(
        "Sampled episodes (temperature 1, up to 4 attempts, the fixed test sets) attributed under "
        "each objective (`attribute_dataset`): one ratio per episode and objective, stratified by "
        "the **outcome** of the first attempt (correct_kept: correct then STOP; wrong_revised: "
        "wrong then RESAMPLE; wrong_kept; correct_changed). Surrogate advantage +1 for a correct "
        "episode, −1 for a wrong one (the ratio does not depend on it); KL against the checkpoint's "
        "parent (the base checkpoint has none, so no KL rows).")
    src = st.radio("source", ["shipped precompute", "compute / results store"], horizontal=True,
                   key="data_source")
    frame, summary = None, None
    if src == "shipped precompute":
        sh = load_shipped_or_none()
        if sh is not None and len(sh.dataset):
            shipped_caption(sh, "dataset")
            frame, summary = sh.dataset, sh.dataset_summary
    else:
        with errors("Dataset attribution"):
            path = pick_checkpoint("checkpoint", key="data_ck", default="rl")
            fc = st.columns(3)
            sizes = fc[0].text_input("sizes", "3x3,3x4", key="data_sizes",
                                     help="comma-separated, ranges like 3x3-3x9")
            n = int(fc[1].number_input("episodes per size", 1, 100, 10, key="data_n"))
            objs = tuple(fc[2].multiselect("objectives", list(BR.DEFAULT_OBJECTIVES),
                                           default=list(BR.DEFAULT_OBJECTIVES), key="data_objectives",
                                           format_func=objective_label))
            if path and objs:
                res = stored_or_compute(
                    lambda: stored_dataset(path, content_hash(path), sizes, n, objs),
                    lambda cb: BD.dataset_balance(get_checkpoint(path), sizes, n, objs,
                                                  store=results_store(), progress=cb),
                    stored_dataset, "data_compute", "sampling episodes",
                    "Sampling is fast; attribution costs about 0.2 s per episode and objective on one "
                    "CPU thread.")
                if res is not None:
                    frame, summary = res.frame, res.summary
            elif not objs:
                st.info("Pick at least one objective.")
    if frame is not None and len(frame):
        cks = list(dict.fromkeys(frame["checkpoint"]))
        sizes_present = list(dict.fromkeys(frame["size"]))
        objs = list(dict.fromkeys(frame["objective"]))
        fc = st.columns(3)
        pick_ck = fc[0].multiselect("checkpoints", cks, default=cks, key="data_ckpts")
        pick_size = fc[1].multiselect("sizes", sizes_present, default=sizes_present, key="data_size_filter")
        pick_obj = fc[2].multiselect("objectives", objs, default=objs, key="data_objs",
                                     format_func=objective_label)
        gc = st.columns(4)
        metric = gc[0].selectbox("quantity", ["log10_ratio_SD", "log10_ratio_SD_per_token", "share_D",
                                              "cos_SD"], key="data_metric",
                                 format_func=lambda m: C.METRIC_LABELS.get(m, m))
        kind = gc[1].selectbox("plot", ["box", "violin", "strip"], key="data_kind")
        facet = gc[2].selectbox("facet by", ["checkpoint", "size", "outcome", "none"], key="data_facet")
        colour = gc[3].selectbox("colour by", ["outcome", "size", "checkpoint", "objective", "none"],
                                 key="data_colour")
        sel = frame[frame["checkpoint"].isin(pick_ck) & frame["size"].isin(pick_size)
                    & frame["objective"].isin(pick_obj)]
        if not len(sel):
            st.info("No episodes for this selection.")
        else:
            chart(dataset_figure(sel, metric, kind, facet, colour), "dataset ratio distribution",
                  key="chart_dataset")
            med = (sel.groupby(["checkpoint", "objective"], sort=False)["ratio_SD"].median()
                      .unstack("objective"))
            st.caption(
                f"{len(sel)} (episode, objective) rows from {sel.groupby('checkpoint')['episode'].nunique().sum()} "
                "episode indices. Median ratio per checkpoint: "
                + "; ".join(f"**{ck}** " + ", ".join(f"{objective_label(o)} {fmt(v)}" for o, v in row.items()
                                                      if pd.notna(v))
                            for ck, row in med.iterrows()) + ".")
            st.markdown("**Summary** (median, quartiles, mean of the ratio and the decision share per "
                        "objective × size × outcome; 'all' pools sizes or outcomes)")
            sm = summary[summary["checkpoint"].isin(pick_ck) & summary["objective"].isin(pick_obj)
                         & summary["size"].isin(pick_size + ["all"])]
            table(sm, "dataset balance summary", key="dl_data_summary")
            with st.expander("Per-episode table"):
                table(sel, "dataset balance episodes", key="dl_data_episodes")
