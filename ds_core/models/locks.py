"""One process-wide lock for model calls that change or depend on a model's mode.

The app shares each loaded model between browser sessions (st.cache_resource), and attribution
switches a model to eager attention for the duration (attribution_engine.autodiff_attention).
Holding MODEL_LOCK there and around rollouts keeps two sessions from seeing each other's switch.
One re-entrant lock, not one per model: attribute(model, ref_model=...) takes two models, and
per-model locks taken in opposite orders by two sessions would deadlock. On a CPU-bound server the
serialisation costs nothing that parallel calls would have gained.
"""

import threading

MODEL_LOCK = threading.RLock()
