"""Stage 4: where an objective's gradient goes (decision vs sampling tokens) and which inputs drive a decision."""
