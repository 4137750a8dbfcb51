"""Stage 5: metrics, evaluation runs, the paper's Figure-1 toy and real-model gradient balance."""
