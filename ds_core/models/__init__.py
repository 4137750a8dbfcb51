"""Stage 2: checkpoints (safetensors only), sampling settings, batched KV-cached rollout, teacher forcing."""
