"""The objectives registry (Inseq-style, one entry per objective): names, labels, what each needs.

Importable without torch: pages, services and the CLI read names and labels here. The per-token
terms themselves (torch) are in ds_core.objectives.terms; `Objective.terms(...)` calls them. The
loss that trains the RL checkpoint (ds_core.training.grpo) and the loss whose gradient the app
attributes (ds_core.attribution) are these same terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INPUTS = ("old_logp", "ref_logp", "advantages")


@dataclass(frozen=True)
class Objective:
    """A named per-token objective: `terms(...)` -> [B, T] losses, 0 where mask is 0."""

    name: str
    label: str  # its one name on every page, table, legend and axis
    short: str  # the same name (kept for callers that ask for a short form)
    description: str
    needs: tuple[str, ...]
    function: str  # the name of its terms function in ds_core.objectives.terms
    options: tuple[str, ...] = ()  # optional keyword settings the function takes (e.g. "clip_eps")

    @property
    def fn(self):
        from ds_core.objectives import terms

        return getattr(terms, self.function)

    @property
    def needs_ref(self) -> bool:
        return "ref_logp" in self.needs

    def terms(self, logp, mask, *, old_logp=None, ref_logp=None, advantages=None, clip_eps: float = 0.2):
        given = {"old_logp": old_logp, "ref_logp": ref_logp, "advantages": advantages}
        missing = [k for k in self.needs if given[k] is None]
        if missing:
            raise ValueError(f"objective {self.name!r} needs {', '.join(missing)} (it needs: {', '.join(self.needs)})")
        kw = {k: given[k] for k in self.needs}
        if "clip_eps" in self.options:
            kw["clip_eps"] = clip_eps
        return self.fn(logp=logp, mask=mask, **kw)


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "surrogate",
            "surrogate",
            "surrogate",
            "Clipped ratio term -min(rA, clip(r)A); on-policy every token is weighted by its "
            "sequence's advantage A (balanced, Theorem 3.1).",
            ("old_logp", "advantages"),
            "surrogate_terms",
            ("clip_eps",),
        ),
        Objective(
            "kl_k1",
            "KL k1",
            "KL k1",
            "log pi/pi_ref per token; the per-trajectory penalty grows with length (unbalanced, Theorem 3.2).",
            ("ref_logp",),
            "kl_k1_terms",
        ),
        Objective(
            "kl_k3",
            "KL k3",
            "KL k3",
            "exp(ref-logp) - (ref-logp) - 1 per token, verl's KL loss (GRPO's kl_coef term).",
            ("ref_logp",),
            "kl_k3_terms",
        ),
        Objective(
            "sft_sum",
            "SFT sum",
            "SFT sum",
            "Token NLL -log p, summed: long attempts dominate the few decision tokens.",
            (),
            "sft_terms",
        ),
        Objective(
            "sft_mean",
            "SFT mean",
            "SFT mean",
            "Token NLL divided by the sequence's scored-token count.",
            (),
            "sft_mean_terms",
        ),
        Objective(
            "dft", "DFT", "DFT", "Dynamic Fine-Tuning: -sg(p) log p per token (Wu et al. 2025).", (), "dft_terms"
        ),
    )
}
OBJECTIVE_NAMES = tuple(OBJECTIVES)
# the dataset-level views' order: the RL objectives first, then the supervised ones
DEFAULT_OBJECTIVES = ("surrogate", "kl_k3", "kl_k1", "sft_sum", "sft_mean", "dft")
LABELS = {o.name: o.label for o in OBJECTIVES.values()}
SHORT_LABELS = {o.name: o.short for o in OBJECTIVES.values()}


def get_objective(name: str) -> Objective:
    """The registered objective called `name`; ValueError listing the valid names otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def needs_ref(objective: str) -> bool:
    """Whether `objective` is a KL term against a reference checkpoint."""
    return get_objective(objective).needs_ref


def parse_objectives(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'surrogate,kl_k3' (or a list) -> a tuple of known objective names, duplicates dropped;
    None -> DEFAULT_OBJECTIVES. ValueError naming the valid ones otherwise."""
    if text is None:
        return DEFAULT_OBJECTIVES
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    names = list(dict.fromkeys(p for p in parts if p))
    if not names:
        raise ValueError(f"no objectives given; valid: {', '.join(OBJECTIVES)}")
    bad = [n for n in names if n not in OBJECTIVES]
    if bad:
        raise ValueError(
            f"unknown objective{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))}; valid: {', '.join(OBJECTIVES)}"
        )
    return tuple(names)
