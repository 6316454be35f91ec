"""Fixtures of the evaluation tests: random Inception weights without an init compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from qagan_jax.evaluation import inception


def _random_variables(seed=0, side=75):
  """Random weights of the right shapes (an init would compile for 30 s)."""
  shapes = jax.eval_shape(lambda: inception.FIDInceptionV3(resize=False).init(
      jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3))))
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in traverse_util.flatten_dict(dict(shapes)).items():
    if path[-1] == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    elif path[-1] == 'var':
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif path[-1] == 'scale':
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:   # biases and means
      value = 0.1 * rng.standard_normal(leaf.shape)
    flat[path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(flat)



@pytest.fixture(scope='session')
def random_inception_variables():
  """A factory `(seed=0) -> variables` of random FID Inception weights."""
  return _random_variables
