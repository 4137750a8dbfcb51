"""Input attribution: which earlier tokens drive a target token, batched over many targets.

Design notes: docs/DESIGN.md, section `ds_core.attribution.inputs`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ds_core.attribution.input_methods import (
    AGGREGATES,
    BASELINES,
    IG_METHODS,
    INPUT_METHODS,
    TARGETS,
    InputAttributionError,
)
from ds_core.attribution.input_result import InputAttributionResult
from ds_core.episodes.episode import Episode
from ds_core.episodes.tokenizer import decision_token_ids
from ds_core.models.locks import isolated
from ds_core.models.model import context_length

METHODS, TARGET_KINDS = tuple(INPUT_METHODS), tuple(TARGETS)
ROWS_PER_CHUNK = 64  # planned chunks: at most this many (target x IG step) rows ...
MAX_AUTO_CHUNK = 16  # ... and this many targets (memory: rows x prefix x hidden)
# Cost model of the planner, per token of one row, in units of the forward's cost (measured on
# CPU with the tiny Llama: the batched input-gradient backward costs ~1.6 forwards per target, a
# forward+backward call ~75 tokens' worth of fixed overhead; on GPU the overhead dominates).
BACKWARD_COST = 1.6
CALL_OVERHEAD_TOKENS = {"cpu": 75.0, "other": 4096.0}
CAUSALITY_TOL = 1e-6  # relative leak to tokens >= t tolerated (exact 0 expected)
JACOBIAN = "vmap"  # "vmap": is_grads_batched backward; "loop": one backward per target


# ---------------------------------------------------------------------------------- engine
def _logits_at(model, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits [rows, len(positions), V] at the given (sorted, unique) positions. Uses
    transformers' `logits_to_keep` (the LM head only at those positions) where the model has it."""
    try:
        logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=positions).logits
    except TypeError:
        logits = None
    if logits is None or logits.shape[1] != len(positions):
        logits = model(inputs_embeds=embeds, use_cache=False).logits[:, positions]
    return logits


class _Targets:
    """The vector-valued target function of a set of targets: embeds [rows, L, H] -> [rows, m]."""

    def __init__(self, model, kind: str, positions: list[int], token_ids: list[int], decision_ids: dict | None, device):
        self.model, self.kind = model, kind
        self.pred = torch.tensor([t - 1 for t in positions], dtype=torch.long, device=device)
        self.tok = torch.tensor(token_ids, dtype=torch.long, device=device)
        self.decision_ids = decision_ids

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        logits = _logits_at(self.model, embeds, self.pred).float()
        if self.kind == "logprob":
            lp = logits.log_softmax(-1)
            idx = self.tok.view(1, -1, 1).expand(lp.shape[0], -1, 1)
            return lp.gather(-1, idx).squeeze(-1)
        return logits[..., self.decision_ids["STOP"]] - logits[..., self.decision_ids["RESAMPLE"]]


class _CopiesForward:
    """captum forward_func for a chunk of m targets: the batch is blocks of m copies of the
    episode, row r belongs to target r % m and returns that target's value."""

    def __init__(self, fn: _Targets, m: int):
        self.fn, self.m = fn, m

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.fn(embeds)
        r = torch.arange(out.shape[0], device=out.device)
        return out[r, r % self.m]


