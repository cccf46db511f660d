"""Ridge probe and competition strength (AGM §3.2, eq. 13).

The mono-modal concept ``C^m`` is a model trained on modality m alone. A ridge regression
``z -> C^m(x^m)`` from the multimodal model's penultimate feature ``z`` to the concept's
logits is fitted on one held-out split ("dep") and evaluated on another (test)::

    d^m = sum_i ||C^m_i - f^m(z_i)||^2 / sum_i ||C^m_i - mean C^m||^2          (eq. 13)

0: the multimodal model contains the concept linearly; 1: no better than the mean.

``whitened=True`` gives the form the released code computes (``test_compute_weight`` in its
CREMA-D, AV-MNIST and UR-Funny mains), transcribed term by term::

    B = cov(C) * N          # cov unbiased (denominator N - 1), as torch.cov
    d = trace((R @ pinv(B)).T @ R) / K

with ``R`` the residuals of the ridge prediction and ``C`` the concept's logits, both on the
evaluation split (``N`` rows, ``K`` columns), and ``pinv``'s cut-off at ``1e-15`` times the
largest singular value (torch.pinverse's and NumPy's default). So ``B`` is the scatter matrix
of ``C`` times ``N / (N - 1)``: a prediction equal to the evaluation mean gives
``(N - 1) / N * rank(B) / K`` where eq. 13 gives 1. (The released mains compute this value
and then drop it: nothing there logs or returns it.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=())
def ridge_fit(z: jax.Array, y: jax.Array, *, l2: float):
  """Ridge regression as scikit-learn's ``Ridge(alpha=l2).fit(z, y)``.

  Squared loss summed over samples plus ``l2 * ||W||^2``; the intercept is not penalised
  (both sides are centred). Solves the primal ``(D, D)`` system when N >= D and the dual
  ``(N, N)`` one otherwise.

  Args:
    z: ``(N, D)`` features.
    y: ``(N, K)`` or ``(N,)`` targets.
    l2: the penalty (scikit-learn's ``alpha``).
  Returns:
    ``(W, b)``: ``W`` of shape ``(D, K)`` (``coef_.T``; ``(D,)`` for 1-D ``y``), ``b`` the
    intercept, so that ``predict(z) = z @ W + b``.
  """
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  vector = y.ndim == 1
  y2 = y[:, None] if vector else y
  z_mean, y_mean = z.mean(0), y2.mean(0)
  zc, yc = z - z_mean, y2 - y_mean
  n, d = z.shape
  if n >= d:
    gram = zc.T @ zc + l2 * jnp.eye(d, dtype=z.dtype)
    w = jax.scipy.linalg.solve(gram, zc.T @ yc, assume_a="pos")
  else:
    gram = zc @ zc.T + l2 * jnp.eye(n, dtype=z.dtype)
    w = zc.T @ jax.scipy.linalg.solve(gram, yc, assume_a="pos")
  b = y_mean - z_mean @ w
  return (w[:, 0], b[0]) if vector else (w, b)


@functools.partial(jax.jit, static_argnames=("whitened",))
def competition_strength(z_fit: jax.Array, c_fit: jax.Array, z_eval: jax.Array,
                         c_eval: jax.Array, *, l2: float = 120.0,
                         whitened: bool = False) -> jax.Array:
  """``d^m``: how far the concept's logits are from a ridge map of the multimodal feature.

  Args:
    z_fit, c_fit: feature ``(N, D)`` and concept logits ``(N, K)`` to fit the ridge on (dep).
    z_eval, c_eval: the same on the evaluation split (test).
    l2: ridge penalty (120 in the paper).
    whitened: the released code's ``trace((R B^+)^T R) / K``, ``B = cov(C) * N`` (module
      docstring), instead of eq. 13.
  Returns:
    A float32 scalar.
  """
  w, b = ridge_fit(z_fit, c_fit, l2=l2)
  c_eval = jnp.asarray(c_eval, jnp.float32)
  resid = c_eval - (jnp.asarray(z_eval, jnp.float32) @ w + b)
  centred = c_eval - c_eval.mean(0)
  if whitened:
    n = c_eval.shape[0]
    b_mat = (centred.T @ centred) / (n - 1) * n      # torch.cov(C.T) * N
    return jnp.trace((resid @ jnp.linalg.pinv(b_mat, rtol=1e-15)).T @ resid) / c_eval.shape[-1]
  return jnp.sum(resid**2) / jnp.sum(centred**2)
