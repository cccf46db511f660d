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


def test_whitened_matches_released_formula():
  """A NumPy transcription of the released test_compute_weight: Ridge(alpha=120) fitted on
  dep, R its residuals on test, B = cov(C.T) * N (unbiased cov), trace((R pinv(B)).T R) / K."""
  rng = np.random.default_rng(3)
  n, d, k = 20, 6, 3
  z_dep, z_test = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  a = rng.normal(size=(d, k))
  c_dep = z_dep @ a + rng.normal(size=(n, k))
  c_test = z_test @ a + rng.normal(size=(n, k))
  resid = Ridge(alpha=120).fit(z_dep, c_dep).predict(z_test) - c_test
  b = np.cov(c_test.T) * c_test.shape[0]
  expected = np.trace((resid @ np.linalg.pinv(b)).T @ resid) / c_test.shape[1]
  got = probe.competition_strength(z_dep, c_dep, z_test, c_test, l2=120.0, whitened=True)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_whitened_and_eq13_by_hand():
  """A constant feature: the ridge predicts the dep mean (0, 1); on test C = [[0, 1], [2, 1]],
  so R = [[0, 0], [2, 0]]. Eq. 13: 4 / 2 = 2. Whitened: B = cov(C) * 2 = diag(4, 0),
  pinv(B) = diag(1/4, 0), trace = 1, / K = 0.5 (the scatter matrix would give 1)."""
  z_dep, z_test = np.ones((2, 1)), np.array([[5.0], [7.0]])
  c_dep, c_test = np.array([[0.0, 1.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [2.0, 1.0]])
  assert float(probe.competition_strength(z_dep, c_dep, z_test, c_test)) == pytest.approx(2.0)
  assert float(probe.competition_strength(z_dep, c_dep, z_test, c_test, whitened=True)
               ) == pytest.approx(0.5)
