"""Natural-scene statistics against scipy, known distributions and MATLAB's algorithms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import scipy.stats

from helpers import numerics
from qagan_jax.quality import nss


def matlab_grid_alpha(ratio):
  """MATLAB estimateaggdparam's grid search: gam = 0.2:0.001:10."""
  gam = np.arange(0.2, 10.0 + 5e-4, 0.001)
  r_gam = scipy.special.gamma(2 / gam)**2 / (
      scipy.special.gamma(1 / gam) * scipy.special.gamma(3 / gam))
  ratio = np.atleast_1d(ratio)
  return gam[np.argmin((r_gam[None, :] - ratio[:, None])**2, axis=1)]


def rho(alpha):
  return np.exp(2 * scipy.special.gammaln(2 / alpha) - scipy.special.gammaln(
      1 / alpha) - scipy.special.gammaln(3 / alpha))


# --- the shape solve ------------------------------------------------------------------


def test_shape_matches_matlab_grid_search_over_its_range():
  rng = np.random.default_rng(0)
  alphas = np.concatenate([np.linspace(0.2, 10.0, 4001),
                           rng.uniform(0.2, 10.0, 2000)])
  ratios = np.concatenate([rho(alphas), rng.uniform(0.0, 1.1, 2000)])
  ours = np.asarray(nss.shape_from_ratio(jnp.asarray(ratios, jnp.float32)))
  grid = matlab_grid_alpha(ratios)
  np.testing.assert_array_less(np.abs(ours - grid), 0.001 + 1e-6)
  # Off the end of the range it returns the end of the range, as the grid.
  np.testing.assert_allclose(nss.shape_from_ratio(jnp.asarray([0.01, 0.9])),
                             [0.2, 10.0], rtol=1e-6)


def test_shape_solution_is_the_root_and_its_derivative_is_implicit():
  with jax.enable_x64(True):
    alphas = np.asarray([0.25, 0.7, 1.0, 2.0, 3.3, 6.0, 9.5])
    ratios = jnp.asarray(rho(alphas))
    np.testing.assert_allclose(nss.shape_from_ratio(ratios), alphas,
                               rtol=1e-10)
    grads = jax.vmap(jax.grad(nss.shape_from_ratio))(ratios)
    # d alpha / d ratio of the exact inverse: 1 / rho'(alpha), with rho'
    # from central differences of scipy's gammaln.
    h = 1e-6
    exact = 2 * h / (rho(alphas + h) - rho(alphas - h))
    np.testing.assert_allclose(grads, exact, rtol=1e-5)
    # ... and with finite differences of the computed function.
    step = 1e-7
    numeric = (nss.shape_from_ratio(ratios + step)
               - nss.shape_from_ratio(ratios - step)) / (2 * step)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5)
    assert float(jax.grad(nss.shape_from_ratio)(jnp.asarray(0.01))) == 0.0


def test_gaussian_ratio_known_values():
  np.testing.assert_allclose(
      nss.gaussian_ratio(jnp.asarray([1.0, 2.0])), [0.5, 2 / np.pi], rtol=1e-6)


# --- moment fits on known distributions ----------------------------------------------

# (shape, rtol for alpha, rtol for beta): about 4 standard deviations of the
# moment estimators at n = 1e6, measured over repeated draws.
SHAPES = [(0.3, 0.02, 0.15), (0.5, 0.02, 0.06), (1.0, 0.02, 0.02),
          (2.0, 0.02, 0.01), (4.0, 0.03, 0.01), (8.0, 0.08, 0.01)]


@pytest.mark.parametrize('shape,alpha_rtol,beta_rtol', SHAPES)
def test_ggd_fit_recovers_generalised_gaussians(shape, alpha_rtol, beta_rtol):
  rng = np.random.default_rng(int(shape * 10))
  samples = scipy.stats.gennorm.rvs(shape, scale=1.7, size=1_000_000,
                                    random_state=rng)
  fit = nss.ggd_fit(jnp.asarray(samples, jnp.float32))
  np.testing.assert_allclose(fit.alpha, shape, rtol=alpha_rtol)
  np.testing.assert_allclose(fit.beta, 1.7, rtol=beta_rtol)


def aggd_samples(alpha, beta_left, beta_right, n, rng):
  """Asymmetric GGD: each side a half generalised Gaussian, sides weighted
  by their scales so that the density is continuous at 0."""
  left = rng.random(n) < beta_left / (beta_left + beta_right)
  magnitude = np.abs(scipy.stats.gennorm.rvs(alpha, size=n, random_state=rng))
  return np.where(left, -beta_left * magnitude, beta_right * magnitude)


