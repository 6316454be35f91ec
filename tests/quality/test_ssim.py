"""SSIM and d_Q against scikit-image, dm-pix, finite differences and the metric axioms."""

import doctest
import functools

import chex
import dm_pix
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.metrics import structural_similarity

from helpers import numerics
import qagan_jax
from qagan_jax import quality

SQRT2 = float(np.sqrt(2.0))


def skimage_ssim(x, y, data_range):
  """The reference SSIM (Wang et al. 2004) as scikit-image computes it."""
  return structural_similarity(
      np.asarray(x, np.float64), np.asarray(y, np.float64),
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
      data_range=data_range, channel_axis=-1)


def distorted_pair(shape, rng, low=0.0, high=1.0, noise=0.15):
  x = rng.uniform(low, high, size=shape)
  y = np.clip(x + noise * (high - low) * rng.normal(size=shape), low, high)
  return x.astype(np.float32), y.astype(np.float32)


# --- SSIM against scikit-image ------------------------------------------------


@pytest.mark.parametrize('shape', [(32, 32, 1), (48, 40, 3), (23, 64, 1),
                                   (11, 30, 3)])
@pytest.mark.parametrize('value_range', [(0.0, 1.0), (-1.0, 1.0)])
def test_ssim_matches_skimage_on_random_images(shape, value_range):
  rng = np.random.default_rng(sum(shape))
  low, high = value_range
  x, y = distorted_pair(shape, rng, low, high)
  ours = quality.ssim(x, y, data_range=high - low)
  assert ours.shape == ()
  np.testing.assert_allclose(ours, skimage_ssim(x, y, high - low), atol=1e-5)


def photographs():
  """Natural photographs shipped in the scikit-image wheel, as float32 [0, 255]."""
  camera = skdata.camera().astype(np.float32)[..., None]           # 512x512x1
  chelsea = skdata.chelsea().astype(np.float32)                    # 300x451x3
  coffee = skdata.coffee().astype(np.float32)[:200, 100:420]       # non-square
  return {'camera': camera, 'chelsea': chelsea, 'coffee': coffee}


@pytest.mark.parametrize('name', ['camera', 'chelsea', 'coffee'])
def test_ssim_matches_skimage_on_photographs(name):
  image = photographs()[name]
  rng = np.random.default_rng(7)
  noisy = np.clip(image + rng.normal(scale=12.0, size=image.shape), 0, 255)
  shifted = np.clip(image * 0.8 + 30.0, 0, 255)  # luminance and contrast change
  distorted = np.stack([noisy, shifted]).astype(np.float32)
  ours = quality.ssim(np.stack([image, image]), distorted, data_range=255.0)
  reference = [skimage_ssim(image, d, 255.0) for d in distorted]
  np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_ssim_of_uint8_images_equals_float_values():
  image = skdata.chelsea()[:96, :128]
  other = np.roll(image, 2, axis=1)
  from_uint8 = quality.ssim(image, other, data_range=255)
  from_float = quality.ssim(image.astype(np.float32), other.astype(np.float32),
                            data_range=255)
  assert from_uint8.dtype == jnp.float32
  np.testing.assert_allclose(from_uint8, from_float, rtol=0, atol=0)
  np.testing.assert_allclose(from_uint8, skimage_ssim(image, other, 255),
                             atol=1e-5)


def test_ssim_preserves_leading_dimensions():
  rng = np.random.default_rng(3)
  x, y = distorted_pair((2, 3, 16, 20, 1), rng)
  out = quality.ssim(x, y, data_range=1.0)
  assert out.shape == (2, 3)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(out[i, j], skimage_ssim(x[i, j], y[i, j], 1.0),
                                 atol=1e-5)


# --- SSIM against dm-pix ------------------------------------------------------


@pytest.mark.parametrize('shape', [(4, 32, 32, 3), (2, 48, 37, 1)])
def test_ssim_matches_dm_pix(shape):
  # The conventions coincide for float images with an odd Gaussian window
  # (11 taps, sigma 1.5), 'valid' borders and k1 = 0.01, k2 = 0.03; dm-pix's
  # clipping of variances never triggers on these images.
  rng = np.random.default_rng(11)
  x, y = distorted_pair(shape, rng, -1.0, 1.0, noise=0.3)
  pix = jax.jit(functools.partial(dm_pix.ssim, max_val=2.0),
                static_argnames='return_map')
  np.testing.assert_allclose(quality.ssim(x, y, data_range=2.0), pix(x, y),
                             atol=1e-5)
  lum, cs = quality.ssim_components(x, y, data_range=2.0)
  np.testing.assert_allclose(lum * cs, pix(x, y, return_map=True), atol=1e-5)


