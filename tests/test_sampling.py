"""Sampling a run's EMA generator: standing statistics once per use, samples by latent, NaN counted before rounding."""

import jax
import numpy as np
import pytest

from helpers import numerics
from qagan_jax import input_pipeline
from qagan_jax import sampling
from qagan_jax import train_state
from qagan_jax.evaluation import evaluator as evaluator_lib


def test_standing_statistics_once_per_evaluation_and_samples_by_latent(
    tiny_run_config):
  """The EMA generator's standing BatchNorm statistics are computed once per
  `generate`, not per chunk; a sample depends on its latent alone (not on
  the chunk it is generated in), and a one-process share is all of them."""
  config = tiny_run_config()
  setup = train_state.build(config)
  state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
  sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
  calls = []
  standing = sampler._standing_stats   # pylint: disable=protected-access

  def counted(*args):
    calls.append(1)
    return standing(*args)

  sampler._standing_stats = counted    # pylint: disable=protected-access
  chunked = sampling.generate(sampler, state, 10, seed=3, batch=4)
  assert len(calls) == 1 and chunked.shape == (10, 32, 32, 3)
  # standing statistics made beforehand (a grid's, at the same step) are used
  again = sampling.generate(sampler, state, 10, seed=3, batch=4,
                            prepared=sampler.prepare(state))
  assert len(calls) == 2
  np.testing.assert_array_equal(again, chunked)
  whole = sampling.generate(sampler, state, 10, seed=3, batch=10)
  # the same per-sample program at another batch size: equal to the
  # rounding of reordered sums (the tiny generator's largest: its dense
  # layer over 128 latents), carried through its few layers to images in
  # [-1, 1]
  np.testing.assert_allclose(chunked, whole, rtol=0,
                             atol=numerics.reordered_sum(128, amplification=8))
  shared = sampling.generate(sampler, state, 10, seed=3, batch=4,
                             as_uint8=True, shared=True)
  np.testing.assert_array_equal(shared, input_pipeline.to_uint8(chunked))


def test_generated_samples_are_checked_before_rounding_to_uint8():
  class Sampler:
    latent_dim = 2

    def prepare(self, state):
      return state

    def images(self, prepared, z):
      images = np.zeros((len(z), 4, 4, 3), np.float32)
      images[::3] = np.nan   # 2 + 2 + 1 of the chunks of 4, 4, 2
      return images

  sampler = Sampler()
  with pytest.raises(evaluator_lib.NonFiniteSamplesError, match='5 of 10 samples'):
    sampling.generate(sampler, None, 10, seed=0, batch=4, as_uint8=True)
