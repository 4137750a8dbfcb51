"""Stage 1 of the pipeline: problems, the episode format, how a generation is read into attempts and decisions."""