# --- d_Q: metric properties -----------------------------------------------------


@functools.partial(jax.jit, static_argnames=('padding', 'reduction',
                                             'window_size'))
def distance(x, y, padding='valid', reduction='mean', window_size=7):
  return quality.ssim_distance(x, y, data_range=2.0, window_size=window_size,
                               padding=padding, reduction=reduction)


def test_distance_is_zero_for_identical_images_and_symmetric():
  rng = np.random.default_rng(0)
  x, y = distorted_pair((8, 16, 16, 3), rng, -1, 1)
  for padding in ('valid', 'same'):
    for reduction in ('mean', 'rms'):
      np.testing.assert_array_equal(distance(x, x, padding, reduction), 0.0)
      np.testing.assert_allclose(distance(x, y, padding, reduction),
                                 distance(y, x, padding, reduction), atol=1e-7)
      assert np.all(distance(x, y, padding, reduction) > 0.05)


def test_distance_equals_sqrt_of_2_minus_l_minus_cs():
  rng = np.random.default_rng(1)
  x, y = distorted_pair((4, 20, 24, 1), rng, -1, 1, noise=0.5)
  kwargs = dict(data_range=2.0, window_size=8, padding='same')
  lum, cs = quality.ssim_components(x, y, **kwargs)
  direct_map = np.sqrt(np.maximum(2 - np.float64(lum) - np.float64(cs), 0))
  np.testing.assert_allclose(
      quality.ssim_distance(x, y, reduction='none', **kwargs), direct_map,
      atol=2e-6)
  np.testing.assert_allclose(
      quality.ssim_distance(x, y, reduction='mean', **kwargs),
      direct_map.mean(axis=(1, 2, 3)), atol=2e-6)
  np.testing.assert_allclose(
      quality.ssim_distance(x, y, reduction='rms', **kwargs),
      np.sqrt(2 - lum.mean(axis=(1, 2, 3)) - cs.mean(axis=(1, 2, 3))),
      atol=2e-6)


def test_distance_bounds():
  # Each of sqrt(1 - L) and sqrt(1 - CS) is a normalised RMSE, at most sqrt(2),
  # so 0 <= d_Q < 2. The paper's bound sqrt(2) holds where L >= 0 and CS >= 0
  # (means of one sign, non-negatively correlated windows), and not otherwise.
  rng = np.random.default_rng(2)
  x = rng.uniform(0.2, 1.0, size=(16, 16, 16, 1)).astype(np.float32)
  y = rng.uniform(-1.0, 1.0, size=(16, 16, 16, 1)).astype(np.float32)
  candidates = np.concatenate([y, -x, x[::-1], np.full_like(x, -1.0)])
  anchors = np.concatenate([x, x, x, np.full_like(x, 1.0)])
  d = np.asarray(distance(anchors, candidates))
  assert np.all((d >= 0) & (d < 2))
  assert d[16:32].max() > 1.9          # x against -x: far beyond sqrt(2)
  # With L, CS >= 0 everywhere (positive, same-structure images) d_Q <= sqrt(2).
  brighter = np.clip(x * rng.uniform(0.2, 1.5, size=(16, 1, 1, 1)), 0, 1)
  lum, cs = quality.ssim_components(x, brighter, data_range=2.0, window_size=7)
  assert np.all(lum >= 0) and np.all(cs >= 0)
  assert np.all(np.asarray(distance(x, brighter)) <= SQRT2)
  # Opposite constant images: CS = 1 and 1 - L = 4 / (2 + C1), just below 2.
  np.testing.assert_allclose(d[-16:], np.sqrt(4 / (2 + 0.02**2)), rtol=1e-6)


