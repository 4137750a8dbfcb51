"""The Gradient balance page's toy controls: one per ToyConfig field (ds_core.analysis.toy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Control:
    """One ToyConfig field as a page control: a slider (int/float), or a select (choice)."""

    name: str
    label: str
    kind: str  # "int", "float", "choice"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    help: str = ""


TOY_CONTROLS = (
    Control("kl_weight", "KL weight w", "float", 0.0, 2.0, 0.05, help="J = surrogate - w * KL; 0 switches the KL off"),
    Control(
        "attempt_length",
        "attempt length L (tokens)",
        "int",
        1,
        64,
        1,
        help="sampling tokens per attempt; decisions are 1 token",
    ),
    Control("lr", "learning rate", "float", 0.01, 1.0, 0.01, help="plain gradient ascent step"),
    Control(
        "reset_period",
        "reference reset period",
        "int",
        1,
        200,
        1,
        help="the KL reference is set to the current logits every this many steps",
    ),
    Control("steps", "training steps", "int", 10, 1000, 10),
    Control("group_size", "GRPO group size G", "int", 2, 64, 1),
    Control(
        "max_attempts", "retry cap M", "int", 1, 16, 1, help="after attempt M the episode ends without a decision token"
    ),
    Control("init_s", "initial theta_s", "float", -4.0, 4.0, 0.1, help="p_s = sigmoid(theta_s)"),
    Control(
        "init_dC", "initial theta_dC", "float", -4.0, 4.0, 0.1, help="p_dC = P(STOP | correct) = sigmoid(theta_dC)"
    ),
    Control(
        "init_dW", "initial theta_dW", "float", -4.0, 4.0, 0.1, help="p_dW = P(RESAMPLE | wrong) = sigmoid(theta_dW)"
    ),
    Control(
        "kl_estimator",
        "KL estimator",
        "choice",
        options=("k3", "k1"),
        help="k3: verl's low_var_kl loss (the paper's experiment); k1: log pi/pi_ref in the return",
    ),
    Control(
        "mode",
        "expectation",
        "choice",
        options=("exact", "sample"),
        help="exact: enumerate every trajectory; sample: Monte-Carlo groups",
    ),
    Control("batch", "groups per step (sample mode)", "int", 1, 256, 1),
    Control("seed", "seed (sample mode)", "int", 0, 10_000, 1),
)
