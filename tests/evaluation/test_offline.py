"""Metrics that need no download: SWD, NIQE distance of sets, pairwise-SSIM diversity."""

import numpy as np
import pytest
import scipy.ndimage

from helpers import numerics
from qagan_jax import input_pipeline
from qagan_jax.evaluation import offline


@pytest.fixture(scope='module')
def patches():
  config = input_pipeline.default_config()
  config.dataset = 'natural_patches'
  config.patch_size = 32
  train = input_pipeline.split_images(config, 'train', 128, seed=0)
  held_out = input_pipeline.held_out_images(config, 128, seed=0)
  return train, held_out


def test_laplacian_pyramid_reconstructs_the_image():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  fine, coarse = offline.laplacian_pyramid(images, 2)
  assert fine.shape == (2, 32, 32, 3) and coarse.shape == (2, 16, 16, 3)
  # upsampling the coarse level as the pyramid does and adding the detail
  # gives the image back
  up = np.zeros_like(images)
  up[:, ::2, ::2] = coarse
  np.testing.assert_allclose(fine + 4 * np.asarray(offline._blur(up)),
                             images, atol=1e-5)
  # a constant image has no detail
  flat = offline.laplacian_pyramid(np.full((1, 32, 32, 3), 0.3), 2)
  np.testing.assert_allclose(flat[0], 0, atol=1e-6)


def test_swd_is_zero_against_itself_and_grows_with_noise(patches):
  train, _ = patches
  assert offline.sliced_wasserstein(train, train)['swd/mean'] == 0.0
  rng = np.random.default_rng(1)
  values = [offline.sliced_wasserstein(
      train, train + s * rng.standard_normal(train.shape).astype(np.float32)
  )['swd/mean'] for s in (0.02, 0.1, 0.5)]
  assert values[0] < values[1] < values[2]
  result = offline.sliced_wasserstein(train, train)
  assert set(result) == {'swd/32', 'swd/16', 'swd/mean'}
  with pytest.raises(ValueError, match='sets of one shape'):
    offline.sliced_wasserstein(train, train[:10])


def test_niqe_distance_orders_distorted_sets(patches):
  train, held_out = patches
  reference = offline.niqe_mvg(held_out)
  rng = np.random.default_rng(2)
  clean = offline.niqe_set_distance(train, reference)
  noisy = offline.niqe_set_distance(np.clip(
      train + 0.2 * rng.standard_normal(train.shape), -1, 1), reference)
  blurred = offline.niqe_set_distance(
      scipy.ndimage.gaussian_filter(train, (0, 2, 2, 0)), reference)
  assert clean < noisy and clean < blurred
  assert offline.niqe_set_distance(held_out, reference) == pytest.approx(
      0, abs=1e-6)


def test_pairwise_ssim_measures_diversity(patches):
  train, _ = patches
  collapsed = np.repeat(train[:1], 64, axis=0)
  assert offline.pairwise_ssim(collapsed, pairs=100) == pytest.approx(1.0)
  few_modes = np.concatenate([np.repeat(train[i:i + 1], 16, axis=0)
                              for i in range(4)])
  diverse = offline.pairwise_ssim(train, pairs=500)
  assert diverse < offline.pairwise_ssim(few_modes, pairs=500) < 1.0
  assert diverse < 0.3


def test_device_and_host_sliced_distances_agree():
  # accelerators sort on the device, CPUs with numpy: the same number
  rng = np.random.default_rng(3)
  a, b = rng.standard_normal((2, 500, 20)).astype(np.float32)
  directions = rng.standard_normal((20, 8)).astype(np.float32)
  # projections of 20 terms, then the mean of 500 x 8 sorted differences
  numerics.assert_trees_close(
      offline._sliced_distance_on_device(a, b, directions),
      offline._sliced_distance(a, b, directions),
      numerics.reordered_sum(500 * 8 * 20))
