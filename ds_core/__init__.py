"""DS-Lens core: the science of the Two-Stage Decision-Sampling hypothesis, as a library.

    from ds_core import load_checkpoint, rollout, SamplingConfig, attribute, input_attribution, evaluate
    ckpt = load_checkpoint("checkpoints/rl")
    eps = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, test_set("3x4")[:8], SamplingConfig(), seed=0)
    res = attribute(ckpt, eps[0], "sft_sum")                 # decision vs sampling gradient split

The pipeline is the package layout: episodes (tasks, episode format, roles) -> models (checkpoints,
rollout) -> objectives -> attribution -> analysis (metrics, evaluation, the toy) -> store; cli is
`python -m ds_core`. Names are imported on first use, so `import ds_core` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    # episodes
    "Problem": "ds_core.episodes.tasks",
    "TaskSpec": "ds_core.episodes.tasks",
    "TaskError": "ds_core.episodes.tasks",
    "parse_sizes": "ds_core.episodes.tasks",
    "parse_prompt": "ds_core.episodes.tasks",
    "test_set": "ds_core.episodes.tasks",
    "sample_problems": "ds_core.episodes.tasks",
    "pick_problem": "ds_core.episodes.tasks",
    "Episode": "ds_core.episodes.episode",
    "parse_episode": "ds_core.episodes.episode",
    "DSFormat": "ds_core.episodes.formats",
    "TextFormat": "ds_core.episodes.formats",
    "EpisodeFormat": "ds_core.episodes.formats",
    "format_for": "ds_core.episodes.formats",
    "SpecialTokenTagger": "ds_core.episodes.roles",
    "LexicalMarkerTagger": "ds_core.episodes.roles",
    "build_tokenizer": "ds_core.episodes.tokenizer",
    # models
    "Checkpoint": "ds_core.models.checkpoint",
    "Card": "ds_core.models.checkpoint",
    "CheckpointError": "ds_core.models.checkpoint",
    "load_checkpoint": "ds_core.models.checkpoint",
    "save_checkpoint": "ds_core.models.checkpoint",
    "find_checkpoints": "ds_core.models.checkpoint",
    "content_hash": "ds_core.models.checkpoint",
    "SamplingConfig": "ds_core.models.sampling",
    "Prefix": "ds_core.models.sampling",
    "RolloutError": "ds_core.models.sampling",
    "rollout": "ds_core.models.rollout",
    "init_model": "ds_core.models.model",
    # objectives
    "OBJECTIVES": "ds_core.objectives",
    "get_objective": "ds_core.objectives",
    # attribution
    "attribute": "ds_core.attribution.gradient",
    "grpo_advantage": "ds_core.attribution.gradient",
    "AttributionResult": "ds_core.attribution.result",
    "AttributionError": "ds_core.attribution.engine",
    "input_attribution": "ds_core.attribution.inputs",
    "InputAttributionResult": "ds_core.attribution.input_result",
    "INPUT_METHODS": "ds_core.attribution.input_methods",
    "attribute_dataset": "ds_core.attribution.dataset",
    "resolve_ref": "ds_core.attribution.reference",
    # analysis
    "evaluate": "ds_core.analysis.evaluate",
    "calibration": "ds_core.analysis.metrics",
    "accuracy": "ds_core.analysis.metrics",
    "ToyConfig": "ds_core.analysis.toy",
    "run_toy": "ds_core.analysis.toy",
    # store
    "ResultsStore": "ds_core.store",
    "RunKey": "ds_core.store",
    "StoreError": "ds_core.store",
    # errors
    "UserError": "ds_core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ds_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
