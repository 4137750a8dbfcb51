"""The gradient a training step applies, split into sampling, decision and other tokens.

Every training loop (ds_core.training.sft, ds_core.training.grpo) reduces per-token terms of the
shared objectives module (ds_core.objectives.terms) to its loss; written as
loss = sum_t c_t, with c_t a token's contribution (its term times the reduction's weight), the
gradient it applies is G = G_S + G_D + G_O, G_k = grad sum_{t of role k} c_t. On a logging step
the loop calls `split_backward` instead of `loss.backward()`: three backward passes, one per role,
and the parameters' .grad set to their sum, so the split is of the very gradient the optimiser
then applies (before clipping, which scales every component by the same factor). The figures are
those of the attribution engine (ds_core.attribution.gradient.component_grams / component_figures:
|G_S|, |G_D|, ratio, cosine, shares), the same numbers the app shows for an episode or a group.
"""

from __future__ import annotations

import torch

from ds_core.attribution.engine import COMPONENTS
from ds_core.attribution.gradient import component_figures, component_grams
from ds_core.attribution.result import ComponentFigures

ROLE_CODE = {role: i + 1 for i, (_, role) in enumerate(COMPONENTS)}  # sampling 1, decision 2, other 3
KEYS = tuple(k for k, _ in COMPONENTS)
LOG_FIELDS = ("norm_G_S", "norm_G_D", "norm_G_O", "norm_G", "ratio_SD", "cos_SD", "share_S", "share_D", "share_O")


def role_codes(roles_rows, width: int) -> torch.Tensor:
    """[B, width] role codes (ROLE_CODE; 0 for prompt, padding and anything unscored)."""
    out = torch.zeros((len(roles_rows), width), dtype=torch.long)
    for i, roles in enumerate(roles_rows):
        for t, r in enumerate(roles[:width]):
            out[i, t] = ROLE_CODE.get(r, 0)
    return out


def split_backward(model, contributions: torch.Tensor, codes: torch.Tensor) -> ComponentFigures:
    """Backpropagate sum(contributions) role by role; set each parameter's .grad to G_S + G_D + G_O
    (what `contributions.sum().backward()` would give, up to float rounding) and return the
    figures of that gradient. `contributions` [B, T]: the per-token parts of the loss (the loss is
    their sum); `codes` [B, T] from role_codes. A token with code 0 must contribute 0."""
    if contributions.shape != codes.shape:
        raise ValueError(f"contributions {tuple(contributions.shape)} and codes {tuple(codes.shape)} differ")
    codes = codes.to(contributions.device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    comp: dict[str, list | None] = {}
    n_of = {}
    present = [key for key, role in COMPONENTS if bool((codes == ROLE_CODE[role]).any())]
    if not present:
        raise ValueError("no scored token in the batch: nothing to split")
    if bool((contributions.detach()[codes == 0] != 0).any()):
        raise ValueError("a token without a role (code 0) contributes to the loss: the split would miss it")
    for key, role in COMPONENTS:
        sel = codes == ROLE_CODE[role]
        n_of[key] = int(sel.sum())
        if not n_of[key]:
            comp[key] = None
            continue
        part = torch.where(sel, contributions, torch.zeros_like(contributions)).sum()
        last = key == present[-1]
        g = torch.autograd.grad(part, params, retain_graph=not last, allow_unused=True)
        comp[key] = [torch.zeros_like(p) if x is None else x.detach() for x, p in zip(g, params)]
    grams = component_grams(comp, names)
    n_params = sum(p.numel() for p in params)
    fig = component_figures("model", sum(grams.values()), n_params, n_of["S"], n_of["D"], n_of["O"])
    for i, p in enumerate(params):
        total = None
        for key in KEYS:
            if comp[key] is not None:
                total = comp[key][i].clone() if total is None else total + comp[key][i]
        p.grad = total
    return fig


def log_row(fig: ComponentFigures) -> dict:
    """The training log's split columns: split_<figure> for LOG_FIELDS, and the token counts."""
    row = {f"split_{k}": float(getattr(fig, k)) for k in LOG_FIELDS}
    row.update({"split_n_S": fig.n_S, "split_n_D": fig.n_D, "split_n_O": fig.n_O})
    return row
