"""Parameter groups for gradient attribution: embeddings, each layer's attention and MLP, final
norm, head, other.

Design notes: docs/DESIGN.md, section `ds_core.attribution.groups`.
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.(.+)$")
_ATTN_PARTS = {"self_attn", "attn", "attention", "self_attention", "mixer"}
_MLP_PARTS = {"mlp", "feed_forward", "ffn", "ff", "feedforward"}
_ATTN_NORMS = {"input_layernorm", "ln_1", "attention_norm", "ln_attn", "norm1", "attn_norm"}
_MLP_NORMS = {"post_attention_layernorm", "ln_2", "ffn_norm", "norm2", "mlp_norm", "pre_feedforward_layernorm"}
_EMBED_PARTS = {
    "embed_tokens",
    "wte",
    "wpe",
    "embed_positions",
    "word_embeddings",
    "position_embeddings",
    "embed_in",
    "tok_embeddings",
    "embeddings",
}
_HEAD_PARTS = {"lm_head", "embed_out", "output"}
_FINAL_NORMS = {"norm", "ln_f", "final_layernorm", "final_norm", "norm_f", "final_layer_norm"}
OTHER = "other"


def group_of(name: str, *, input_embedding_names=(), output_embedding_names=()) -> str:
    """The group of one parameter name (see the module docstring)."""
    m = _LAYER.search(name)
    if m:
        i, parts = m.group(1), m.group(2).split(".")
        if any(p in _ATTN_PARTS for p in parts) or parts[0] in _ATTN_NORMS:
            return f"layer.{i}.attn"
        if any(p in _MLP_PARTS for p in parts) or parts[0] in _MLP_NORMS:
            return f"layer.{i}.mlp"
        return OTHER
    parts = name.split(".")
    if name in input_embedding_names or any(p in _EMBED_PARTS for p in parts):
        return "embeddings"
    if name in output_embedding_names or any(p in _HEAD_PARTS for p in parts[:-1]):
        return "head"
    if any(p in _FINAL_NORMS for p in parts[:-1]):
        return "final_norm"
    return OTHER


def _order(group: str) -> tuple:
    if group == "embeddings":
        return (0, 0, 0)
    if group.startswith("layer."):
        _, i, kind = group.split(".")
        return (1, int(i), 0 if kind == "attn" else 1)
    return (2, {"final_norm": 0, "head": 1}.get(group, 2), 0)


def _weight_names(model, getter: str) -> set[str]:
    fn = getattr(model, getter, None)
    mod = fn() if callable(fn) else None
    w = getattr(mod, "weight", None) if mod is not None else None
    if w is None:
        return set()
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is w}


def head_is_tied(model) -> bool:
    """True when the output projection is the input embedding matrix itself."""
    try:
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return (
        inp is not None
        and out is not None
        and getattr(out, "weight", None) is not None
        and out.weight is getattr(inp, "weight", None)
    )


def parameter_groups(model, names=None) -> dict[str, list[str]]:
    """{group: [parameter names]} in display order (embeddings, layer.0.attn, layer.0.mlp, ...,
    final_norm, head, other) for the model's deduplicated named_parameters (or `names`)."""
    if names is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    inp, out = _weight_names(model, "get_input_embeddings"), _weight_names(model, "get_output_embeddings")
    if head_is_tied(model):
        out = set()
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(group_of(n, input_embedding_names=inp, output_embedding_names=out), []).append(n)
    return {g: groups[g] for g in sorted(groups, key=_order)}
