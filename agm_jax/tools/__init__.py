"""Command-line tools on top of the trainer: ``python -m agm_jax.tools.report`` (paper-style
tables and plots from workdirs) and ``python -m agm_jax.tools.bench`` (step times)."""
