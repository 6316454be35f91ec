"""Precision, recall, density and coverage against the authors' `prdc` package."""

import numpy as np
import pytest

from qagan_jax.evaluation import prdc


def _features(seed, n, d=64, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  return (shift + scale * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize('k', [3, 5])
def test_equals_the_reference_package(k):
  reference = pytest.importorskip('prdc')
  real = _features(0, 2000)
  fake = _features(1, 1500, shift=0.3, scale=0.8)    # unequal set sizes
  expected = reference.compute_prdc(real, fake, nearest_k=k)
  got = prdc.prdc(real, fake, k=k, chunk=512)
  for name in ('precision', 'recall', 'density', 'coverage'):
    assert got[name] == pytest.approx(float(expected[name]), abs=1e-6), name
  # the shifted, narrower fakes: fewer real balls hold them than reals would
  assert got['recall'] < got['precision'] < 1


def test_a_set_against_itself():
  features = _features(2, 500, d=16)
  got = prdc.prdc(features, features, k=5, chunk=128)
  assert got['precision'] == got['recall'] == got['coverage'] == 1.0
  # each point lies inside its k nearest neighbours' balls at least
  assert got['density'] > 1.0


def test_chunked_equals_unchunked_exactly():
  real, fake = _features(3, 700, d=32), _features(4, 450, d=32, shift=0.2)
  whole = prdc.prdc(real, fake, k=5, chunk=100_000)
  for chunk in (64, 333):
    assert prdc.prdc(real, fake, k=5, chunk=chunk) == whole


def test_radii_are_the_kth_neighbour_distance():
  features = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
  # k = 1: the nearest other point; k = 2: the second nearest
  np.testing.assert_array_equal(prdc.nearest_neighbour_radii(features, k=1),
                                [1.0, 1.0, 4.0, 16.0])
  np.testing.assert_array_equal(prdc.nearest_neighbour_radii(features, k=2),
                                [9.0, 4.0, 9.0, 36.0])


def test_far_away_fakes_have_no_precision_or_coverage():
  real = _features(5, 200, d=8)
  got = prdc.prdc(real, real + 100.0, k=3)
  assert got == {'precision': 0.0, 'recall': 0.0, 'density': 0.0,
                 'coverage': 0.0}


@pytest.mark.parametrize('real, fake, k, match', [
    (np.zeros((10, 4)), np.zeros((10, 5)), 3, 'differ in size'),
    (np.zeros((10, 4)), np.zeros((3, 4)), 3, 'more than k rows'),
    (np.zeros((10,)), np.zeros((10, 4)), 3, r'\[N, D\]'),
    (np.zeros((10, 4)), np.full((10, 4), np.nan), 3, '10 of 10 feature rows'),
    (np.zeros((10, 4)), np.zeros((10, 4)), 0, 'k must be'),
])
def test_bad_input_is_refused(real, fake, k, match):
  with pytest.raises(ValueError, match=match):
    prdc.prdc(real, fake, k=k)
