"""Losses and penalties: formulas, finite differences, and finiteness at edge cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from helpers import numerics
from qagan_jax import losses
from qagan_jax import models
from qagan_jax import quality

CRITIC = models.Critic(width=4)


def critic_fn(params, images):
  return CRITIC.apply({'params': params}, images)


@functools.lru_cache(maxsize=None)
def setup_batches(seed=0, batch=4):
  rng = np.random.default_rng(seed)
  real = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
  fake = np.tanh(rng.normal(0, 0.5, (batch, 32, 32, 3))).astype(np.float32)
  params = jax.jit(CRITIC.init)(jax.random.key(seed), jnp.asarray(real))[
      'params']
  keys = jax.random.split(jax.random.key(seed + 1), batch)
  return params, real, fake, keys


def a_pristine():
  model = quality.PristineModel.standard()
  return losses.Pristine(jnp.asarray(model.mean, jnp.float32),
                         jnp.asarray(model.cov, jnp.float32))


_loss_and_grads = jax.jit(
    jax.value_and_grad(losses.critic_loss, argnums=1, has_aux=True),
    static_argnums=(0, 5))


def loss_and_grads(config, params, real, fake, keys, pristine=None):
  """One compiled program per config, reused across calls."""
  return _loss_and_grads(critic_fn, params, real, fake, keys, config, pristine)


def test_one_critic_call_on_both_batches_equals_a_call_on_each():
  params, real, fake, keys = setup_batches()
  batch = real.shape[0]

  def apart(params, images):
    """The critic on each half of the doubled batch, separately."""
    if images.shape[0] != 2 * batch:
      return critic_fn(params, images)
    return jnp.concatenate([critic_fn(params, images[:batch]),
                            critic_fn(params, images[batch:])])

  config = losses.LossConfig('ssim')
  (value, metrics), grads = loss_and_grads(config, params, real, fake, keys)
  (value_apart, metrics_apart), grads_apart = _loss_and_grads(
      apart, params, real, fake, keys, config, None)
  # the same per-image arithmetic in kernels of another batch size: the
  # rounding of reordered sums (a parameter's gradient sums over the 2 x 4
  # images' 32 x 32 positions)
  rel = numerics.reordered_sum(2 * batch * 32 * 32)
  numerics.assert_trees_close((value, metrics, grads),
                              (value_apart, metrics_apart, grads_apart), rel)


@pytest.mark.slow
def test_quality_penalties_with_zero_weight_equal_wgan_gp_exactly():
  params, real, fake, keys = setup_batches()
  (base, _), base_grads = loss_and_grads(
      losses.LossConfig('wgangp'), params, real, fake, keys)
  for method in ('ssim', 'niqe'):
    config = losses.LossConfig(method, quality_weight=0.0)
    (value, metrics), grads = loss_and_grads(config, params, real, fake, keys,
                                             a_pristine())
    assert float(metrics['quality_penalty']) > 0   # computed, weighted by 0
    assert float(value) == float(base), method
    for a, b in zip(jax.tree_util.tree_leaves(grads),
                    jax.tree_util.tree_leaves(base_grads)):
      np.testing.assert_array_equal(a, b)


def test_adversarial_terms():
  real = jnp.asarray([0.5, 2.0, -1.0])
  fake = jnp.asarray([-0.5, 0.3, -2.0])
  np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake),
                             np.mean(fake) - np.mean(real), rtol=1e-6)
  np.testing.assert_allclose(
      losses.hinge_critic_loss(real, fake),
      np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)),
      rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(fake), -np.mean(fake))
  np.testing.assert_allclose(losses.drift_penalty(real), np.mean(real**2),
                             rtol=1e-6)


def test_gradient_penalty_input_gradient_matches_finite_differences():
  critic64 = models.Critic(width=4, dtype=jnp.float64)
  critic64_fn = lambda p, x: critic64.apply({'params': p}, x)
  with jax.enable_x64(True):
    params, real, fake, keys = setup_batches()
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64),
                                    params)
    x_hat = losses.interpolates(jnp.asarray(real, jnp.float64),
                                jnp.asarray(fake, jnp.float64), keys)
    scores, grads = jax.jit(losses.input_gradients, static_argnums=0)(
        critic64_fn, params, x_hat)
    assert scores.dtype == grads.dtype == jnp.float64
    rng = np.random.default_rng(3)
    apply = jax.jit(critic64_fn)
    for _ in range(3):
      direction = rng.normal(size=x_hat.shape)
      h = 1e-6
      numeric = (apply(params, x_hat + h * direction)
                 - apply(params, x_hat - h * direction)) / (2 * h)
      np.testing.assert_allclose(
          jnp.sum(grads * direction, axis=(1, 2, 3)), numeric, rtol=1e-6,
          atol=1e-10)
    # and the penalty is the mean of (|g| - 1)^2
    norms = np.sqrt(np.sum(np.asarray(grads)**2, axis=(1, 2, 3)))
    np.testing.assert_allclose(losses.gradient_penalty(grads),
                               np.mean((norms - 1)**2), rtol=1e-10)
    # interpolates lie on the segments between real and fake
    eps = (np.asarray(x_hat) - fake) / (real - fake)
    np.testing.assert_allclose(eps, eps[:, :1, :1, :1] * np.ones_like(eps),
                               rtol=1e-6, atol=1e-8)
    assert np.all((eps >= 0) & (eps <= 1))


def test_ssim_penalty_is_the_lipschitz_ratio():
  _, real, fake, _ = setup_batches()
  real_scores = jnp.asarray([0.3, -0.2, 1.0, 0.0])
  fake_scores = jnp.asarray([-0.1, -0.2, 0.2, 0.5])
  distance = quality.ssim_distance(
      quality.rgb_to_grayscale(real), quality.rgb_to_grayscale(fake),
      data_range=2.0, window_size=8, padding='same')
  expected = np.mean((np.abs(real_scores - fake_scores) / distance - 1)**2)
  np.testing.assert_allclose(
      losses.ssim_lipschitz_penalty(real, fake, real_scores, fake_scores),
      expected, rtol=1e-5)
  # identical pairs: d_Q = 0 is floored, the penalty stays finite
  same = losses.ssim_lipschitz_penalty(real, real, real_scores, real_scores)
  np.testing.assert_allclose(same, 1.0)


def test_sobel_maps_match_scipy_and_normalisation():
  rng = np.random.default_rng(4)
  images = rng.uniform(-1, 1, (2, 20, 24, 3)).astype(np.float32)
  gray = np.asarray(quality.rgb_to_grayscale(images))[..., 0].astype(np.float64)
  expected = np.stack([np.hypot(scipy.ndimage.sobel(g, axis=1, mode='nearest'),
                                scipy.ndimage.sobel(g, axis=0, mode='nearest'))
                       for g in gray])[..., None]
  expected *= 64 / expected.std(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(losses.sobel_maps(images), expected, rtol=1e-4,
                             atol=1e-3)
  maps = losses.normalise_maps(jnp.asarray(rng.normal(3, 0.01, (3, 8, 8, 1))))
  np.testing.assert_allclose(np.std(np.asarray(maps), axis=(1, 2, 3)), 64,
                             rtol=1e-4)
  np.testing.assert_array_equal(losses.normalise_maps(jnp.zeros((1, 8, 8, 1))),
                                0.0)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['wgangp', 'ssim', 'niqe'])
def test_losses_and_gradients_are_finite_at_edge_cases(method):
  params, real, fake, keys = setup_batches()
  zero_params = jax.tree_util.tree_map(jnp.zeros_like, params)  # D == 0
  constant = np.full_like(real, 0.25)
  cases = {
      'real == fake': (params, real, real),
      'constant images': (params, constant, constant * -1),
      'zero gradient maps': (zero_params, real, fake),
  }
  config = losses.LossConfig(method)
  for name, (p, r, f) in cases.items():
    (value, metrics), grads = loss_and_grads(config, p, r, f, keys,
                                             a_pristine())
    assert np.isfinite(float(value)), (method, name)
    for metric, v in metrics.items():
      assert np.isfinite(float(v)), (method, name, metric)
    for g in jax.tree_util.tree_leaves(grads):
      assert np.all(np.isfinite(np.asarray(g))), (method, name)


def test_niqe_penalty_pools_patches_and_depends_on_the_maps():
  rng = np.random.default_rng(5)
  pristine = a_pristine()
  natural = losses.normalise_maps(jnp.asarray(
      scipy.ndimage.gaussian_filter(rng.normal(size=(16, 32, 32, 1)),
                                    (0, 1, 1, 0))))
  noise = losses.normalise_maps(jnp.asarray(rng.normal(size=(16, 32, 32, 1))))
  penalty = jax.jit(lambda m: losses.niqe_penalty(
      losses.map_features(m, 32), pristine.mean, pristine.cov))
  found = losses.map_features(natural, 32)
  assert found.features.shape == (16, 36)
  assert float(penalty(natural)) != float(penalty(noise))
  assert np.isfinite(float(penalty(natural))) and float(penalty(noise)) > 0


def test_loss_config_rejects_bad_values():
  with pytest.raises(ValueError, match="method must be one of"):
    losses.LossConfig('ssim2')
  with pytest.raises(ValueError, match='adversarial loss must be one of'):
    losses.LossConfig(adversarial='logistic')
  with pytest.raises(ValueError, match='gp_weight must be >= 0'):
    losses.LossConfig(gp_weight=-1.0)
