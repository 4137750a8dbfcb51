"""Which parameters an attribution covers: a short spec, parsed into parameter names.

For models whose whole parameter vector is too big to hold three gradient copies of (or too slow
to differentiate), the attribution can be restricted to parameter groups (ds_core.attribution.
groups). A spec is a comma-separated union of terms:

    all                     every parameter (the default)
    embeddings | head | final_norm
    attn | mlp              every layer's attention / MLP block (with its norm)
    last:K                  the last K transformer layers (attention and MLP)
    last:K.attn, last:K.mlp the attention / MLP blocks of the last K layers
    layers:A-B              layers A..B (inclusive, 0-based); layers:A-B.attn etc.
    layer.N.attn            one group by its name (as the per-group table lists them)

Everything not selected is held fixed: G_S, G_D, the shares and the alignments are then the
gradient restricted to the selected coordinates (exactly the naive loop's columns of those
parameters), and backward/forward-mode passes stop below the lowest selected layer. With a tied
head, `head` selects the shared embedding matrix.
"""

from __future__ import annotations

import re

from ds_core.attribution.groups import head_is_tied, parameter_groups
from ds_core.errors import UserError

ALL = "all"
SPEC_HELP = (
    "all (default); embeddings, head, final_norm; attn, mlp; last:K (the last K layers), last:K.attn, "
    "last:K.mlp; layers:A-B (inclusive), layers:A-B.attn; a group name such as layer.3.mlp; "
    "comma-separated terms are combined"
)
_RANGE = re.compile(r"^(?:last:(\d+)|layers:(\d+)-(\d+))(?:\.(attn|mlp))?$")


class SelectionError(UserError, ValueError):
    """A parameter spec that names nothing, or nothing this model has."""


def normalise(spec: str | None) -> str:
    """The canonical form of a spec: terms lower-cased, stripped, deduplicated, in order."""
    terms = [t.strip().lower() for t in str(spec or ALL).split(",") if t.strip()]
    out = list(dict.fromkeys(terms)) or [ALL]
    return ALL if ALL in out else ",".join(out)


def _layers(groups) -> list[int]:
    return sorted({int(g.split(".")[1]) for g in groups if g.startswith("layer.")})


def select(model, spec: str | None, names=None) -> list[str]:
    """The parameter names (in the model's order) that `spec` selects; SelectionError if a term
    is unknown or matches nothing."""
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    spec = normalise(spec)
    if spec == ALL:
        return list(names)
    groups = parameter_groups(model, names)
    layers = _layers(groups)
    picked: set[str] = set()
    for term in spec.split(","):
        if term == "head" and "head" not in groups and head_is_tied(model):  # the shared matrix
            picked.update(n for n in names if n in _tied_head_names(model))
            continue
        hit = _term_groups(term, groups, layers)
        if not hit:
            raise SelectionError(f"the parameter spec term {term!r} selects nothing: the model {_describe(groups)}")
        for g in hit:
            picked.update(groups[g])
    return [n for n in names if n in picked]


def _tied_head_names(model) -> set[str]:
    w = model.get_output_embeddings().weight
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is w}


def _term_groups(term: str, groups: dict, layers: list[int]) -> list[str]:
    if term in groups:
        return [term]
    if term in ("attn", "mlp"):
        return [g for g in groups if g.startswith("layer.") and g.endswith("." + term)]
    m = _RANGE.match(term)
    if m:
        if m.group(1) is not None:
            k = int(m.group(1))
            if k < 1:
                raise SelectionError(f"{term!r}: K must be at least 1")
            keep = set(layers[-k:])
        else:
            a, b = int(m.group(2)), int(m.group(3))
            if a > b:
                raise SelectionError(f"{term!r}: the range must run from low to high")
            keep = {i for i in layers if a <= i <= b}
        kinds = (m.group(4),) if m.group(4) else ("attn", "mlp")
        return [f"layer.{i}.{k}" for i in sorted(keep) for k in kinds if f"layer.{i}.{k}" in groups]
    if re.fullmatch(r"[a-z0-9_.:\-]+", term) is None:
        raise SelectionError(f"cannot read the parameter spec term {term!r}; accepted: {SPEC_HELP}")
    if term.startswith(("last", "layers")) and ":" not in term:
        raise SelectionError(f"{term!r}: write last:K or layers:A-B")
    return []


def _describe(groups: dict) -> str:
    layers = _layers(groups)
    rest = [g for g in groups if not g.startswith("layer.")]
    span = f"layers 0..{layers[-1]}" if layers else "no transformer layers"
    return f"it has {span} and {', '.join(rest) or 'no other groups'}"


def describe_selection(model, spec: str | None, names=None) -> str:
    """One line for a page or the CLI: which parameters a figure covers."""
    spec = normalise(spec)
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    sel = select(model, spec, names)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    total, part = sum(sizes[n] for n in names), sum(sizes[n] for n in sel)
    if spec == ALL:
        return f"all {total:,} parameters"
    return f"{spec}: {part:,} of {total:,} parameters ({part / total:.1%}), the rest held fixed"
