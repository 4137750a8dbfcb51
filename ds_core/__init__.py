"""DS-Lens core: tasks, episodes, checkpoints, rollout, metrics, results store."""
__version__ = "0.1.0"
