"""One process-wide lock for model calls, and a guard that makes it the only way to call a model.

The app shares each loaded model between browser sessions (st.cache_resource). Several calls
change process- or model-wide state for their duration: attribution switches a model to eager
attention and the math SDPA kernel (a global setting) and swaps its parameters
(torch.func.functional_call); captum hooks its embedding layer; loading uses transformers' global
init flags. A forward pass made meanwhile by another session sees that state (eager attention
gives other numbers than SDPA). So every model call runs under MODEL_LOCK, and `guard(model)`,
which load_checkpoint applies to every model it loads, makes a forward pass without the lock
fail at once (UnisolatedModelCall) instead of silently returning other numbers.

One re-entrant lock, not one per model: attribute(model, ref_model=...) takes two models, and
per-model locks taken in opposite orders by two sessions would deadlock. On a CPU-bound server the
serialisation costs nothing that parallel calls would have gained.
"""

from __future__ import annotations

import threading

MODEL_LOCK = threading.RLock()
_GUARDED = "_ds_lens_guarded"


class UnisolatedModelCall(RuntimeError):
    """A guarded model was called without MODEL_LOCK (a bug in DS-Lens, not a user error)."""


def holds_model_lock() -> bool:
    return MODEL_LOCK._is_owned()


def _check(module, args, kwargs):
    if not MODEL_LOCK._is_owned():
        raise UnisolatedModelCall(
            f"{type(module).__name__} was called without ds_core.models.locks.MODEL_LOCK: another session may "
            "be changing its attention or parameters; wrap the call in `with MODEL_LOCK:`"
        )


def isolated(fn):
    """Run `fn` under MODEL_LOCK (a decorator for functions that use a model for several calls)."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with MODEL_LOCK:
            return fn(*args, **kwargs)

    return run


def guard(model) -> None:
    """Refuse any forward pass of `model` made without MODEL_LOCK (idempotent)."""
    if not getattr(model, _GUARDED, False):
        model.register_forward_pre_hook(_check, with_kwargs=True)
        setattr(model, _GUARDED, True)
