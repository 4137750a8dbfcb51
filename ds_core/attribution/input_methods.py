"""The registry of input-attribution methods and target functions (one entry each, as Inseq
registers its methods). Importable without torch: pages and services read names and labels here;
ds_core.attribution.inputs runs them through captum."""

from __future__ import annotations

from dataclasses import dataclass, field

from ds_core.errors import UserError

AGGREGATES = ("sum", "l2")
BASELINES = ("unk", "pad", "zeros")
IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class InputAttributionError(UserError, ValueError):
    """Bad input for input attribution: the message says what is wrong and what to do."""


@dataclass(frozen=True)
class InputMethod:
    """One captum attribution method on the input embeddings."""

    name: str
    label: str
    captum_class: str  # the captum.attr class that computes it
    default_aggregate: str  # over the hidden dimension: "sum" (signed) or "l2"
    description: str
    path_integral: bool = False  # integrates along a path from a baseline (n_steps, deltas)
    options: dict = field(default_factory=dict)  # keyword arguments of captum's attribute()

    def attributor(self, forward_fn):
        import captum.attr

        return getattr(captum.attr, self.captum_class)(forward_fn)


@dataclass(frozen=True)
class TargetFunction:
    """What is attributed at a target position t."""

    name: str
    label: str
    description: str
    decisions_only: bool = False


# the first is the page's default: one forward and backward (IG costs n_steps of them and, on
# these RMSNorm models, converges erratically; see its delta)
INPUT_METHODS: dict[str, InputMethod] = {
    m.name: m
    for m in (
        InputMethod(
            "input_x_gradient",
            "input x gradient",
            "InputXGradient",
            "sum",
            "gradient times the embedding, signed sum over the hidden dim",
        ),
        InputMethod(
            "saliency",
            "saliency",
            "Saliency",
            "l2",
            "the gradient's L2 norm over the hidden dim",
            options={"abs": False},
        ),
        InputMethod(
            "ig",
            "integrated gradients",
            "IntegratedGradients",
            "sum",
            "(e - b) times the path-averaged gradient from baseline b, signed sum",
            path_integral=True,
        ),
    )
}

TARGETS: dict[str, TargetFunction] = {
    t.name: t
    for t in (
        TargetFunction(
            "contrastive",
            "log p(STOP) - log p(RESAMPLE)",
            "the decision's log-odds of keeping the answer",
            decisions_only=True,
        ),
        TargetFunction("logprob", "log p(token)", "the log-probability of the token at t"),
    )
}


def input_method(name: str) -> InputMethod:
    if name not in INPUT_METHODS:
        raise InputAttributionError(f"unknown method {name!r}; choose one of {tuple(INPUT_METHODS)}")
    return INPUT_METHODS[name]
