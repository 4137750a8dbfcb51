"""Gradient balance, view 1: the paper's Figure-1 toy (ds_core.analysis.toy) with its controls."""

from __future__ import annotations

import streamlit as st

from ds_core.analysis.toy import ToyConfig
from ui.common import chart, table
from ui.services.balance_toy import TOY_CONTROLS
from ui.views.balance_common import DEMOS, errors, fig1, fmt, policy_fig, toy


def settings(defaults: dict, saved: dict, values: dict, demo_name: str) -> str:
    """The toy's controls (one per ToyConfig field) and the SFT demonstrations; fills `values`
    and returns the chosen demonstrations' name."""
    st.markdown(
        "Three logits (θ_s: an attempt is correct; θ_d|C: STOP when correct; θ_d|W: RESAMPLE "
        "when wrong) trained by gradient ascent on J = surrogate − w·KL, with the KL reference "
        "reset to the current logits every few steps (`ds_core/analysis/toy.py`). Exact expectations by "
        "default. The paper does not publish its toy's settings; these defaults show its picture."
    )
    if st.button("Reset toy settings to the defaults", key="toy_reset"):
        # set, not pop: a popped key is filled again from the browser's copy of the widget
        for c in TOY_CONTROLS:
            st.session_state[f"toy_{c.name}"] = defaults[c.name]
        st.session_state["toy_demo"] = list(DEMOS)[0]
        saved, demo_name = dict(defaults), list(DEMOS)[0]
    with st.expander("Toy settings (ToyConfig)", expanded=True):
        cols = st.columns(4)
        for i, c in enumerate(TOY_CONTROLS):
            col = cols[i % 4]
            key = f"toy_{c.name}"
            if c.kind == "choice":
                values[c.name] = col.selectbox(
                    c.label, c.options, index=c.options.index(saved[c.name]), key=key, help=c.help or None
                )
            elif c.kind == "int":
                values[c.name] = int(
                    col.slider(
                        c.label, int(c.lo), int(c.hi), int(saved[c.name]), int(c.step), key=key, help=c.help or None
                    )
                )
            else:
                values[c.name] = float(
                    col.slider(
                        c.label,
                        float(c.lo),
                        float(c.hi),
                        float(saved[c.name]),
                        float(c.step),
                        key=key,
                        help=c.help or None,
                    )
                )
        demo_name = st.selectbox(
            "SFT demonstrations (toy SFT, our extension)",
            list(DEMOS),
            index=list(DEMOS).index(demo_name),
            key="toy_demo",
            help="The toy of Figure 1 has no SFT; we add the SFT gradient of the "
            "expected token-summed log-likelihood of these demonstrations "
            "at each step's logits (ds_core/analysis/toy_sweeps.py).",
        )
    return demo_name


def render(values: dict, cfg_items: tuple, demo: tuple) -> None:
    view = None
    with errors("Toy"):
        ToyConfig(**values)  # validates (ValueError -> message)
        view = toy(cfg_items, demo)
    if view is not None:
        s = view.summary
        m = st.columns(6)
        m[0].metric("surrogate S:D (median)", fmt(s["surrogate_ratio_median"]), help="paper: about 1:1 (balanced)")
        m[1].metric(
            "KL S:D (median)",
            fmt(s["kl_ratio_median"]),
            help="over non-reset steps (the exact KL gradient is 0 at a reset); paper: above 2:1",
        )
        m[2].metric("SFT S:D (median)", fmt(s["sft_ratio_median"]), help="toy extension")
        m[3].metric(
            "θ_s push kept",
            fmt(s["update_kept_s"], 2),
            help="share of the surrogate's push on θ_s that survives the KL in the net update",
        )
        m[4].metric(
            "decision push kept", fmt(s["update_kept_d"], 2), help="the same for the decision logits (θ_d|C, θ_d|W)"
        )
        m[5].metric(
            "E[R] at the end",
            f"{s['final_reward_mean']:.2f}",
            delta=f"{s['final_reward_mean'] - s['first_reward_mean']:+.2f} from the start",
        )
        log_abs = st.checkbox("log |gradient| in panels (a), (b), (d)", key="toy_log_abs")
        chart(fig1(cfg_items, demo, log_abs), "toy figure 1", key="chart_toy_fig1")
        st.caption(
            "Read: (a) the surrogate pushes all three logits by comparable amounts; (b) the KL's "
            "pull on θ_s is much larger than on the decision logits (it sums L tokens per attempt, "
            "one per decision) and is zero at each reference reset (grey lines in (c)); (c) the "
            "ratio of the sampling to the decision part of each gradient; (d) what is left: the "
            "decision logits keep their push, θ_s is held near the reference. The ratio against "
            "L is in the *Length sweep* view."
        )
        chart(policy_fig(cfg_items, demo), "toy policy over training", key="chart_toy_policy")
        c1, c2 = st.columns([1, 1])
        with c1:
            st.markdown("**Summary** (`ToyRun.summary()` plus the toy SFT)")
            table(view.table, "toy summary", key="dl_toy_summary")
        with c2:
            st.markdown("**Per step** (`ToyRun.to_frame()` plus `sft_grad_*`, `sft_ratio`)")
            table(view.frame, "toy per step", key="dl_toy_steps", height=360)
