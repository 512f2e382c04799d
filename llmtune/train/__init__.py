"""Training: the run directory, checkpoints, and one Accelerate loop for every method."""