class _TargetJacobian:
    """captum gradient_func: the same gradients `compute_gradients` would give for
    `_CopiesForward`, from one forward per distinct row and one batched backward over targets."""

    def __init__(self, fn: _Targets, m: int):
        self.fn, self.m = fn, m
        self.mode = JACOBIAN
        self.forwards = 0
        self.values = None  # [n, m] target values at the distinct rows of the last call

    def __call__(self, forward_fn, inputs, target_ind=None, additional_forward_args=None):
        (x,) = inputs
        m = self.m
        rows, L, H = x.shape
        n = rows // m
        blocks = x.detach().reshape(n, m, L, H)
        if m > 1 and not torch.equal(blocks, blocks[:, :1].expand_as(blocks)):
            raise RuntimeError("internal error: the target copies of the episode differ")
        u = blocks[:, 0].clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.fn(u)  # [n, m]
            self.forwards += 1
            self.values = out.detach()
            jac = self._jacobian(out, u)  # [m, n, L, H]
        return (jac.transpose(0, 1).reshape(rows, L, H).to(x.dtype),)

    def _jacobian(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        m = out.shape[1]
        if m == 1:
            self.mode = "single"
            return torch.autograd.grad(out[:, 0].sum(), u)[0].unsqueeze(0)
        eye = torch.zeros(m, *out.shape, dtype=out.dtype, device=out.device)
        eye[torch.arange(m), :, torch.arange(m)] = 1
        if self.mode == "vmap":
            try:
                return torch.autograd.grad(out, u, eye, retain_graph=True, is_grads_batched=True)[0]
            except RuntimeError:  # an op without a vmap batching rule: loop over the same graph
                self.mode = "loop"
        return torch.stack([torch.autograd.grad(out, u, eye[j], retain_graph=j < m - 1)[0] for j in range(m)])


def _plan_chunks(sorted_targets: list[int], rows: int, max_targets: int, overhead: float) -> list[list[int]]:
    """Group sorted target positions into chunks (one forward + one batched backward each).

    Cost of a chunk of m targets whose last one is at L: overhead + rows * L * (1 + b * m).
    Greedy, left to right: the next target t joins the current chunk (m targets, last at L)
    when that is cheaper than a chunk of its own, i.e. rows*b*m*(t - L) < rows*L + overhead.
    """
    chunks: list[list[int]] = []
    for t in sorted_targets:
        if chunks:
            cur = chunks[-1]
            m, L = len(cur), cur[-1]
            if m < max_targets and rows * BACKWARD_COST * m * (t - L) < rows * L + overhead:
                cur.append(t)
                continue
        chunks.append([t])
    return chunks


def _check_targets(episode: Episode, targets, kind: str, decision_ids) -> list[int]:
    n = len(episode.token_ids)
    if targets is None:
        targets = episode.positions("decision")
        if not targets:
            raise InputAttributionError(
                "the episode has no decision tokens (role 'decision'); pass targets=[positions]"
            )
    else:
        if isinstance(targets, (int, np.integer)):
            targets = [targets]
        targets = list(targets)
        if not targets:
            raise InputAttributionError("targets is empty")
    out = []
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise InputAttributionError(f"target positions must be integers, got {t!r}")
        t = int(t)
        if t == 0:
            raise InputAttributionError("target position 0 has no earlier token to attribute to")
        if not 0 < t < n:
            raise InputAttributionError(f"target position {t} out of range 1..{n - 1} ({n} tokens)")
        out.append(t)
    if len(set(out)) != len(out):
        raise InputAttributionError(f"duplicate target positions in {out}")
    if kind == "contrastive":
        if decision_ids is None:
            raise InputAttributionError(
                "target='contrastive' needs the [STOP]/[RESAMPLE] decision tokens, which this "
                "tokenizer does not have; use target='logprob'"
            )
        bad = [t for t in out if episode.roles[t] != "decision"]
        if bad:
            raise InputAttributionError(
                f"target='contrastive' is defined at decision positions only; positions {bad} have "
                f"roles {[episode.roles[t] for t in bad]} (use target='logprob' there)"
            )
    return out


def _baseline_embeds(embed_layer, embeds: torch.Tensor, baseline, tokenizer) -> tuple[torch.Tensor, object]:
    if baseline == "zeros":
        return torch.zeros_like(embeds), "zeros"
    if baseline in ("pad", "unk"):
        tid = getattr(tokenizer, f"{baseline}_token_id", None)
        if tid is None:
            raise InputAttributionError(
                f"baseline={baseline!r} but the tokenizer has no {baseline} token; "
                "use another baseline ('unk', 'pad', 'zeros') or a token id"
            )
    elif isinstance(baseline, (int, np.integer)) and not isinstance(baseline, bool):
        tid = int(baseline)
    else:
        raise InputAttributionError(f"unknown baseline {baseline!r}; choose one of {BASELINES} or a token id")
    if not 0 <= tid < embed_layer.weight.shape[0]:
        raise InputAttributionError(f"baseline token id {tid} outside the model's vocabulary")
    ids = torch.full(embeds.shape[:2], tid, dtype=torch.long, device=embeds.device)
    return embed_layer(ids).detach(), tid


@isolated  # eval mode and captum's hooks on the embedding layer for the duration
def input_attribution(
    model,
    tokenizer,
    episode: Episode,
    method: str = "ig",
    target: str = "contrastive",
    targets=None,
    n_steps: int = 32,
    *,
    baseline="unk",
    aggregate: str | None = None,
    ig_method: str = "gausslegendre",
    target_chunk: int | None = None,
) -> InputAttributionResult:
    """Attribute each target's function to every earlier token of `episode` (see module doc).

    method: "ig" | "saliency" | "input_x_gradient"; target: "contrastive" | "logprob";
    targets: positions (default: every decision token); n_steps, ig_method, baseline: IG only;
    aggregate: "sum" (signed sum over the hidden dim) | "l2" (its norm), default "l2" for
    saliency and "sum" otherwise; target_chunk: targets per forward/backward (default None:
    planned, see the module doc).
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputAttributionError(f"unknown method {method!r}; choose one of {METHODS}")
    if target not in TARGET_KINDS:
        raise InputAttributionError(f"unknown target {target!r}; choose one of {TARGET_KINDS}")
    aggregate = aggregate or INPUT_METHODS[method].default_aggregate
    if aggregate not in AGGREGATES:
        raise InputAttributionError(f"unknown aggregate {aggregate!r}; choose one of {AGGREGATES}")
    if method == "ig":
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise InputAttributionError(f"n_steps must be a positive integer, got {n_steps!r}")
        if ig_method not in IG_METHODS:
            raise InputAttributionError(f"unknown ig_method {ig_method!r}; choose one of {IG_METHODS}")
    if target_chunk is not None and (
        isinstance(target_chunk, bool) or not isinstance(target_chunk, int) or target_chunk < 1
    ):
        raise InputAttributionError(f"target_chunk must be a positive integer, got {target_chunk!r}")
    if not isinstance(episode, Episode):
        raise InputAttributionError(f"episode must be an Episode, got {type(episode).__name__}")

    ids = list(episode.token_ids)
    n_tok = len(ids)
    ctx = context_length(model)
    if n_tok > ctx:
        raise InputAttributionError(f"the episode has {n_tok} tokens, longer than the model's context of {ctx}")
    embed_layer = model.get_input_embeddings()
    vocab = getattr(embed_layer, "num_embeddings", None) or embed_layer.weight.shape[0]
    bad = sorted({t for t in ids if not 0 <= t < vocab})
    if bad:
        raise InputAttributionError(f"token ids {bad[:5]} are outside the model's vocabulary of {vocab}")
    decision_ids = decision_token_ids(tokenizer)
    if target == "contrastive" and decision_ids is not None and any(not 0 <= v < vocab for v in decision_ids.values()):
        raise InputAttributionError("the tokenizer's decision token ids are outside the model's vocabulary")
    tgts = _check_targets(episode, targets, target, decision_ids)

    rows_per_target = n_steps if method == "ig" else 1
    device = next(model.parameters()).device
    pos_sorted = sorted(tgts)
    if target_chunk is None:
        max_m = max(1, min(MAX_AUTO_CHUNK, ROWS_PER_CHUNK // rows_per_target))
        overhead = CALL_OVERHEAD_TOKENS["cpu" if device.type == "cpu" else "other"]
        plan = _plan_chunks(pos_sorted, rows_per_target, max_m, overhead)
    else:
        plan = [pos_sorted[i : i + target_chunk] for i in range(0, len(pos_sorted), target_chunk)]
    where = {t: i for i, t in enumerate(tgts)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.tensor([ids], dtype=torch.long, device=device)
            embeds = embed_layer(x).detach()  # [1, T, H]
            base, base_id = (
                _baseline_embeds(embed_layer, embeds, baseline, tokenizer) if method == "ig" else (None, None)
            )
        matrix = np.zeros((len(tgts), n_tok))
        signed_sums = np.zeros(len(tgts))
        target_values = np.zeros(len(tgts))
        jac_modes, n_forwards = set(), 0
        t_attr = time.perf_counter()
        for pos in plan:
            idx = [where[t] for t in pos]
            L, m = pos[-1], len(pos)
            fn = _Targets(model, target, pos, [ids[t] for t in pos], decision_ids, device)
            fwd, jac = _CopiesForward(fn, m), _TargetJacobian(fn, m)
            leaf = embeds[:, :L].clone().requires_grad_(True)
            inp = leaf.expand(m, L, leaf.shape[-1])
            algo = INPUT_METHODS[method].attributor(fwd)
            algo.gradient_func = jac
            if method == "ig":
                attr = algo.attribute(
                    inp, baselines=base[:, :L].expand(m, L, base.shape[-1]), n_steps=n_steps, method=ig_method
                )
            else:
                attr = algo.attribute(inp, **INPUT_METHODS[method].options)
            attr = attr.detach().float()  # [m, L, H]
            jac_modes.add(jac.mode)
            n_forwards += jac.forwards
            agg = attr.sum(-1) if aggregate == "sum" else attr.norm(dim=-1)
            if not torch.isfinite(attr).all():
                raise InputAttributionError(
                    f"non-finite attributions (NaN/inf gradients) for targets {pos}; the model's "
                    "outputs are not finite on this episode"
                )
            sums = attr.sum(-1).double().sum(-1).cpu().numpy()  # signed, for IG's delta
            agg = agg.double().cpu().numpy()
            for j, (i, t) in enumerate(zip(idx, pos)):
                past, future = agg[j, :t], agg[j, t:]
                if future.size and np.abs(future).max() > CAUSALITY_TOL * max(1.0, np.abs(past).max()):
                    raise InputAttributionError(
                        f"the target at position {t} has attributions on tokens at or after it "
                        f"(max {np.abs(future).max():.3g}): the model is not causal"
                    )
                matrix[i, :L] = agg[j]
                signed_sums[i] = sums[j]
                if method != "ig":  # the chunk's forward ran at the input itself
                    target_values[i] = float(jac.values[0, j])
        t_attr = time.perf_counter() - t_attr

        # IG: f at the input and at the baseline, for the convergence delta: one more forward
        t_val = time.perf_counter()
        baseline_values = deltas = None
        if method == "ig":
            L = pos_sorted[-1]
            with torch.no_grad():
                fn = _Targets(model, target, pos_sorted, [ids[t] for t in pos_sorted], decision_ids, device)
                vals = fn(torch.cat([embeds[:, :L], base[:, :L]], dim=0)).double().cpu().numpy()
            back = {t: k for k, t in enumerate(pos_sorted)}
            target_values = np.array([vals[0, back[t]] for t in tgts])
            baseline_values = np.array([vals[1, back[t]] for t in tgts])
            deltas = signed_sums - (target_values - baseline_values)
        t_val = time.perf_counter() - t_val
        if not np.isfinite(target_values).all() or (
            baseline_values is not None and not np.isfinite(baseline_values).all()
        ):
            raise InputAttributionError("the target function is not finite on this episode")
    finally:
        model.train(was_training)

    params = {
        "aggregate": aggregate,
        "target_chunk": target_chunk,
        "jacobian": "/".join(sorted(jac_modes)),
        "model_type": getattr(getattr(model, "config", None), "model_type", type(model).__name__),
    }
    if method == "ig":
        kind = baseline if baseline in BASELINES else "token"
        params.update(
            n_steps=n_steps, ig_method=ig_method, baseline=kind, baseline_token_id=None if kind == "zeros" else base_id
        )
    tokens = tuple(episode.tokens) if len(episode.tokens) == n_tok else tuple(tokenizer.convert_ids_to_tokens(ids))
    timing = {
        "total_s": time.perf_counter() - t0,
        "attribution_s": t_attr,
        "values_s": t_val,
        "forwards": n_forwards + (method == "ig"),
        "chunks": len(plan),
        "chunk_sizes": [len(c) for c in plan],
    }
    return InputAttributionResult(
        token_ids=tuple(ids),
        tokens=tokens,
        roles=tuple(episode.roles),
        segments=tuple(episode.segments),
        targets=tuple(tgts),
        method=method,
        target_kind=target,
        matrix=matrix,
        target_values=target_values,
        baseline_values=baseline_values,
        deltas=deltas,
        params=params,
        timing=timing,
    )
