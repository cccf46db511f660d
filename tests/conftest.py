"""Shared test settings: JAX on CPU, float32, hypothesis profile for slow CPU JIT."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("agm", max_examples=20, deadline=None, derandomize=True)
settings.load_profile("agm")
