"""Evaluation: metrics for each task, run on a trained run directory or a base model."""