@st.composite
def image_triples(draw):
  """Three images in [-1, 1], often nearly collinear or nearly identical."""
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  kind = draw(st.sampled_from(['random', 'collinear', 'close', 'constant']))
  x = rng.uniform(-1, 1, size=(12, 12, 1))
  z = rng.uniform(-1, 1, size=(12, 12, 1)) * draw(st.floats(0.01, 1.0))
  if kind == 'collinear':      # y on the segment x--z: the tightest case
    t = draw(st.floats(0.0, 1.0))
    y = x + t * (z - x)
  elif kind == 'close':
    scale = draw(st.sampled_from([1e-4, 1e-3, 1e-2]))
    y = x + scale * rng.normal(size=x.shape)
    z = y + scale * rng.normal(size=x.shape)
  elif kind == 'constant':
    x = np.full_like(x, draw(st.floats(-1, 1)))
    y = rng.uniform(-1, 1, size=x.shape)
  else:
    y = rng.uniform(-1, 1, size=x.shape)
  return np.stack([x, y, z]).astype(np.float32)


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(image_triples(), st.sampled_from(['valid', 'same']),
                  st.sampled_from(['mean', 'rms']))
def test_distance_satisfies_triangle_inequality(triple, padding, reduction):
  x, y, z = jnp.asarray(triple)[:, None]
  d_xz = distance(x, z, padding, reduction)
  d_xy = distance(x, y, padding, reduction)
  d_yz = distance(y, z, padding, reduction)
  assert float(d_xz[0]) <= float(d_xy[0] + d_yz[0]) + 1e-6


# --- d_Q: gradients ---------------------------------------------------------------


@pytest.mark.parametrize('padding,window_size', [('valid', 5), ('same', 8)])
@pytest.mark.parametrize('reduction', ['mean', 'rms'])
def test_distance_gradient_matches_finite_differences(padding, window_size,
                                                      reduction):
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.uniform(-1, 1, size=(2, 10, 9, 1)))
    y = jnp.asarray(rng.uniform(-1, 1, size=(2, 10, 9, 1)))

    def f(y):
      return jnp.sum(quality.ssim_distance(
          x, y, data_range=2.0, window_size=window_size, padding=padding,
          reduction=reduction))

    grad = jax.grad(f)(y)
    assert grad.dtype == jnp.float64
    for seed in range(3):
      v = jnp.asarray(np.random.default_rng(seed).normal(size=y.shape))
      h = 1e-6
      numeric = (f(y + h * v) - f(y - h * v)) / (2 * h)
      np.testing.assert_allclose(jnp.vdot(grad, v), numeric, rtol=1e-6,
                                 atol=1e-9)


def finite_grads(x, y, **kwargs):
  kwargs = dict(data_range=2.0, window_size=8, padding='same') | kwargs
  gx, gy = jax.grad(lambda a, b: quality.ssim_distance(a, b, **kwargs).sum(),
                    argnums=(0, 1))(x, y)
  return np.asarray(gx), np.asarray(gy)


@pytest.mark.parametrize('reduction', ['mean', 'rms'])
def test_distance_gradient_is_finite_at_edge_cases(reduction):
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 16, 1)), jnp.float32)
  cases = {
      'identical': (x, x),
      'identical constant': (jnp.full_like(x, 0.3), jnp.full_like(x, 0.3)),
      'two constants': (jnp.full_like(x, -1.0), jnp.full_like(x, 1.0)),
      'zeros': (jnp.zeros_like(x), jnp.zeros_like(x)),
      'constant vs texture': (jnp.zeros_like(x), x),
      'nearly identical': (x, x + 1e-7),
  }
  for name, (a, b) in cases.items():
    gx, gy = finite_grads(a, b, reduction=reduction)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy)), name
  # x == y is the minimum of d_Q: the subgradient returned there is zero.
  gx, gy = finite_grads(x, x, reduction=reduction)
  np.testing.assert_array_equal(gy, 0.0)


