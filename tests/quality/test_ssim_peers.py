"""The test cases of the SSIM libraries users compare with, ported: scikit-image, dm-pix, piq, torchmetrics, IQA-PyTorch (MATLAB).

Each case is the peer's own (its images, settings and golden values), with
the call that reproduces that peer's conventions (docs/quality.md has the
table); cases that test what qagan_jax does not do (uniform windows,
anisotropic kernels, MS-SSIM) are left out, and so named in docs/quality.md.
"""

import functools
import json
import pathlib

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.metrics import structural_similarity

from qagan_jax import quality

DATA = pathlib.Path(__file__).resolve().parents[1] / 'data'


# scikit-image's reference SSIM: a Gaussian window of sigma 1.5 (11 taps),
# population covariance, 'valid' borders
skimage_call = functools.partial(quality.ssim, window_size=11, sigma=1.5)


def skimage_cam_noisy():
  """scikit-image's test fixture (skimage/metrics/tests/
  test_structural_similarity.py): camera plus noise of sigma 20 from
  np.random.seed(5), clipped and cast to uint8."""
  cam = skdata.camera()
  noise = np.random.RandomState(5).randn(*cam.shape)
  return cam, np.clip(cam + 20.0 * noise, 0, 255).astype(cam.dtype)


# --- scikit-image -----------------------------------------------------------------


def test_skimage_gaussian_ssim_vs_ipol():
  """skimage's test_gaussian_structural_similarity_vs_IPOL: the IPOL
  implementation (imdiff, Getreuer 2011) gives 0.357959091663361 for
  camera against its noisy copy; scikit-image checks 3 decimals."""
  cam, noisy = skimage_cam_noisy()
  ours = float(skimage_call(cam[..., None], noisy[..., None], data_range=255))
  np.testing.assert_allclose(ours, 0.357959091663361, atol=5e-4)
  reference = structural_similarity(cam, noisy, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False,
                                    data_range=255)
  np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_skimage_patch_range_and_image():
  """test_structural_similarity_patch_range and _image: a window as large
  as the image; an image with itself is exactly 1; random images < 0.3."""
  rng = np.random.RandomState(1234)
  n = 51
  x = (rng.rand(n, n) * 255).astype(np.uint8)[..., None]
  y = (rng.rand(n, n) * 255).astype(np.uint8)[..., None]
  assert float(quality.ssim(x, y, data_range=255, window_size=n)) < 0.1
  assert float(quality.ssim(x, x, data_range=255, window_size=n)) == 1.0
  n = 100
  x = (rng.rand(n, n) * 255).astype(np.uint8)[..., None]
  y = (rng.rand(n, n) * 255).astype(np.uint8)[..., None]
  assert float(quality.ssim(x, x, data_range=255, window_size=3)) == 1.0
  assert float(quality.ssim(x, y, data_range=255, window_size=3)) < 0.3
  assert float(skimage_call(x, y, data_range=255)) < 0.3


@pytest.mark.parametrize('dtype', [np.uint8, np.int32, np.float16, np.float32,
                                   np.float64])
def test_skimage_dtypes(dtype):
  """test_structural_similarity_dtype: every dtype gives a float result,
  and random images a low one."""
  rng = np.random.RandomState(5)
  x, y = rng.rand(30, 30, 1), rng.rand(30, 30, 1)
  if np.dtype(dtype).kind in 'iu':
    x, y = (x * 255).astype(dtype), (y * 255).astype(dtype)
    data_range = 255
  else:
    x, y = x.astype(dtype), y.astype(dtype)
    data_range = 1.0
  value = quality.ssim(x, y, data_range=data_range)
  assert value.dtype == jnp.float32 and float(value) < 0.1


def test_skimage_multichannel_chelsea():
  """test_structural_similarity_multichannel_chelsea: colour is the mean of
  the channels; an image with itself is exactly 1."""
  xc = skdata.chelsea()
  yc = np.clip(xc + 15.0 * np.random.RandomState(1234).randn(*xc.shape),
               0, 255).astype(xc.dtype)
  ours = float(quality.ssim(xc, yc, data_range=255))
  per_channel = [float(quality.ssim(yc[..., c:c + 1], xc[..., c:c + 1],
                                    data_range=255)) for c in range(3)]
  np.testing.assert_allclose(ours, np.mean(per_channel), rtol=1e-6)
  assert float(quality.ssim(xc, xc, data_range=255)) == 1.0


def test_skimage_invalid_input():
  """test_invalid_input: sizes that differ, a window beyond the image,
  negative constants and sigma."""
  x, y = np.zeros((9, 9, 1)), np.zeros((8, 8, 1))
  with pytest.raises(ValueError, match='same shape'):
    quality.ssim(x, y, data_range=1.0)
  with pytest.raises(ValueError, match='larger than the images'):
    quality.ssim(x, x, data_range=1.0, window_size=10)
  for option in ('k1', 'k2', 'sigma'):
    with pytest.raises(ValueError, match=f'{option} must be a finite number'):
      quality.ssim(x, x, data_range=1.0, window_size=3, **{option: -0.1})


