"""Fixtures of the evaluation tests: random Inception weights without an init compile."""

import pytest

from qagan_jax.evaluation import inception


@pytest.fixture(scope='session')
def random_inception_variables():
  """A factory `(seed=0) -> variables` of random FID Inception weights."""
  return inception.random_variables
