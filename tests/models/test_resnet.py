"""The ResNet generator and critic: sizes, parameter counts, initialisers, dtypes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import numerics
from qagan_jax import models
from qagan_jax.models import resnet


def shapes(resolution, width=128, **overrides):
  arch = models.architecture(resolution, **overrides)
  generator = models.Generator(resolution=resolution, width=width, arch=arch)
  critic = models.Critic(resolution=resolution, width=width, arch=arch)
  gen_vars = jax.eval_shape(lambda: generator.init(
      jax.random.key(0), jnp.zeros((2, 128)), train=False))
  critic_vars = jax.eval_shape(lambda: critic.init(
      jax.random.key(0), jnp.zeros((2, resolution, resolution, 3))))
  images = jax.eval_shape(functools.partial(generator.apply, train=False),
                          gen_vars, jnp.zeros((2, 128)))
  scores = jax.eval_shape(critic.apply, critic_vars, images)
  return gen_vars, critic_vars, images, scores


def test_parameter_counts_match_the_released_32x32_architecture():
  gen_vars, critic_vars, _, _ = shapes(32, 128)
  assert models.count_params(gen_vars['params']) == 1_204_483
  assert models.count_params(critic_vars['params']) == 1_053_825


@pytest.mark.parametrize('resolution', [32, 48, 64, 96, 128])
def test_every_resolution_maps_latents_to_images_to_scores(resolution):
  _, critic_vars, images, scores = shapes(resolution, width=16)
  assert images.shape == (2, resolution, resolution, 3)
  assert images.dtype == jnp.float32
  assert scores.shape == (2,) and scores.dtype == jnp.float32
  arch = models.architecture(resolution)
  n_down = sum(1 for name in critic_vars['params'] if name.startswith('down'))
  assert n_down + 1 == arch.critic_down_blocks


def test_48x48_critic_follows_the_paper_unless_told_otherwise():
  _, paper, _, _ = shapes(48, 128)
  _, released, _, _ = shapes(48, 128, critic_down_blocks=2,
                             critic_plain_blocks=2)
  assert sorted(paper['params']) == ['block1', 'down2', 'down3', 'output',
                                     'plain1']
  assert sorted(released['params']) == ['block1', 'down2', 'output', 'plain1',
                                        'plain2']


def test_bad_architectures_are_refused():
  with pytest.raises(ValueError, match='no architecture for resolution 40'):
    models.architecture(40)
  with pytest.raises(ValueError, match='does not make 32x32'):
    models.architecture(32, up_blocks=2)
  with pytest.raises(ValueError, match='down-blocks do not fit'):
    models.architecture(32, critic_down_blocks=6)


def test_upsample_and_mean_pool():
  x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
  up = np.asarray(resnet.upsample(jnp.asarray(x)))
  np.testing.assert_array_equal(up, x.repeat(2, axis=1).repeat(2, axis=2))
  pooled = np.asarray(resnet.mean_pool(jnp.asarray(up)))
  np.testing.assert_array_equal(pooled, x)
  y = np.random.default_rng(0).normal(size=(1, 4, 6, 2)).astype(np.float32)
  expected = y.reshape(1, 2, 2, 3, 2, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(resnet.mean_pool(jnp.asarray(y)), expected,
                             rtol=1e-6)


def test_initialisers_he_uniform_for_3x3_glorot_for_1x1_and_dense():
  critic = models.Critic(width=128)
  params = jax.jit(critic.init)(jax.random.key(1),
                                jnp.zeros((1, 32, 32, 3)))['params']

  def bound(kernel):
    return float(np.abs(np.asarray(kernel)).max())

  conv3 = params['plain1']['conv1']['kernel']          # 3x3, 128 -> 128
  fan_in = 3 * 3 * 128
  assert bound(conv3) <= np.sqrt(6 / fan_in)           # He-uniform limit
  assert bound(conv3) > 0.98 * np.sqrt(6 / fan_in)
  short = params['down2']['shortcut']['kernel']        # 1x1, 128 -> 128
  assert bound(short) <= np.sqrt(6 / 256) and bound(short) > 0.98 * np.sqrt(
      6 / 256)
  dense = params['output']['kernel']                   # 128 -> 1
  assert bound(dense) <= np.sqrt(6 / 129)
  for leaf in jax.tree_util.tree_leaves(
      jax.tree_util.tree_map_with_path(
          lambda path, x: x if path[-1].key == 'bias' else None, params)):
    np.testing.assert_array_equal(leaf, 0.0)


def test_critic_scores_each_image_independently():
  critic = models.Critic(width=16)
  x = jax.random.uniform(jax.random.key(2), (6, 32, 32, 3), minval=-1)
  params = jax.jit(critic.init)(jax.random.key(3), x)['params']
  apply = jax.jit(critic.apply)
  together = apply({'params': params}, x)
  alone = jnp.concatenate([apply({'params': params}, x[i:i + 1])
                           for i in range(6)])
  # other batch sizes, other kernels: the same sums in another order (3 x 3
  # x 16-term convolutions, an 8 x 8 mean pool: at most 9 x 16 x 64 terms
  # along any path); a mix-up of images changes scores by O(1)
  numerics.assert_trees_close(together, alone,
                              numerics.reordered_sum(8 * 8 * 16 * 9))


def test_bfloat16_compute_keeps_float32_parameters_and_outputs():
  z = jax.random.normal(jax.random.key(4), (4, 128))
  full = models.Generator(width=16)
  half = models.Generator(width=16, dtype=jnp.bfloat16)
  variables = jax.jit(functools.partial(full.init, train=False))(
      jax.random.key(5), z)
  half_vars = jax.eval_shape(functools.partial(half.init, train=False),
                             jax.random.key(5), z)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree_util.tree_leaves(half_vars))
  apply = lambda model: jax.jit(functools.partial(model.apply, train=False))
  out_full = np.asarray(apply(full)(variables, z))
  out_half = apply(half)(variables, z)
  assert out_half.dtype == jnp.float32
  # bfloat16 keeps ~3 significant digits through ~10 layers.
  diff = np.abs(np.asarray(out_half) - out_full)
  assert diff.mean() < 0.01 and diff.max() < 0.1
  assert np.corrcoef(np.asarray(out_half).ravel(), out_full.ravel())[0, 1] > 0.999
  critic = models.Critic(width=16, dtype=jnp.bfloat16)
  scores = jax.eval_shape(critic.apply, jax.eval_shape(
      critic.init, jax.random.key(6), out_full), out_full)
  assert scores.dtype == jnp.float32
