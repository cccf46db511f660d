"""Ridge probe parity with scikit-learn, and competition strength (AGM eq. 13)."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from agm_jax import probe


@pytest.mark.parametrize("n,d,k", [(200, 16, 6), (20, 50, 3), (40, 7, 1)])
def test_ridge_matches_sklearn(n, d, k):
  rng = np.random.default_rng(n)
  z = rng.normal(size=(n, d)) * 2 + 1
  y = z @ rng.normal(size=(d, k)) + rng.normal(size=(n, k)) + 3
  y = y[:, 0] if k == 1 else y
  ref = Ridge(alpha=12.0).fit(z, y)
  w, b = probe.ridge_fit(z, y, l2=12.0)
  np.testing.assert_allclose(np.asarray(w), ref.coef_.T, rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(np.asarray(b), ref.intercept_, rtol=2e-3, atol=2e-3)


def _split(rng, n, d):
  return rng.normal(size=(n, d)).astype(np.float32)


def test_competition_strength_exact_linear_map_is_zero():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(16, 6))
  z_fit, z_eval = _split(rng, 3000, 16), _split(rng, 1000, 16)
  d = probe.competition_strength(z_fit, z_fit @ a + 1, z_eval, z_eval @ a + 1)
  assert float(d) < 0.01
  dw = probe.competition_strength(z_fit, z_fit @ a + 1, z_eval, z_eval @ a + 1, whitened=True)
  assert float(dw) < 0.01


def test_competition_strength_unrelated_targets_is_one():
  rng = np.random.default_rng(1)
  z_fit, z_eval = _split(rng, 3000, 16), _split(rng, 1000, 16)
  c_fit, c_eval = _split(rng, 3000, 6), _split(rng, 1000, 6)
  assert abs(float(probe.competition_strength(z_fit, c_fit, z_eval, c_eval)) - 1) < 0.05
  assert abs(float(probe.competition_strength(z_fit, c_fit, z_eval, c_eval, whitened=True))
             - 1) < 0.05


def test_competition_strength_partial():
  """Half of the concept's variance explained -> d about 1/2."""
  rng = np.random.default_rng(2)
  z_fit, z_eval = _split(rng, 4000, 8), _split(rng, 2000, 8)
  a = rng.normal(size=(8, 1)) / np.sqrt(8)
  noise = lambda n: rng.normal(size=(n, 1)) * np.sqrt((a**2).sum())  # noqa: E731
  d = probe.competition_strength(z_fit, z_fit @ a + noise(4000), z_eval, z_eval @ a + noise(2000))
  assert abs(float(d) - 0.5) < 0.05
