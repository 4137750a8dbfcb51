"""The KL reference of a checkpoint: its card's parent, found next to it, or the user's choice.

One lookup for the CLI (`--ref`), the dataset-level runs, the balance views and the pages.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ds_core.models.checkpoint import content_hash, find_checkpoints, load_checkpoint, read_card


def parent_checkpoint(ckpt) -> Path | None:
    """The directory, next to `ckpt`, of the checkpoint whose content hash is ckpt.card.parent."""
    card, path = getattr(ckpt, "card", None), getattr(ckpt, "path", None)
    if card is None or not card.parent or path is None:
        return None
    here = Path(path).resolve()
    for d in find_checkpoints(here.parent):
        if d.resolve() == here:
            continue
        try:
            if content_hash(d) == card.parent:
                return d
        except OSError:
            continue
    return None


def resolve_ref(ckpt, ref=None) -> tuple[object | None, str]:
    """(the KL reference, a note saying which one or why there is none). `ref`: a Checkpoint, a
    directory, or None for the checkpoint's parent (module docstring)."""
    if ref is not None:
        if isinstance(ref, (str, Path)):
            ref = load_checkpoint(ref)
        where, h = getattr(ref, "path", None), getattr(ref, "hash", None)
        card = getattr(ckpt, "card", None)
        is_parent = bool(h) and card is not None and card.parent == h
        what = ("the checkpoint's parent, " if is_parent else "") + (f"hash {h}" if h else "")
        return ref, f"KL reference: {where or 'the given model'}" + (f" ({what})" if what else "")
    card, path = getattr(ckpt, "card", None), getattr(ckpt, "path", None)
    if card is None or not card.parent:
        return None, ("no KL reference: the checkpoint's card names no parent; give one with ref= (--ref DIR)")
    d = parent_checkpoint(ckpt)
    if d is None:
        folder = Path(path).resolve().parent if path is not None else "its folder"
        return None, (
            f"no KL reference: the checkpoint's parent (hash {card.parent}) is not among "
            f"the checkpoints in {folder}; give one with ref= (--ref DIR)"
        )
    r = load_checkpoint(d)
    return r, f"KL reference: {d} (the checkpoint's parent, hash {r.hash})"


def parent_among(ckpt, candidates: dict[str, str]) -> str | None:
    """The label, among `candidates` (label -> directory), of the checkpoint's parent (its card's
    content hash), or None."""
    card = getattr(ckpt, "card", None)
    if card is None or not card.parent:
        return None
    return next((label for label, p in candidates.items() if content_hash(p) == card.parent), None)


def reference_for(ckpt) -> tuple[str | None, str]:
    """(directory of the checkpoint's KL reference = its card's parent, or None; a note why),
    without loading a model."""
    card = getattr(ckpt, "card", None)
    if card is None or not card.parent:
        return None, "this checkpoint's card names no parent, so it has no default KL reference"
    d = parent_checkpoint(ckpt)
    if d is None:
        return None, (f"this checkpoint's parent (hash {card.parent}) is not among the checkpoints next to it")
    return str(d), f"KL reference: {d.name}, the checkpoint's parent (hash {card.parent})"


def default_ref_hash(path) -> str | None:
    """The content hash of the KL reference the dataset-level runs use by default for the
    checkpoint at `path` (its card's parent, when that checkpoint sits in the same folder), or
    None; without loading any model."""
    p = Path(path).expanduser()
    try:
        card = read_card(p)
    except Exception:  # noqa: BLE001 - an unreadable card just means "no parent"
        card = None
    d = parent_checkpoint(SimpleNamespace(card=card, path=p))
    return content_hash(d) if d is not None else None
