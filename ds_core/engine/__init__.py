"""Batch jobs as work units, run in this process or on Ray actors (README: 'Running on a Ray cluster')."""