@pytest.mark.parametrize('alpha,beta_left,beta_right', [
    (0.6, 0.4, 0.9), (1.5, 1.0, 0.5), (3.0, 0.2, 0.25)])
def test_aggd_fit_recovers_asymmetric_generalised_gaussians(
    alpha, beta_left, beta_right):
  rng = np.random.default_rng(3)
  samples = aggd_samples(alpha, beta_left, beta_right, 1_000_000, rng)
  fit = nss.aggd_fit(jnp.asarray(samples, jnp.float32))
  assert bool(fit.valid)
  np.testing.assert_allclose(fit.alpha, alpha, rtol=0.03)
  np.testing.assert_allclose(fit.beta_left, beta_left, rtol=0.03)
  np.testing.assert_allclose(fit.beta_right, beta_right, rtol=0.03)
  # eta is the distribution's mean: compare with the sample mean.
  np.testing.assert_allclose(fit.eta, samples.mean(), rtol=0.05,
                             atol=2e-3 * (beta_left + beta_right))


def test_fits_are_finite_on_degenerate_samples():
  x = jnp.linspace(0.1, 1.0, 64)
  samples = jnp.stack([x, -x, jnp.zeros(64), jnp.full(64, 3.0),
                       jnp.full(64, -2.0), jnp.sin(jnp.arange(64.0))])
  fit = jax.jit(nss.aggd_fit)(samples)
  for field in fit:
    assert np.all(np.isfinite(np.asarray(field, np.float32)))
  np.testing.assert_array_equal(fit.valid, [False] * 5 + [True])
  assert np.all(np.isfinite(np.asarray(jax.jit(nss.ggd_fit)(samples).alpha)))

  def total(s):
    g, a = nss.ggd_fit(s), nss.aggd_fit(s)
    return (g.alpha + g.beta + a.alpha + a.beta_left + a.beta_right
            + a.eta).sum()

  grads = jax.jit(jax.grad(total))(samples)
  assert np.all(np.isfinite(np.asarray(grads)))


def test_fits_keep_leading_dimensions_under_vmap():
  rng = np.random.default_rng(1)
  samples = jnp.asarray(rng.laplace(size=(2, 3, 500)), jnp.float32)
  fit = jax.jit(nss.aggd_fit)(samples)
  assert fit.alpha.shape == (2, 3)
  by_vmap = jax.jit(jax.vmap(jax.vmap(nss.aggd_fit)))(samples)
  # the same means of 500 values, perhaps summed in another order
  numerics.assert_trees_close(by_vmap, fit, numerics.reordered_sum(500))


# --- MSCN and the half-scale image ------------------------------------------------------


def reference_mscn(image):
  """MATLAB NIQE's structdis in float64 with scipy (imfilter 'replicate')."""
  window = np.outer(*(2 * [np.exp(-0.5 * (np.arange(-3, 4) / (7 / 6))**2)]))
  window /= window.sum()
  mu = scipy.ndimage.correlate(image, window, mode='nearest')
  sigma = np.sqrt(np.abs(
      scipy.ndimage.correlate(image * image, window, mode='nearest') - mu**2))
  return (image - mu) / (sigma + 1), sigma


def test_mscn_matches_the_matlab_formula():
  rng = np.random.default_rng(2)
  image = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (40, 52)), 1.0)
  expected, expected_sigma = reference_mscn(image)
  with jax.enable_x64(True):
    ours = nss.mscn(jnp.asarray(image)[..., None])
    np.testing.assert_allclose(ours.coefficients[..., 0], expected, atol=1e-9)
    np.testing.assert_allclose(ours.sigma[..., 0], expected_sigma, atol=1e-9)
  ours32 = nss.mscn(jnp.asarray(image, jnp.float32)[..., None])
  np.testing.assert_allclose(ours32.coefficients[..., 0], expected, atol=2e-5)


def test_mscn_constant_scales_with_the_data_range():
  rng = np.random.default_rng(4)
  image = rng.uniform(0, 255, (2, 20, 20, 1)).astype(np.float32)
  np.testing.assert_allclose(
      nss.mscn(image / 255.0, constant=1 / 255).coefficients,
      nss.mscn(image).coefficients, atol=1e-5)


def test_mscn_is_exactly_zero_on_flat_windows():
  image = np.full((24, 24, 1), 187.3, np.float32)
  image[:, 16:] = 12.0   # a step: only pixels within 3 of it are non-zero
  result = nss.mscn(image)
  coefficients = np.asarray(result.coefficients[..., 0])
  assert np.all(coefficients[:, :13] == 0) and np.all(coefficients[:, 19:] == 0)
  assert np.all(coefficients[:, 13:19] != 0)
  assert np.all(np.asarray(result.sigma)[:, :13] == 0)


