"""The trainer: train state, jitted steps, the epoch loop, checkpoints and metric writers."""