# --- dm-pix (and through it tf.image.ssim) -----------------------------------------


def test_dm_pix_golden():
  """dm-pix's test_ssim_golden, which checks dm-pix against tf.image.ssim:
  random sizes of window (1 to 9, even ones too), sigmas, k1, k2 and ranges,
  all given as JAX scalars, with its window centring ('symmetric'); every
  value within [-1, 1]."""
  key = jax.random.PRNGKey(0)
  shape = (2, 12, 12, 3)
  for _ in range(4):
    (max_val_key, img0_key, img1_key, size_key, sigma_key, k1_key, k2_key,
     key) = jax.random.split(key, 8)
    max_val = jax.random.uniform(max_val_key, minval=0.1, maxval=3.)
    img0 = max_val * jax.random.uniform(img0_key, shape=shape)
    img1 = max_val * jax.random.uniform(img1_key, shape=shape)
    filter_size = jax.random.randint(size_key, shape=(), minval=1, maxval=10)
    filter_sigma = jax.random.uniform(sigma_key, shape=(), minval=0.1,
                                      maxval=10.)
    k1 = jax.random.uniform(k1_key, shape=(), minval=0.001, maxval=0.1)
    k2 = jax.random.uniform(k2_key, shape=(), minval=0.001, maxval=0.1)
    expected = dm_pix.ssim(img0, img1, max_val=max_val,
                           filter_size=int(filter_size),
                           filter_sigma=filter_sigma, k1=k1, k2=k2)
    ours = quality.ssim(img0, img1, data_range=max_val,
                        window_size=filter_size, sigma=filter_sigma, k1=k1,
                        k2=k2, window_center='symmetric')
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.all((np.asarray(ours) >= -1) & (np.asarray(ours) <= 1))


def test_dm_pix_lower_bound():
  """test_ssim_lowerbound: an image against its negative, tiny constants:
  SSIM -1 (here just above it: CS > -1 by C2)."""
  size = 11
  img = np.meshgrid(*[np.linspace(-1, 1, size)] * 2)[0][None, ..., None]
  value = quality.ssim(img, -img, data_range=2.0, window_size=size, k1=1e-5,
                       k2=1e-5)
  np.testing.assert_allclose(value, -1.0, atol=1e-6)
  assert float(value[0]) > -1


# dm-pix's ssim_covariance_gradient_test: 2x2 images, a 2-tap window (the
# mean filter, centred between the pixels), zero covariance between them


def mean_filter_ssim(a, b):
  """dm-pix's independent formula with a mean filter."""
  mean = lambda z: jnp.mean(z, axis=(-3, -2), keepdims=True)
  ma, mb = mean(a), mean(b)
  va, vb = mean((a - ma)**2), mean((b - mb)**2)
  covariance = mean((a - ma) * (b - mb))
  result = ((2 * ma * mb + 0.01**2) * (2 * covariance + 0.03**2)
            / ((ma**2 + mb**2 + 0.01**2) * (va + vb + 0.03**2)))
  return result.mean(axis=(-3, -2, -1))


def covariance_images(batch=False, channels=1):
  a = jnp.array([[0.75, 0.75], [0.25, 0.25]])[..., None]
  b = jnp.array([[0.75, 0.25], [0.75, 0.25]])[..., None]
  a, b = jnp.repeat(a, channels, -1), jnp.repeat(b, channels, -1)
  if batch:
    a, b = jnp.stack([a, a]), jnp.stack([b, b])
  return a, b


two_taps = functools.partial(quality.ssim, data_range=1.0, window_size=2,
                             sigma=1.0, window_center='symmetric')


@pytest.mark.parametrize('batch', [False, True])
@pytest.mark.parametrize('channels', [1, 3])
def test_dm_pix_zero_covariance_gradient_matches_the_formula(batch, channels):
  a, b = covariance_images(batch, channels)
  objective = lambda x: two_taps(a, x).sum()
  expected = jax.value_and_grad(lambda x: mean_filter_ssim(a, x).sum())(b)
  for fn in (jax.value_and_grad(objective),
             jax.jit(jax.value_and_grad(objective))):
    for value, target in zip(fn(b), expected):
      np.testing.assert_allclose(value, target, rtol=3e-6, atol=1e-7)
  _, tangent = jax.jvp(objective, (b,), (a - 0.5,))
  step = 0.01
  finite = (objective(b + step * (a - 0.5))
            - objective(b - step * (a - 0.5))) / (2 * step)
  np.testing.assert_allclose(tangent, finite, rtol=5e-4, atol=1e-6)


