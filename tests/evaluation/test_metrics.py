"""FID, IS, KID and Gaussian statistics against closed forms and direct formulas."""

import numpy as np
import pytest
import scipy.linalg

from qagan_jax.evaluation import metrics


def random_spd(rng, d, scale=1.0):
  a = rng.standard_normal((d, d))
  return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_frechet_distance_closed_form_for_diagonal_covariances():
  mean1, mean2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
  var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = ((mean1 - mean2) ** 2).sum() + (
      (np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()   # 5 + 4 + 1 + 0 = 10
  got = metrics.frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2))
  assert got == pytest.approx(expected, rel=1e-12) and expected == 10


def test_frechet_distance_agrees_with_scipy_sqrtm_formula():
  rng = np.random.default_rng(0)
  for d in (2, 16, 64):
    mean1, mean2 = rng.standard_normal(d), rng.standard_normal(d)
    cov1, cov2 = random_spd(rng, d), random_spd(rng, d, 3.0)
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    expected = ((mean1 - mean2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root)
    assert metrics.frechet_distance(mean1, cov1, mean2, cov2) == (
        pytest.approx(expected, rel=1e-9))


def test_fid_of_samples_from_two_gaussians_approaches_the_closed_form():
  rng = np.random.default_rng(1)
  d, n = 8, 200_000
  mean1, mean2 = np.zeros(d), np.full(d, 0.5)
  cov1, cov2 = random_spd(rng, d), random_spd(rng, d, 2.0)
  x = rng.multivariate_normal(mean1, cov1, n)
  y = rng.multivariate_normal(mean2, cov2, n)
  stats1, stats2 = metrics.GaussianStats.of(x), metrics.GaussianStats.of(y)
  np.testing.assert_allclose(stats1.cov, np.cov(x, rowvar=False), rtol=1e-10)
  expected = metrics.frechet_distance(mean1, cov1, mean2, cov2)
  assert metrics.fid(stats1, stats2) == pytest.approx(expected, rel=0.02)


def test_fid_of_a_set_against_itself_is_zero_even_when_singular():
  rng = np.random.default_rng(2)
  features = rng.standard_normal((64, 512)).astype(np.float32)  # n < d
  stats = metrics.GaussianStats.of(features)
  assert np.trace(stats.cov) > 400
  assert metrics.fid(stats, stats) < 1e-3
  assert np.isfinite(metrics.fid(stats, metrics.GaussianStats.of(
      rng.standard_normal((64, 512)))))


def test_inception_score_known_values():
  # confident, balanced predictions over k classes: IS = k; uniform: IS = 1
  k, per_class = 10, 50
  labels = np.tile(np.arange(k), per_class * 10)       # every split balanced
  confident = 50.0 * np.eye(1008)[labels]
  mean, std = metrics.inception_score(confident)
  assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
  mean, _ = metrics.inception_score(np.zeros((100, 1008)))
  assert mean == pytest.approx(1.0, abs=1e-12)
  # half the samples confident in class 0, half uniform over 2 classes:
  # p(y) = (3/4, 1/4); KL = 1/2 log(4/3) + 1/2 (1/2 log(2/3) + 1/2 log 2)
  logits = np.full((20, 1008), -1e4)
  logits[::2, 0] = 0
  logits[1::2, :2] = 0
  expected = np.exp(0.5 * np.log(4 / 3) + 0.25 * (np.log(2 / 3) + np.log(2)))
  assert metrics.inception_score(logits, splits=1)[0] == pytest.approx(
      expected, rel=1e-9)


def direct_mmd2(x, y):
  k = lambda a, b: (a @ b / len(a) + 1) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
  return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)


def test_kid_equals_the_direct_formula():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((12, 5))
  y = rng.standard_normal((12, 5)) + 0.7
  # one subset holding every row: a permutation, which MMD ignores
  result = metrics.kid(x, y, subsets=1, subset_size=12)
  assert result['kid'] == pytest.approx(direct_mmd2(x, y), rel=1e-10)
  # an unbiased estimator: mean near 0 for two samples of one distribution
  same = metrics.kid(rng.standard_normal((400, 5)),
                     rng.standard_normal((400, 5)), subsets=50,
                     subset_size=100)
  assert abs(same['kid']) < 3 * same['kid_std']
  assert same['kid_stderr'] == pytest.approx(same['kid_std'] / np.sqrt(50))
  assert metrics.kid(x, y)['kid'] > 5 * abs(same['kid'])