class DistanceUnderTransformsTest(chex.TestCase):
  """d_Q, batched by vmap and differentiated, traced by jit and not, against
  the same computation in float64."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_vmap_and_gradients(self):
    rng = np.random.default_rng(4)
    x, y = distorted_pair((3, 2, 16, 16, 1), rng, -1, 1)
    f = functools.partial(quality.ssim_distance, data_range=2.0)
    total = lambda a, b: f(a, b).sum()
    with jax.enable_x64(True):
      x64, y64 = np.float64(x), np.float64(y)
      exact = np.asarray(f(x64, y64))
      exact_grad = np.asarray(jax.grad(total, argnums=1)(x64, y64))
    # float32 rounding of sums over the 11 x 11 windows and the 6 x 6 map
    rel = numerics.reordered_sum(11 * 11 * 6 * 6)
    values = self.variant(f)(x, y)
    assert values.shape == (3, 2) and values.dtype == jnp.float32
    numerics.assert_trees_close(values, exact, rel)
    numerics.assert_trees_close(self.variant(jax.vmap(f))(x, y), exact, rel)
    per_image = self.variant(jax.vmap(jax.grad(
        lambda a, b: f(a[None], b[None])[0], argnums=1)))
    grads = per_image(x.reshape(6, 16, 16, 1), y.reshape(6, 16, 16, 1))
    numerics.assert_trees_close(grads.reshape(y.shape), exact_grad, rel)


def test_top_level_export_and_docstring_example():
  assert qagan_jax.ssim_distance is quality.ssim_distance
  finder = doctest.DocTestFinder()
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
  for test in finder.find(quality.ssim_distance, 'ssim_distance',
                          globs={}):
    runner.run(test)
  assert runner.summarize(verbose=False).failed == 0
  assert runner.summarize(verbose=False).attempted >= 5


# --- grayscale --------------------------------------------------------------------


def test_rgb_to_grayscale_matches_pillow_bt601():
  image = skdata.astronaut()[::4, ::4]
  ours = np.asarray(quality.rgb_to_grayscale(image))
  assert ours.shape == image.shape[:2] + (1,)
  # Pillow's 'L' conversion is ITU-R 601-2 luma, rounded to uint8.
  pillow = np.asarray(Image.fromarray(image).convert('L'), np.float32)
  np.testing.assert_allclose(ours[..., 0], pillow, atol=0.51)
  lo_hi = quality.rgb_to_grayscale(jnp.asarray([[[[-1.0] * 3, [1.0] * 3]]]))
  np.testing.assert_allclose(lo_hi[..., 0], [[[-1.0, 1.0]]], atol=1e-6)


# --- bad input --------------------------------------------------------------------


@pytest.mark.parametrize('make_args,error,match', [
    (lambda x: (x, x[..., :1]), ValueError, 'same shape'),
    (lambda x: (x[0, ..., 0], x[0, ..., 0]), ValueError, 'at least 3 dimensions'),
    (lambda x: (x[:, :6], x[:, :6]), ValueError, 'larger than the images'),
    (lambda x: (x > 0, x > 0), TypeError, 'real numbers'),
    (lambda x: (x + 0j, x + 0j), TypeError, 'real numbers'),
])
def test_bad_images_raise_clear_errors(make_args, error, match):
  x = np.zeros((2, 16, 16, 3), np.float32)
  a, b = make_args(x)
  with pytest.raises(error, match=match):
    quality.ssim_distance(a, b, data_range=1.0)
  with pytest.raises(error, match=match):   # static checks also work under jit
    jax.jit(functools.partial(quality.ssim, data_range=1.0))(a, b)


@pytest.mark.parametrize('kwargs,match', [
    (dict(data_range=0.0), 'data_range must be a finite number > 0'),
    (dict(data_range=-2.0), 'data_range must be a finite number > 0'),
    (dict(data_range=float('inf')), 'data_range must be a finite number > 0'),
    (dict(data_range=1.0, window_size=0), 'window_size must be >= 1'),
    (dict(data_range=1.0, window_size=7.5), 'window_size must be an integer'),
    (dict(data_range=1.0, sigma=0.0), 'sigma must be a finite number > 0'),
    (dict(data_range=1.0, k2=0.0), 'k2 must be a finite number > 0'),
    (dict(data_range=1.0, padding='reflect'), 'padding must be one of'),
    (dict(data_range=1.0, reduction='sum'), 'reduction must be one of'),
])
def test_bad_options_raise_clear_errors(kwargs, match):
  x = np.zeros((16, 16, 1), np.float32)
  with pytest.raises((ValueError, TypeError), match=match):
    quality.ssim_distance(x, x, **kwargs)


def test_data_range_is_required():
  x = np.zeros((16, 16, 1), np.float32)
  with pytest.raises(TypeError, match='data_range'):
    quality.ssim_distance(x, x)  # pylint: disable=missing-kwoa


@pytest.mark.parametrize('bad_value', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('output', ['ssim', 'components', 'mean', 'rms',
                                    'none'])
def test_non_finite_images_give_nan_and_leave_the_batch_alone(output,
                                                              bad_value):
  rng = np.random.default_rng(7)
  x = rng.uniform(-1, 1, (4, 24, 24, 1)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
  x_bad, y_bad = x.copy(), y.copy()
  x_bad[1, 5, 7, 0] = bad_value      # one pixel of one image
  y_bad[3, 0, 0, 0] = bad_value      # and of the other image of another pair
  if output == 'ssim':
    fn = lambda a, b: quality.ssim(a, b, data_range=2.0, window_size=7)
  elif output == 'components':
    fn = lambda a, b: jnp.stack(quality.ssim_components(
        a, b, data_range=2.0, window_size=7))
  else:
    fn = lambda a, b: quality.ssim_distance(a, b, data_range=2.0,
                                             window_size=7, reduction=output)
  clean, got = np.asarray(fn(x, y)), np.asarray(jax.jit(fn)(x_bad, y_bad))
  if output == 'components':    # [2, batch, ...] -> [batch, 2, ...]
    clean, got = np.swapaxes(clean, 0, 1), np.swapaxes(got, 0, 1)
  assert np.all(np.isnan(got[[1, 3]]))
  np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
  if output in ('mean', 'rms'):
    # the finite pairs' gradients are exact; the bad pairs' are zero, not NaN
    grad = lambda a: jax.grad(lambda v: jnp.nansum(fn(v, y_bad)))(a)
    g_bad = np.asarray(grad(x_bad))
    g_clean = np.asarray(jax.grad(lambda v: jnp.sum(fn(v, y)))(x))
    np.testing.assert_array_equal(g_bad[[0, 2]], g_clean[[0, 2]])
    assert np.all(g_bad[[1, 3]] == 0)


def test_nan_images_are_never_identical():
  x = np.full((1, 16, 16, 1), np.nan, np.float32)
  assert np.isnan(quality.ssim_distance(x, x, data_range=2.0, window_size=7))
  assert np.isnan(quality.ssim(x, x, data_range=2.0, window_size=7))


# --- the input contract -------------------------------------------------------


INTEGER_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                 np.uint32, np.uint64]


@pytest.mark.parametrize('dtype', INTEGER_TYPES)
def test_integer_images_of_every_width_keep_their_values(dtype):
  info = np.iinfo(dtype)
  rng = np.random.default_rng(info.bits)
  # values across the type's whole range, beyond int32's for the 64-bit ones
  low, high = float(info.min), float(info.max)
  x = rng.uniform(low, high, (2, 16, 16, 1)).astype(dtype)
  y = x.copy()
  y[:, 4:12, 4:12] = dtype(info.max)
  as_float = lambda a: np.asarray(a, np.float64).astype(np.float32)
  width = high - low
  ours = quality.ssim(x, y, data_range=width, window_size=7)
  np.testing.assert_array_equal(
      ours, quality.ssim(as_float(x), as_float(y), data_range=width,
                         window_size=7))
  assert np.all(ours < 0.99)     # different images are not "identical"
  np.testing.assert_array_equal(
      quality.ssim(x, x, data_range=width, window_size=7), 1.0)


def test_int64_images_beyond_int32_are_not_wrapped():
  # 2**32 + k and k are equal modulo 2**32, what a narrowing to int32 makes
  # of them: they must stay apart
  base = np.arange(16 * 16, dtype=np.int64).reshape(1, 16, 16, 1)
  far = base + 2**32
  d = quality.ssim_distance(base, far, data_range=float(2**32 + 256),
                            window_size=7)
  assert float(d[0]) > 0.1
  for convert in (np.uint64, lambda a: a.tolist()):
    np.testing.assert_array_equal(
        quality.ssim_distance(convert(base), convert(far),
                              data_range=float(2**32 + 256), window_size=7), d)


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16])
def test_half_precision_images_are_computed_in_float32(dtype):
  rng = np.random.default_rng(0)
  x, y = distorted_pair((2, 24, 24, 3), rng)
  x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
  out = quality.ssim_distance(x, y, data_range=1.0)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(
      out, quality.ssim_distance(x.astype(jnp.float32), y.astype(jnp.float32),
                                 data_range=1.0))


def test_options_may_be_numpy_and_jax_scalars():
  # as dm-pix's own tests pass them
  rng = np.random.default_rng(2)
  x, y = distorted_pair((2, 20, 20, 1), rng)
  python = quality.ssim(x, y, data_range=1.0, window_size=9, sigma=1.2,
                        k1=0.02, k2=0.04)
  for scalars in ((jnp.float32, jnp.int32), (np.float64, np.int64)):
    real, integer = scalars
    got = quality.ssim(x, y, data_range=real(1.0), window_size=integer(9),
                       sigma=real(1.2), k1=real(0.02), k2=real(0.04))
    np.testing.assert_allclose(got, python, rtol=1e-6)
  # an option traced under jit is refused by name; data_range may be traced
  with pytest.raises(TypeError, match='window_size must be a concrete'):
    jax.jit(lambda w: quality.ssim(x, y, data_range=1.0, window_size=w))(9)
  traced_range = jax.jit(lambda r: quality.ssim(x, y, data_range=r,
                                                window_size=9, sigma=1.2,
                                                k1=0.02, k2=0.04))(1.0)
  np.testing.assert_allclose(traced_range, python, rtol=1e-6)
  for bad, match in ((dict(window_size=jnp.ones(2, jnp.int32)), 'window_size '
                      'must be a scalar'),
                     (dict(sigma='wide'), 'sigma must be a real number'),
                     (dict(k1=True), 'k1 must be a number'),
                     (dict(window_size=9.0), r'window_size must be an integer, '
                      r'got 9.0; pass 9')):
    with pytest.raises(TypeError, match=match):
      quality.ssim(x, y, data_range=1.0, **bad)


def test_channels_first_images_are_refused_with_the_transpose():
  x = np.zeros((4, 3, 32, 32), np.float32)
  with pytest.raises(ValueError, match=r'channels-first.*jnp\.moveaxis\(x, -3, '
                     r'-1\)'):
    quality.ssim_distance(x, x, data_range=1.0)
  with pytest.raises(ValueError, match=r'\[\.\.\., H, W\], take images\[\.\.\., '
                     r'None\]'):
    quality.rgb_to_grayscale(np.zeros((2, 3, 40, 40)))


# --- values against data_range ------------------------------------------------


def test_values_beyond_data_range_are_an_error_outside_jit():
  image = skdata.chelsea()[:64, :64]
  noisy = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape),
                  0, 255).astype(np.uint8)
  right = float(quality.ssim(image, noisy, data_range=255))
  for fn in (quality.ssim, quality.ssim_distance, quality.ssim_components):
    with pytest.raises(ValueError, match=r'span \[0, 2\d\d\].*data_range=1\b'):
      fn(image, noisy, data_range=1.0)
  signed = np.float32(image) / 127.5 - 1
  with pytest.raises(ValueError, match=r'a range of 1\.4\d+, but data_range=1'):
    quality.ssim(signed, signed, data_range=1.0)
  # rounding of the images' own values is not an error
  np.testing.assert_allclose(
      quality.ssim(signed, signed * np.float32(1 + 1e-7), data_range=2.0), 1.0,
      atol=1e-6)
  # under jit nothing is read, at no cost; check_range=False, never
  assert float(jax.jit(lambda a, b: quality.ssim(a, b, data_range=1.0))(
      image, noisy)) < right
  quality.ssim(image, noisy, data_range=1.0, check_range=False)


def test_check_range_under_jit_is_a_checkify_check():
  from jax.experimental import checkify  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 1)).astype(
      np.float32)
  checked = checkify.checkify(jax.jit(
      lambda a, b, r: quality.ssim_distance(a, b, data_range=r,
                                            check_range=True)))
  error, _ = checked(x, x[::-1], 1.0)
  with pytest.raises(checkify.JaxRuntimeError, match='data_range'):
    error.throw()
  error, value = checked(x, x[::-1], 2.0)
  assert error.get() is None and np.all(np.asarray(value) > 0)


def test_suspicious_but_possible_ranges_warn():
  unit = np.random.default_rng(3).uniform(0, 1, (24, 24, 1)).astype(np.float32)
  with pytest.warns(UserWarning, match='take data_range=1'):
    quality.ssim(unit, unit[::-1], data_range=255.0)
  binary = (unit > 0.5).astype(np.uint8)
  with pytest.warns(UserWarning, match='pass data_range=255'):
    quality.ssim(binary, binary[::-1], data_range=1.0)


# --- bounded results, the preset, even windows --------------------------------


@pytest.mark.parametrize('window_size', [1, 3, 11])
def test_ssim_never_exceeds_one_and_is_one_for_an_image_with_itself(
    window_size):
  rng = np.random.default_rng(window_size)
  # [0, 255] images, where float32 cancellation is at its worst
  x = rng.uniform(0, 255, (8, 24, 24, 3)).astype(np.float32)
  photo = skdata.camera()[100:148, 200:248, None].astype(np.float32)
  for image in (x, photo[None], np.full_like(x, 200.0)):
    np.testing.assert_array_equal(
        quality.ssim(image, image, data_range=255, window_size=window_size),
        1.0)
    np.testing.assert_array_equal(
        quality.ssim_distance(image, image, data_range=255,
                              window_size=window_size), 0.0)
  y = np.clip(x + rng.normal(0, 3, x.shape), 0, 255).astype(np.float32)
  for a, b in ((x, y), (x, 255 - x), (x, x * np.float32(1.0000001))):
    lum, cs = quality.ssim_components(a, b, data_range=255,
                                      window_size=window_size)
    assert np.all((lum > -1) & (lum <= 1) & (cs > -1) & (cs <= 1))
    value = quality.ssim(a, b, data_range=255, window_size=window_size)
    assert np.all((value > -1) & (value <= 1))


def test_distance_range_for_images_of_nonnegative_values():
  # L > 0 where local means are >= 0: d_Q < sqrt(3); above sqrt(2) for a
  # bright image against a dark one of opposite texture (L ~ 0.22, CS ~ -1)
  pattern = np.sign(np.random.default_rng(6).normal(size=(4, 24, 24, 1)))
  bright = (0.9 + 0.1 * pattern).astype(np.float32)
  dark = (0.1 - 0.1 * pattern).astype(np.float32)
  d = np.asarray(quality.ssim_distance(bright, dark, data_range=1.0))
  assert np.all((d > SQRT2) & (d < np.sqrt(3.0)))
  lum, cs = quality.ssim_components(bright, dark, data_range=1.0)
  assert np.all(lum > 0) and np.all(cs < -0.8)


def test_the_qagan_preset_is_the_papers_d_q():
  rng = np.random.default_rng(8)
  x, y = distorted_pair((3, 32, 32, 3), rng, -1.0, 1.0)
  assert qagan_jax.QAGAN_SSIM is quality.QAGAN_SSIM
  np.testing.assert_array_equal(
      quality.ssim_distance(x, y, **quality.QAGAN_SSIM),
      quality.ssim_distance(quality.rgb_to_grayscale(x),
                            quality.rgb_to_grayscale(y), data_range=2.0,
                            window_size=8, sigma=1.5, padding='same'))
  with pytest.raises(ValueError, match='luma of RGB images'):
    quality.ssim_distance(x[..., :1], y[..., :1], **quality.QAGAN_SSIM)


def test_even_windows_centred_on_a_pixel_or_between_two():
  # 'pixel' (the QAGAN code's mgrid): the peak on tap (k - 1) // 2, one more
  # tap after it; 'symmetric' (tf.image.ssim, dm-pix): mirror-symmetric
  pixel = quality.gaussian_window(8, 1.5)
  symmetric = quality.gaussian_window(8, 1.5, 'symmetric')
  assert np.argmax(pixel) == 3 and pixel[2] == pixel[4]
  np.testing.assert_allclose(symmetric, symmetric[::-1], rtol=1e-15)
  np.testing.assert_array_equal(quality.gaussian_window(7, 1.5),
                                quality.gaussian_window(7, 1.5, 'symmetric'))
  rng = np.random.default_rng(9)
  x, y = distorted_pair((2, 24, 24, 1), rng)
  pix = functools.partial(dm_pix.ssim, max_val=1.0, filter_size=8)
  np.testing.assert_allclose(
      quality.ssim(x, y, data_range=1.0, window_size=8,
                   window_center='symmetric'), pix(x, y), atol=1e-6)
  assert not np.allclose(quality.ssim(x, y, data_range=1.0, window_size=8),
                         pix(x, y), atol=1e-4)
