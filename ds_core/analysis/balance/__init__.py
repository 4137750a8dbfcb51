"""Real-model gradient balance: dataset-level ratio distributions, the length sweep, the shipped precompute."""