def test_dm_pix_gradient_at_a_zero_second_image():
  a, b = covariance_images()
  b = jnp.zeros_like(b)
  actual = jax.jit(jax.value_and_grad(lambda x: two_taps(a, x)))(b)
  expected = jax.value_and_grad(lambda x: mean_filter_ssim(a, x))(b)
  for value, target in zip(actual, expected):
    np.testing.assert_allclose(value, target, rtol=3e-6, atol=1e-8)


@pytest.mark.parametrize('weight', [-0.5, 0.5])
def test_dm_pix_nonzero_covariance_values_and_gradients(weight):
  a, b = covariance_images()
  b = b + weight * (a - 0.5)
  actual = jax.value_and_grad(lambda x: two_taps(a, x))(b)
  expected = jax.value_and_grad(lambda x: mean_filter_ssim(a, x))(b)
  for value, target in zip(actual, expected):
    np.testing.assert_allclose(value, target, rtol=3e-6, atol=1e-7)


def test_dm_pix_correlation_can_be_learned_from_zero():
  a, b = covariance_images()
  score = lambda p: two_taps(a, b + p * (a - 0.5))
  derivative = jax.jit(jax.grad(score))(jnp.array(0.0))
  assert float(derivative) > 0.9
  assert float(score(0.1 * derivative)) > float(score(jnp.array(0.0)))


@pytest.mark.parametrize('negative', [False, True])
def test_dm_pix_identity_and_negative_scores(negative):
  a, _ = covariance_images(batch=True)
  b = 1 - a if negative else a
  np.testing.assert_allclose(two_taps(a, b), mean_filter_ssim(a, b),
                             rtol=3e-6, atol=1e-7)


# --- piq ------------------------------------------------------------------------------


def test_piq_symmetry_identity_and_bounds():
  """piq's test_ssim_symmetry, _measure_is_one_for_equal_tensors,
  _less_or_equal_to_one and _raises_if_kernel_size_greater_than_image (its
  images channels-first, here channels-last). Symmetric up to float
  rounding: the compiler may fuse the multiply-adds in either order."""
  rng = np.random.default_rng(0)
  x, y = (rng.random((3, 161, 161, 3), np.float32) for _ in range(2))
  forward = np.asarray(quality.ssim(x, y, data_range=1.0))
  backward = np.asarray(quality.ssim(y, x, data_range=1.0))
  np.testing.assert_allclose(forward, backward, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(quality.ssim(y, y, data_range=1.0), 1.0)
  ones, zeros = np.ones((3, 32, 32, 3)), np.zeros((3, 32, 32, 3))
  assert np.all(np.asarray(quality.ssim(ones, zeros, data_range=1.0)) <= 1)
  for size in range(1, 52, 10):
    small = rng.random((3, size, size, 3))
    with pytest.raises(ValueError, match='larger than the images'):
      quality.ssim(small, small, data_range=1.0, window_size=size + 1)


# --- torchmetrics -------------------------------------------------------------------


@pytest.mark.parametrize('kwargs,error', [
    (dict(sigma=0.0), ValueError),
    (dict(sigma=-1.5), ValueError),
    (dict(window_size=0), ValueError),
    (dict(window_size=-11), ValueError),
])
def test_torchmetrics_invalid_inputs(kwargs, error):
  """torchmetrics' test_ssim_invalid_inputs that apply (a kernel of one
  size and one sigma; even sizes are valid here, 'pixel' or 'symmetric')."""
  x = np.random.default_rng(1).random((1, 16, 16, 1))
  with pytest.raises(error):
    quality.ssim(x, x, data_range=1.0, **kwargs)
  with pytest.raises(ValueError, match='same shape'):
    quality.ssim(x, x[:, :15], data_range=1.0)


# --- IQA-PyTorch's calibration: MATLAB's ssim_index.m ------------------------------


def test_matlab_ssim_on_tid2013():
  """Wang et al.'s ssim_index.m run in MATLAB on five TID2013 pairs
  (rgb2gray, published to 4 decimals by IQA-PyTorch; tests/data/README.md):
  the default call, with data_range=255."""
  folder = DATA / 'tid2013'
  for entry in json.loads((folder / 'calibration.json').read_text())['images']:
    reference, distorted = (
        np.asarray(Image.open(folder / entry[kind]['file']))[..., None]
        for kind in ('reference', 'distorted'))
    ours = float(quality.ssim(reference, distorted, data_range=255))
    # 4 decimals: half a unit of the last, and float32's rounding
    np.testing.assert_allclose(ours, entry['ssim_matlab'], rtol=0,
                               atol=5e-5 + 1e-6, err_msg=entry['name'])
