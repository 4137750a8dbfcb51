"""Per-token objective terms (torch) shared by training (SFT, DFT, GRPO + KL) and attribution.

Design notes: docs/DESIGN.md, section `ds_core.objectives.terms`.
"""

from __future__ import annotations

import torch

LOG_RATIO_CLAMP = 20.0  # verl: log-ratios are clamped to [-20, 20] before exp (ratio and k3)
K3_MAX = 10.0  # verl's low_var_kl also clamps the per-token k3 value to [-10, 10]
REDUCTIONS = ("token_mean", "seq_mean", "sum")


# ---------------------------------------------------------------- validation helpers
def _check_2d(name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [B, T], got {tuple(x.shape)}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but logp has {tuple(like.shape)}")


def _mask(mask, logp: torch.Tensor) -> torch.Tensor:
    """Validate a bool/int/float mask against logp; return it as logp's float dtype."""
    _check_2d("mask", mask, logp)
    return mask.to(dtype=logp.dtype if logp.is_floating_point() else torch.float32, device=logp.device)


def _apply(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x * m, and exactly 0 (with zero gradient) where m == 0 even if x is inf/nan there."""
    return torch.where(m != 0, x * m, torch.zeros_like(x))


# ---------------------------------------------------------------- log-probabilities
def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    *,
    first: int = 1,
) -> torch.Tensor:
    """logp [B, T] of each token given its prefix, from a transformers causal LM.

    logp[:, 0] = 0. With an attention mask (left padding allowed), position ids default to
    cumsum(mask) - 1 clamped at 0, so a left-padded row sees the same positions as unpadded, and
    logp is 0 on padding and on each row's first real token (it has no real prefix to predict
    it from). Computed in float32 (log_softmax + gather); differentiable.

    `first` > 1: only positions >= first are scored (logp 0 before): the model is asked for the
    logits of the last T - first + 1 positions only (transformers' `logits_to_keep`), which skips
    the vocabulary projection over a prompt whose tokens carry no objective term.
    """
    _check_2d("input_ids", input_ids)
    if attention_mask is not None:
        _check_2d("attention_mask", attention_mask, input_ids)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    T = input_ids.shape[1]
    first = max(1, min(int(first), T))
    kw = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    logits = None
    if first > 1:
        try:
            logits = model(**kw, logits_to_keep=T - first + 1).logits
        except TypeError:  # a model without logits_to_keep: all positions, sliced below
            logits = None
        if logits is not None and logits.shape[1] != T - first + 1:
            logits = logits[:, -(T - first + 1) :]
    if logits is None:
        logits = model(**kw).logits[:, first - 1 :]
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    lp = lp.gather(-1, input_ids[:, first:].unsqueeze(-1)).squeeze(-1)
    logp = torch.cat([torch.zeros_like(input_ids[:, :first], dtype=lp.dtype), lp], dim=1)
    if attention_mask is not None:
        am = attention_mask.bool()
        has_prefix = torch.zeros_like(am)
        has_prefix[:, 1:] = am[:, 1:] & am[:, :-1]
        logp = torch.where(has_prefix, logp, torch.zeros_like(logp))
    return logp


# ---------------------------------------------------------------- supervised terms
def sft_terms(logp: torch.Tensor, mask) -> torch.Tensor:
    """sft_sum: the token NLL -logp. Summed, each sequence weighs in by its length."""
    _check_2d("logp", logp)
    return _apply(-logp, _mask(mask, logp))


def sft_mean_terms(logp: torch.Tensor, mask) -> torch.Tensor:
    """sft_mean: -logp / n_tokens(b): each sequence's terms sum to its mean NLL."""
    _check_2d("logp", logp)
    m = _mask(mask, logp)
    return _apply(-logp, m) / m.sum(-1, keepdim=True).clamp(min=1)


def balanced_weights(sampling_mask, decision_mask) -> torch.Tensor:
    """Per-token weights [B, T] that give each sequence's decision tokens as much total weight as
    its sampling tokens: w = 1 on every token, except w = n_S / n_D on the decision tokens of a
    sequence with n_S sampling and n_D >= 1 decision tokens. SFT's token sum gives the few
    decision tokens a share ~n_D / (n_S + n_D) of the loss; weighted, they carry half of the
    sampling + decision weight whatever the attempts' length (the lab's `reflection_balanced`)."""
    _check_2d("sampling_mask", sampling_mask)
    _check_2d("decision_mask", decision_mask, sampling_mask)
    s = sampling_mask.float()
    d = decision_mask.float()
    n_s, n_d = s.sum(-1, keepdim=True), d.sum(-1, keepdim=True)
    scale = torch.where(n_d > 0, n_s / n_d.clamp(min=1), torch.ones_like(n_d))
    return torch.where(d != 0, scale.expand_as(d), torch.ones_like(d))


def weighted_token_mean(terms: torch.Tensor, mask, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * terms) / sum(w * mask): the token mean with per-token weights (w = 1: token_mean)."""
    _check_2d("terms", terms)
    _check_2d("weights", weights, terms)
    m = _mask(mask, terms)
    return (terms * weights).sum() / (weights * m).sum().clamp(min=1e-12)


def dft_terms(logp: torch.Tensor, mask) -> torch.Tensor:
    """dft: Dynamic Fine-Tuning (Wu et al. 2025): -sg(p) * logp, so d term / d logp = -p."""
    _check_2d("logp", logp)
    m = _mask(mask, logp)
    p = torch.exp(torch.where(m != 0, logp, torch.zeros_like(logp))).detach()
    return _apply(-p * logp, m)


# ---------------------------------------------------------------- GRPO
def group_advantages(rewards, group_size: int | None = None, eps: float = 1e-6) -> torch.Tensor:
    """GRPO group-relative advantages A_i = (R_i - mean_group) / (std_group + eps).

    `rewards` is [N, G] (one row per query, G rollouts) or flat [N * G] with `group_size`; the
    result has the input's shape. std is the unbiased one (torch.std default, as in common GRPO
    code, e.g. verl). A group whose rewards are all equal (including G = 1) has no relative
    signal: its advantages are exactly 0, never nan.
    """
    r = torch.as_tensor(rewards).float()
    flat = r.dim() == 1
    if flat:
        if group_size is None or group_size < 1 or r.numel() % group_size:
            raise ValueError(f"flat rewards of length {r.numel()} need a group_size dividing it, got {group_size!r}")
        r = r.view(-1, group_size)
    elif r.dim() != 2:
        raise ValueError(f"rewards must be [N, G] or flat [N*G], got {tuple(r.shape)}")
    elif group_size is not None and group_size != r.shape[1]:
        raise ValueError(f"group_size={group_size} but rewards are {tuple(r.shape)}")
    same = (r == r[:, :1]).all(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True) if r.shape[1] > 1 else torch.zeros_like(r[:, :1])
    adv = (r - r.mean(dim=1, keepdim=True)) / (std + eps)
    adv = torch.where(same, torch.zeros_like(adv), adv)
    return adv.reshape(-1) if flat else adv


def _log_ratio(logp, other, m):
    """logp - sg(other), 0 where masked, clamped to +-LOG_RATIO_CLAMP (verl)."""
    lr = torch.where(m != 0, logp - other.detach(), torch.zeros_like(logp))
    return lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _surrogate_parts(logp, old_logp, advantages, mask, clip_eps):
    _check_2d("logp", logp)
    _check_2d("old_logp", old_logp, logp)
    m = _mask(mask, logp)
    adv = torch.as_tensor(advantages, dtype=logp.dtype, device=logp.device)
    if adv.shape != (logp.shape[0],):
        raise ValueError(f"advantages must have shape [B] = ({logp.shape[0]},), got {tuple(adv.shape)}")
    ratio = torch.exp(_log_ratio(logp, old_logp, m))
    a = adv.detach().unsqueeze(1)
    unclipped, clipped = -ratio * a, -ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    return m, ratio, unclipped, clipped


def surrogate_terms(logp, old_logp, advantages, mask, clip_eps: float = 0.2) -> torch.Tensor:
    """surrogate: PPO/GRPO clipped term -min(r A, clip(r, 1-eps, 1+eps) A), r = pi/sg(pi_old).

    `advantages` is [B] (one per sequence, broadcast over its tokens). On-policy (r = 1) its
    gradient is -A * grad logp for every token: Theorem 3.1's balanced attribution. The ratio's
    log is clamped to [-20, 20] as in verl (no effect on gradients inside that range).
    """
    m, _, unclipped, clipped = _surrogate_parts(logp, old_logp, advantages, mask, clip_eps)
    return _apply(torch.maximum(unclipped, clipped), m)  # -min(rA, clip(r)A) = max(-rA, -clip A)


# ---------------------------------------------------------------- KL penalties
def kl_k1_terms(logp, ref_logp, mask) -> torch.Tensor:
    """kl_k1: log pi/pi_ref per token (the KL-in-reward estimator); d/dlogp = 1 per token,
    so a trajectory's sum grows with its length (Theorem 3.2)."""
    _check_2d("logp", logp)
    _check_2d("ref_logp", ref_logp, logp)
    return _apply(logp - ref_logp.detach(), _mask(mask, logp))


def kl_k3_terms(logp, ref_logp, mask) -> torch.Tensor:
    """kl_k3 (verl "low_var_kl"): exp(d) - d - 1 with d = sg(ref) - logp; >= 0, 0 iff equal.

    As in verl, d is clamped to [-20, 20] and the value to at most K3_MAX = 10 (where a clamp
    is active the gradient is 0). d/dlogp = 1 - exp(ref - logp) otherwise.
    """
    _check_2d("logp", logp)
    _check_2d("ref_logp", ref_logp, logp)
    m = _mask(mask, logp)
    d = -_log_ratio(logp, ref_logp, m)
    return _apply((torch.exp(d) - d - 1).clamp(max=K3_MAX), m)


# ---------------------------------------------------------------- reduction and GRPO loss
def reduce_terms(terms: torch.Tensor, mask, mode: str = "token_mean") -> torch.Tensor:
    """Reduce [B, T] terms to a scalar.

    token_mean: sum / total masked tokens in the batch (verl "token-mean");
    seq_mean:   mean over sequences (with >= 1 masked token) of each sequence's token mean;
    sum:        plain sum.
    """
    _check_2d("terms", terms)
    m = _mask(mask, terms)
    if mode == "sum":
        return terms.sum()
    if mode == "token_mean":
        return terms.sum() / m.sum().clamp(min=1)
    if mode == "seq_mean":
        n = m.sum(-1)
        per_seq = terms.sum(-1) / n.clamp(min=1)
        return (per_seq * (n > 0)).sum() / (n > 0).sum().clamp(min=1)
    raise ValueError(f"unknown reduction {mode!r}; choose one of {REDUCTIONS}")


def grpo_loss(
    logp,
    old_logp,
    ref_logp,
    advantages,
    mask,
    clip_eps: float = 0.2,
    kl_coef: float = 0.001,
    reduction: str = "token_mean",
    surrogate_mask=None,
    per_token: bool = False,
):
    """GRPO loss = reduce(surrogate + kl_coef * k3) and a stats dict of floats.

    `surrogate_mask` ([B, T], optional): the tokens whose surrogate term counts (the lab's
    `rl_sampling_only` passes the non-decision tokens: the decision tokens then get only the KL
    term); the reduction's token count stays that of `mask`. `per_token=True` also returns the
    per-token terms [B, T] the loss reduces (for the gradient split of ds_core.training.split):
    (loss, stats, terms), loss = reduce_terms(terms, mask, reduction).

    stats: ratio_mean (mean r over masked tokens), clip_frac (fraction of masked tokens where the
    clipped branch is active, i.e. verl's pg_clipfrac), kl_k3 and kl_k1 (masked token means),
    surrogate (token mean of the surrogate terms), loss.
    """
    m, ratio, unclipped, clipped = _surrogate_parts(logp, old_logp, advantages, mask, clip_eps)
    sm = m if surrogate_mask is None else m * _mask(surrogate_mask, logp)
    surr = _apply(torch.maximum(unclipped, clipped), sm)
    k3 = kl_k3_terms(logp, ref_logp, m)
    terms = surr + kl_coef * k3
    loss = reduce_terms(terms, m, reduction)
    n = m.sum().clamp(min=1)
    with torch.no_grad():
        stats = {
            "ratio_mean": float(_apply(ratio, m).sum() / n),
            "clip_frac": float(_apply((clipped > unclipped).to(m.dtype), m).sum() / n),
            "kl_k3": float(k3.sum() / n),
            "kl_k1": float(kl_k1_terms(logp, ref_logp, m).sum() / n),
            "surrogate": float(surr.sum() / n),
            "loss": float(loss),
        }
    return (loss, stats, terms) if per_token else (loss, stats)
