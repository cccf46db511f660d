"""Flax models: per-modality encoders, fusion heads, and the classifiers that join them.

Plain Flax modules: they know nothing about training methods. ``build_model`` maps a
``c.model`` config (``configs/default.py``) to a module.
"""

from agm_jax.models.classifier import (
                                       DTYPES,
                                       ENCODERS,
                                       FUSIONS,
                                       InputEarlyClassifier,
                                       MultimodalClassifier,
                                       build_model,
                                       make_encoder,
)
from agm_jax.models.encoders import MLP, ResNet18, TransformerEncoder
from agm_jax.models.fusion import (
                                       ConcatFusion,
                                       FiLMFusion,
                                       MaxOutFusion,
                                       SumFusion,
                                       is_late,
                                       late_fusions,
)

__all__ = [
    "DTYPES", "ENCODERS", "FUSIONS", "InputEarlyClassifier", "MultimodalClassifier",
    "build_model", "make_encoder", "MLP", "ResNet18", "TransformerEncoder", "ConcatFusion",
    "FiLMFusion", "MaxOutFusion", "SumFusion", "is_late", "late_fusions",
]