def matlab_imresize_half(image):
  """imresize(image, 0.5): MATLAB's contributions() for the antialiased
  bicubic kernel, applied along both axes (a direct port of the algorithm)."""

  def cubic(x):
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))

  def resize_axis0(x):
    n, scale = x.shape[0], 0.5
    out = np.arange(1, int(np.ceil(n * scale)) + 1)
    u = out / scale + 0.5 * (1 - 1 / scale)
    width = 4 / scale
    left = np.floor(u - width / 2)
    indices = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = scale * cubic(scale * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(1, n + 1), np.arange(n, 0, -1)])
    indices = mirror[np.mod(indices - 1, 2 * n).astype(int)] - 1
    return np.einsum('ok,ok...->o...', weights, x[indices])

  return resize_axis0(resize_axis0(image).swapaxes(0, 1)).swapaxes(0, 1)


def test_downscale_half_matches_matlab_imresize():
  rng = np.random.default_rng(5)
  image = rng.uniform(0, 255, (30, 44))
  with jax.enable_x64(True):
    ours = nss.downscale_half(jnp.asarray(image)[None, ..., None])[0, ..., 0]
    np.testing.assert_allclose(ours, matlab_imresize_half(image), atol=1e-9)
  flat = np.full((1, 16, 16, 1), 0.3, np.float32)
  assert np.all(np.asarray(nss.downscale_half(flat)) == np.float32(0.3))


# --- features ---------------------------------------------------------------------------


def test_features_shapes_order_and_validity():
  rng = np.random.default_rng(6)
  images = rng.normal(128, 5, (2, 3, 64, 96, 1)).astype(np.float32)
  images[0, 0, 32:, 32:64] += rng.normal(0, 40, (32, 32, 1))  # row 1, col 1
  images[0, 1, :32, :32] = 100.0                               # flat patch 0
  images[1, 2] = 7.0                                           # flat image
  found = nss.niqe_features(images, 32)
  assert found.features.shape == (2, 3, 6, 36)
  assert found.valid.shape == (2, 3, 6, 36)
  assert found.sharpness.shape == (2, 3, 6)
  # Patches are row-major: the noisy patch is number 4, the sharpest, with
  # the largest MSCN scale (beta) at both scales.
  assert int(np.argmax(found.sharpness[0, 0])) == 4
  assert int(np.argmax(found.features[0, 0, :, 1])) == 4
  assert int(np.argmax(found.features[0, 0, :, 19])) == 4
  # Flat patches have undefined fits: marked invalid, values still finite.
  # (At scale 2 the flat patch of image [0, 1] sees its textured neighbours
  # through the downscaling filter, so only its scale-1 fits are undefined.)
  assert not bool(found.valid[0, 1, 0, :18].any())
  assert bool(found.valid[0, 1, 0, 18:].all())
  assert bool(found.valid[0, 1, 1:].all()) and bool(found.valid[1, :2].all())
  assert not bool(found.valid[1, 2].any())
  assert np.all(np.isfinite(np.asarray(found.features)))


@pytest.mark.parametrize('make_images,patch_size,error,match', [
    (lambda: np.zeros((64, 64)), 32, ValueError, 'at least 3 dimensions'),
    (lambda: np.zeros((64, 64, 3)), 32, ValueError, 'grayscale'),
    (lambda: np.zeros((20, 64, 1)), 32, ValueError, 'smaller than one 32x32'),
    (lambda: np.zeros((64, 64, 1)), 31, ValueError, 'even'),
    (lambda: np.zeros((64, 64, 1), bool), 32, TypeError, 'real numbers'),
])
def test_features_bad_input(make_images, patch_size, error, match):
  with pytest.raises(error, match=match):
    nss.niqe_features(make_images(), patch_size)


def test_features_are_exact_in_float32_on_flat_regions():
  # A JPEG-like image, flat 8x8 blocks with texture between them: float32 and
  # float64 features agree because flat windows give exact zeros in both.
  rng = np.random.default_rng(9)
  blocks = np.kron(rng.integers(60, 200, (12, 12)), np.ones((8, 8)))
  blocks[::8] += rng.normal(0, 6, blocks[::8].shape)
  f32 = nss.niqe_features(blocks[..., None].astype(np.float32), 96)
  with jax.enable_x64(True):
    f64 = nss.niqe_features(jnp.asarray(blocks)[..., None], 96)
    np.testing.assert_array_equal(f32.valid, f64.valid)
    np.testing.assert_allclose(f32.features, f64.features, rtol=2e-4,
                               atol=1e-5)
