"""Natural-scene statistics (NSS) in pure jax.numpy: MSCN, GGD/AGGD fits, NIQE features.

These are the features of NIQE (Mittal, Soundararajan & Bovik 2013), written
to agree with the MATLAB release and to be differentiable, so that QAGAN-NIQE
can penalise them on a critic's gradient maps. Images are channels-last
`[..., H, W, C]` as everywhere in `qagan_jax.quality`.

Flat regions. Where a 7x7 window is exactly flat (JPEG blocks, saturated
skies, a constant gradient map), MSCN is 0 in exact arithmetic, but the usual
formula sigma = sqrt(|E[I^2] - mu^2|) turns it into rounding noise whose signs
then decide which side of the AGGD fit each value joins, so scores on such
images depend on the float precision and the backend. Here every local
statistic is computed from differences to the centre pixel,
E[(I_j - I_i)^k], and the half-scale image from differences to an anchor
pixel; both are exactly 0 on flat windows in any precision. The rule is then
MATLAB's own (x < 0 and x > 0 are the two sides, exact zeros belong to
neither) applied to exact zeros, and it gives the same features in float32
and float64 on every backend. On ordinary photographs it changes nothing.

Missing values. A fit whose sample has no negative or no positive value is
undefined (MATLAB returns NaN for it); such fits are reported with `valid =
False` and finite placeholder values, so that gradients stay finite, and
statistics over patches skip them as MATLAB's nanmean/nancov skip NaN.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from qagan_jax.quality import _checks
from qagan_jax.quality import filters

# Range of the shape parameter, as the MATLAB grid search 0.2:0.001:10.
ALPHA_MIN = 0.2
ALPHA_MAX = 10.0
# Neighbour products of NIQE: circular shifts (rows, columns) within a patch,
# as MATLAB's circshift(structdis, shift).
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
FEATURES_PER_SCALE = 18
NUM_FEATURES = 2 * FEATURES_PER_SCALE
# imresize(im, 0.5) with MATLAB's antialiased bicubic kernel (a = -0.5): every
# output pixel i reads input pixels 2i-3 .. 2i+4 with these weights (dyadic,
# so exact in float arithmetic), borders mirrored half-sample symmetrically.
_HALF_SCALE_TAPS = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256.0
_HALF_SCALE_ANCHOR = 3   # the tap on input pixel 2i


# --- the generalised Gaussian ratio function and its inverse --------------------


def _log_gaussian_ratio(alpha):
  """log rho(alpha), rho(a) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
  gammaln = jax.scipy.special.gammaln
  return (2 * gammaln(2 / alpha) - gammaln(1 / alpha) - gammaln(3 / alpha))


def _dlog_ratio_dlog_alpha(alpha):
  """d log rho / d log alpha = (psi(1/a) + 3 psi(3/a) - 4 psi(2/a)) / a > 0."""
  digamma = jax.scipy.special.digamma
  return (digamma(1 / alpha) + 3 * digamma(3 / alpha)
          - 4 * digamma(2 / alpha)) / alpha


def gaussian_ratio(alpha: jax.Array) -> jax.Array:
  """rho(alpha) = Gamma(2/alpha)^2 / (Gamma(1/alpha) Gamma(3/alpha)).

  For a zero-mean generalised Gaussian of shape alpha this is
  E[|x|]^2 / E[x^2]; it increases from 0 to 3/4 (1/2 for the Laplacian,
  2/pi for the Gaussian).
  """
  return jnp.exp(_log_gaussian_ratio(alpha))


def _ratio_table():
  # rho on a fine log-alpha grid, computed once in float64. Linear
  # interpolation in it inverts rho to 2e-6 in alpha (float64) and to float32
  # resolution (3e-5 near alpha = 10, where rho is nearly flat) in float32,
  # more accurately than a float32 Newton step, whose gammaln residual is
  # amplified 40x there; and it puts no special function in the forward pass.
  log_alpha = np.linspace(np.log(ALPHA_MIN), np.log(ALPHA_MAX), 4097)
  a = np.exp(log_alpha)
  ratio = np.exp(2 * scipy.special.gammaln(2 / a) - scipy.special.gammaln(1 / a)
                 - scipy.special.gammaln(3 / a))
  return ratio, log_alpha


_RATIO_TABLE, _LOG_ALPHA_TABLE = _ratio_table()
RATIO_MIN = float(_RATIO_TABLE[0])    # rho(0.2)
RATIO_MAX = float(_RATIO_TABLE[-1])   # rho(10)


@jax.custom_jvp
def shape_from_ratio(ratio: jax.Array) -> jax.Array:
  """Solves rho(alpha) = ratio for alpha in [0.2, 10], elementwise.

  Differentiable replacement for MATLAB's grid search over 0.2:0.001:10: it
  agrees with it to the grid's half step (the root itself is found to float32
  resolution, 3e-5 at worst near alpha = 10, or to 1e-12 in float64). Values of ratio outside [rho(0.2), rho(10)] give
  the end of the range, as the grid search does. The value comes from a
  precomputed table of rho; the derivative from the implicit function
  theorem, d alpha / d ratio = 1 / rho'(alpha), 0 where alpha is clipped.

  Args:
    ratio: array of ratios (finite; NaN propagates).

  Returns:
    alpha, same shape and dtype as ratio.
  """
  dtype = ratio.dtype
  clipped = jnp.clip(ratio, RATIO_MIN, RATIO_MAX)
  log_alpha = jnp.interp(clipped, jnp.asarray(_RATIO_TABLE, dtype),
                         jnp.asarray(_LOG_ALPHA_TABLE, dtype))
  if jnp.finfo(dtype).bits > 32:
    # In float64 one Newton step refines 2e-6 to 1e-12, so the value is
    # smooth and finite differences match the implicit derivative.
    alpha = jnp.exp(log_alpha)
    log_alpha -= ((_log_gaussian_ratio(alpha) - jnp.log(clipped))
                  / _dlog_ratio_dlog_alpha(alpha))
    log_alpha = jnp.clip(log_alpha, np.log(ALPHA_MIN), np.log(ALPHA_MAX))
  return jnp.exp(log_alpha).astype(dtype)


@shape_from_ratio.defjvp
def _shape_from_ratio_jvp(primals, tangents):
  (ratio,), (d_ratio,) = primals, tangents
  alpha = shape_from_ratio(ratio)
  # d rho / d alpha = rho * (d log rho / d log alpha) / alpha; at the root
  # rho = ratio.
  slope = ratio * _dlog_ratio_dlog_alpha(alpha) / alpha
  inside = (ratio > RATIO_MIN) & (ratio < RATIO_MAX)
  return alpha, jnp.where(inside, d_ratio / jnp.where(inside, slope, 1), 0)


def _matlab_grid():
  """MATLAB's `gam = 0.2:0.001:10` and `r_gam = gamma(2./gam).^2 ./
  (gamma(1./gam) .* gamma(3./gam))`, in float64. The colon operator counts
  from both ends (a + k d in the first half, b - (n - 1 - k) d in the
  second), so that the last value is 10 exactly."""
  n = int(round((ALPHA_MAX - ALPHA_MIN) / 0.001)) + 1
  k = np.arange(n)
  alpha = np.where(k < n / 2, ALPHA_MIN + k * 0.001,
                   ALPHA_MAX - (n - 1 - k) * 0.001)
  gamma = scipy.special.gamma
  ratio = gamma(2 / alpha)**2 / (gamma(1 / alpha) * gamma(3 / alpha))
  return alpha, ratio


_GRID_ALPHA, _GRID_RATIO = _matlab_grid()


def shape_from_ratio_grid(ratio: jax.Array) -> jax.Array:
  """MATLAB's estimate of alpha from rho(alpha) = ratio, elementwise: the
  value of the grid 0.2:0.001:10 whose rho is closest to ratio (the first
  on a tie), as `estimateggdparam` / `estimateaggdparam` choose it. Not
  differentiable (a step function); meant for float64 (x64), where it picks
  MATLAB's grid point; `shape_from_ratio` is the smooth version.

  Args:
    ratio: array of ratios.

  Returns:
    alpha, same shape and dtype as ratio.
  """
  ratio = jnp.asarray(ratio)
  table = jnp.asarray(_GRID_RATIO, ratio.dtype)     # increasing in alpha
  upper = jnp.clip(jnp.searchsorted(table, ratio), 1, len(_GRID_RATIO) - 1)
  lower = upper - 1
  # argmin of (r_gam - ratio)^2 over the two grid points around ratio
  pick = jnp.where((table[upper] - ratio)**2 < (table[lower] - ratio)**2,
                   upper, lower)
  return jnp.asarray(_GRID_ALPHA, ratio.dtype)[pick]


# --- moment fits ------------------------------------------------------------------


def _safe_sqrt(v):
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1)), 0)


def _scale_factor(alpha):
  """sqrt(Gamma(1/a) / Gamma(3/a)): the scale beta of a GGD per unit std."""
  gammaln = jax.scipy.special.gammaln
  return jnp.exp(0.5 * (gammaln(1 / alpha) - gammaln(3 / alpha)))


class GgdParams(NamedTuple):
  """Zero-mean generalised Gaussian, density ~ exp(-(|x| / beta)^alpha)."""
  alpha: jax.Array   # shape
  beta: jax.Array    # scale


class AggdParams(NamedTuple):
  """Asymmetric generalised Gaussian: scale beta_left for x < 0, beta_right
  for x > 0, common shape alpha; eta = (beta_right - beta_left) *
  Gamma(2/alpha) / Gamma(1/alpha) is its mean."""
  alpha: jax.Array
  beta_left: jax.Array
  beta_right: jax.Array
  eta: jax.Array
  valid: jax.Array   # bool: both sides non-empty (else MATLAB gives NaN)


def ggd_fit(samples: jax.Array) -> GgdParams:
  """Moment fit of a zero-mean generalised Gaussian along the last axis.

  alpha solves rho(alpha) = E[|x|]^2 / E[x^2] (see `shape_from_ratio`) and
  beta = sqrt(E[x^2]) * sqrt(Gamma(1/alpha) / Gamma(3/alpha)).

  Args:
    samples: `[..., n]` samples.

  Returns:
    GgdParams with `[...]` fields; an all-zero sample gives alpha = 0.2,
    beta = 0 (finite).
  """
  samples = jnp.asarray(samples)
  second = jnp.mean(samples**2, axis=-1)
  first = jnp.mean(jnp.abs(samples), axis=-1)
  ratio = first**2 / jnp.where(second > 0, second, 1)
  alpha = shape_from_ratio(ratio)
  return GgdParams(alpha, _safe_sqrt(second) * _scale_factor(alpha))


class _AggdMoments(NamedTuple):
  sigma_left: jax.Array
  sigma_right: jax.Array
  ratio: jax.Array      # R-hat, the target of rho(alpha)
  valid: jax.Array


def _aggd_moments(samples) -> _AggdMoments:
  squares = samples**2
  left = samples < 0
  right = samples > 0
  n_left = jnp.sum(left, axis=-1)
  n_right = jnp.sum(right, axis=-1)
  sigma_left = _safe_sqrt(jnp.sum(jnp.where(left, squares, 0), axis=-1)
                          / jnp.maximum(n_left, 1))
  sigma_right = _safe_sqrt(jnp.sum(jnp.where(right, squares, 0), axis=-1)
                           / jnp.maximum(n_right, 1))
  second = jnp.mean(squares, axis=-1)
  first = jnp.mean(jnp.abs(samples), axis=-1)
  r_hat = first**2 / jnp.where(second > 0, second, 1)
  # The correction is symmetric under gamma -> 1/gamma: using the ratio of
  # the smaller to the larger side keeps it finite when one side is empty.
  small = jnp.minimum(sigma_left, sigma_right)
  large = jnp.maximum(sigma_left, sigma_right)
  g = small / jnp.where(large > 0, large, 1)
  ratio = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1)**2
  return _AggdMoments(sigma_left, sigma_right, ratio,
                      (n_left > 0) & (n_right > 0))


def _aggd_params(moments: _AggdMoments, alpha) -> AggdParams:
  factor = _scale_factor(alpha)
  beta_left = moments.sigma_left * factor
  beta_right = moments.sigma_right * factor
  gammaln = jax.scipy.special.gammaln
  eta = (beta_right - beta_left) * jnp.exp(gammaln(2 / alpha)
                                           - gammaln(1 / alpha))
  return AggdParams(alpha, beta_left, beta_right, eta, moments.valid)


def aggd_fit(samples: jax.Array) -> AggdParams:
  """Moment fit of an asymmetric generalised Gaussian along the last axis.

  As MATLAB's estimateaggdparam: sigma_l^2 = mean(x^2 | x < 0), sigma_r^2 =
  mean(x^2 | x > 0), gamma = sigma_l / sigma_r, r = mean|x|^2 / mean(x^2),
  R = r (gamma^3 + 1)(gamma + 1) / (gamma^2 + 1)^2, rho(alpha) = R, and
  beta_{l,r} = sigma_{l,r} sqrt(Gamma(1/alpha) / Gamma(3/alpha)). Class means
  are masked means (no boolean indexing), so this runs under jit.

  Args:
    samples: `[..., n]` samples.

  Returns:
    AggdParams with `[...]` fields, all finite. `valid` is False where one
    side is empty (all-positive, all-negative, all-zero samples); those fits
    hold placeholders (beta of the empty side 0, alpha as the formula gives).
  """
  moments = _aggd_moments(jnp.asarray(samples))
  return _aggd_params(moments, shape_from_ratio(moments.ratio))


# --- MSCN coefficients ------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _neighbourhood_moments(images, window_size, sigma):
  """E[I_j - I_i] and E[(I_j - I_i)^2] over a Gaussian window around each i.

  `images` is `[..., H, W, C]`; borders are replicated (MATLAB imfilter
  'replicate'). Values come from differences to the centre pixel, so both
  are exactly 0 where the window is flat, in any precision. Derivatives come
  from the algebraically equal filter form E[I] - I and E[I^2] - 2 I E[I] +
  I^2 (the JVP below): two banded matmuls, whose transpose is cheap, instead
  of differentiating 2 x 49 shifted slices (50x slower to run and compile).
  """
  window = filters.gaussian_window(window_size, sigma)
  before = (window_size - 1) // 2
  after = window_size - 1 - before
  h, w = images.shape[-3], images.shape[-2]
  pad = [(0, 0)] * (images.ndim - 3) + [(before, after), (before, after), (0, 0)]
  padded = jnp.pad(images, pad, mode='edge')
  first = jnp.zeros_like(images)
  second = jnp.zeros_like(images)
  for p, weight_p in enumerate(window):
    for q, weight_q in enumerate(window):
      diff = padded[..., p:p + h, q:q + w, :] - images
      first = first + (weight_p * weight_q) * diff
      second = second + (weight_p * weight_q) * diff * diff
  return first, second


@_neighbourhood_moments.defjvp
def _neighbourhood_moments_jvp(window_size, sigma, primals, tangents):
  (images,), (d_images,) = primals, tangents
  first, second = _neighbourhood_moments(images, window_size, sigma)
  window = filters.gaussian_window(window_size, sigma)
  smooth = functools.partial(filters.separable_filter, window=window,
                             padding='edge')
  # first = E[I] - I, second = E[I^2] - 2 I E[I] + I^2 = E[I^2] - 2 I (first
  # + I) + I^2; differentiate the filter forms (linear in the tangent).
  d_mean = smooth(d_images)
  d_first = d_mean - d_images
  mean = first + images
  d_second = (smooth(2 * images * d_images) - 2 * d_images * mean
              - 2 * images * d_mean + 2 * images * d_images)
  return (first, second), (d_first, d_second)


class Mscn(NamedTuple):
  coefficients: jax.Array   # (I - mu) / (sigma + C)
  sigma: jax.Array          # local standard deviation


def mscn(
    images: jax.Array,
    *,
    constant: float = 1.0,
    window_size: int = 7,
    sigma: float = 7 / 6,
) -> Mscn:
  """Mean-subtracted contrast-normalised coefficients (MATLAB NIQE's structdis).

  MSCN = (I - mu) / (sigma + C) with mu and sigma^2 the local mean and
  variance under a normalised `window_size` Gaussian of std `sigma` (7 and
  7/6 in NIQE), borders replicated.

  Args:
    images: `[..., H, W, C]` images; each channel is processed on its own.
    constant: the stabilising constant C. NIQE's 1 assumes values in
      [0, 255]; for another range scale it with the range (C = data_range /
      255) to get the same coefficients.
    window_size, sigma: the local Gaussian window.

  Returns:
    Mscn(coefficients, sigma), both `[..., H, W, C]`.
  """
  images = _checks.as_float_images('images', images)
  if not _checks.is_traced(constant):   # an argument of the program
    constant = _checks.positive_number('constant', constant)
  window_size = _checks.positive_int('window_size', window_size)
  sigma = _checks.positive_number('sigma', sigma)
  if window_size > min(images.shape[-3], images.shape[-2]):
    raise ValueError(f'images of {images.shape[-3]}x{images.shape[-2]} pixels '
                     f'are smaller than the {window_size}x{window_size} window.')
  mean_offset, second = _neighbourhood_moments(images, window_size, sigma)
  # var = E[(I_j - I_i)^2] - (E[I_j] - I_i)^2; abs as MATLAB's sqrt(abs(.)).
  local_sigma = _safe_sqrt(jnp.abs(second - mean_offset**2))
  return Mscn(-mean_offset / (local_sigma + constant), local_sigma)


# --- MATLAB's imresize(., 0.5) -------------------------------------------------------


def _halve_axis(images, axis):
  n = images.shape[axis]
  pad = [(0, 0)] * images.ndim
  pad[axis] = (3, 3)
  padded = jnp.pad(images, pad, mode='symmetric')
  half = (n + 1) // 2

  def tap(k):
    return jax.lax.slice_in_dim(padded, k, k + 2 * half - 1, stride=2, axis=axis)

  anchor = tap(_HALF_SCALE_ANCHOR)
  out = anchor
  for k, weight in enumerate(_HALF_SCALE_TAPS):
    if k != _HALF_SCALE_ANCHOR:
      # Differences to the anchor: exact zeros stay exact on flat regions.
      out = out + weight * (tap(k) - anchor)
  return out


def downscale_half(images: jax.Array) -> jax.Array:
  """MATLAB's imresize(image, 0.5) (bicubic, antialiased) for even sizes.

  Args:
    images: `[..., H, W, C]` with H and W even.

  Returns:
    `[..., H/2, W/2, C]`.
  """
  images = _checks.as_float_images('images', images)
  if images.shape[-3] % 2 or images.shape[-2] % 2:
    raise ValueError('downscale_half needs even image sizes, got '
                     f'{images.shape[-3]}x{images.shape[-2]}.')
  return _halve_axis(_halve_axis(images, images.ndim - 3), images.ndim - 2)


# --- NIQE features ----------------------------------------------------------------


class NiqeFeatures(NamedTuple):
  """Per-patch NIQE features, patches in row-major order."""
  features: jax.Array    # [..., N, 36]
  valid: jax.Array       # [..., N, 36] bool; False where MATLAB gives NaN
  sharpness: jax.Array   # [..., N] mean local sigma of each patch (scale 1)


def _patches(maps, size):
  """[..., H, W] -> [..., N, size, size] non-overlapping patches."""
  *lead, h, w = maps.shape
  nh, nw = h // size, w // size
  maps = maps[..., :nh * size, :nw * size]
  maps = maps.reshape(*lead, nh, size, nw, size)
  maps = jnp.swapaxes(maps, -3, -2)
  return maps.reshape(*lead, nh * nw, size, size)


def _scale_moments(coefficients, size) -> _AggdMoments:
  """AGGD moments of one scale's 5 samples per patch, fields `[..., N, 5]`.

  Sample 0 is the MSCN coefficients of the patch, samples 1-4 their products
  with the circularly shifted patch (NEIGHBOUR_SHIFTS).
  """
  patches = _patches(coefficients, size)                   # [..., N, P, P]
  samples = [patches] + [patches * jnp.roll(patches, shift, axis=(-2, -1))
                         for shift in NEIGHBOUR_SHIFTS]
  stacked = jnp.stack(samples, axis=-3)                    # [..., N, 5, P, P]
  return _aggd_moments(stacked.reshape(*stacked.shape[:-2], size * size))


def _scale_features(fit: AggdParams):
  """The 18 features of one scale from its 5 fits: [..., N, 18] (+ valid)."""
  take = lambda field, i: field[..., i]
  columns = [take(fit.alpha, 0),
             0.5 * (take(fit.beta_left, 0) + take(fit.beta_right, 0))]
  for i in range(1, 5):
    columns += [take(fit.alpha, i), take(fit.eta, i), take(fit.beta_left, i),
                take(fit.beta_right, i)]
  valid = jnp.repeat(fit.valid, np.array([2, 4, 4, 4, 4]), axis=-1,
                     total_repeat_length=FEATURES_PER_SCALE)
  return jnp.stack(columns, axis=-1), valid


SHAPE_ESTIMATES = ('root', 'grid')


@functools.partial(jax.jit, static_argnames=('patch_size', 'shape_estimate'))
def _niqe_features(images, constant, patch_size, shape_estimate):
  # NaN in, NaN out per image: a bad image is computed as zeros (nothing
  # non-finite reaches the fits, or the other images' gradients) and its
  # features and sharpness are NaN afterwards, and its `valid` all True, so
  # that a NaN feature is never mistaken for a missing one.
  bad = ~jnp.all(jnp.isfinite(images), axis=(-3, -2, -1))
  gray = jnp.where(bad[..., None, None, None], 0, images[..., :1])
  scale1 = mscn(gray, constant=constant)
  half = downscale_half(gray)
  scale2 = mscn(half, constant=constant)
  moments1 = _scale_moments(scale1.coefficients[..., 0], patch_size)
  moments2 = _scale_moments(scale2.coefficients[..., 0], patch_size // 2)
  # One solve for all ten fits keeps a single copy of it in the program.
  solve = shape_from_ratio if shape_estimate == 'root' else shape_from_ratio_grid
  alpha = solve(jnp.stack([moments1.ratio, moments2.ratio]))
  f1, v1 = _scale_features(_aggd_params(moments1, alpha[0]))
  f2, v2 = _scale_features(_aggd_params(moments2, alpha[1]))
  sharpness = jnp.mean(_patches(scale1.sigma[..., 0], patch_size),
                       axis=(-2, -1))
  features = jnp.where(bad[..., None, None], jnp.nan,
                       jnp.concatenate([f1, f2], axis=-1))
  sharpness = jnp.where(bad[..., None], jnp.nan, sharpness)
  valid = jnp.concatenate([v1, v2], axis=-1) | bad[..., None, None]
  return NiqeFeatures(features, valid, sharpness)


def niqe_features(
    images: jax.Array,
    patch_size: int = 96,
    *,
    constant: float = 1.0,
    shape_estimate: str = 'root',
) -> NiqeFeatures:
  """NIQE's 36 features of every non-overlapping patch of grayscale images.

  Per scale (18): [alpha, (beta_l + beta_r) / 2] of the AGGD fit of the
  MSCN coefficients, then [alpha, eta, beta_l, beta_r] of the AGGD fit of
  their products with the neighbours at circular shifts (0,1), (1,0), (1,1),
  (1,-1) within the patch. Scale 2 is `downscale_half` of the image with
  patches of half the size. Images are cropped to a multiple of the patch
  size first, as MATLAB's computequality.

  Args:
    images: `[..., H, W, 1]` grayscale images (values in [0, 255] for the
      standard constant), H and W at least `patch_size`.
    patch_size: patch side at scale 1 (96 in NIQE); even, >= 14.
    constant: MSCN constant C (see `mscn`).
    shape_estimate: how the fits' shape alpha is found: 'root', the root of
      rho(alpha) = R (`shape_from_ratio`: smooth, differentiable, within the
      grid's half step of MATLAB's); 'grid', MATLAB's grid search
      (`shape_from_ratio_grid`: MATLAB's value exactly in float64, not
      differentiable).

  Returns:
    NiqeFeatures: features and valid `[..., N, 36]`, sharpness `[..., N]`,
    N = (H // patch_size) * (W // patch_size). An image holding a NaN or an
    inf gets NaN features and sharpness, all marked valid (NaN values, not
    missing ones); the other images of the batch keep their exact values.
  """
  images = _checks.as_float_images('images', images)
  patch_size = _checks.positive_int('patch_size', patch_size)
  if images.shape[-1] != 1:
    raise ValueError('niqe_features expects grayscale images [..., H, W, 1], '
                     f'got shape {images.shape}; convert colour images first.')
  if patch_size % 2 or patch_size < 14:
    raise ValueError('patch_size must be even and at least 14 (the scale-2 '
                     f'patches hold the 7x7 window), got {patch_size}.')
  h, w = images.shape[-3], images.shape[-2]
  if h < patch_size or w < patch_size:
    raise ValueError(f'images of {h}x{w} pixels are smaller than one '
                     f'{patch_size}x{patch_size} patch.')
  _checks.one_of('shape_estimate', shape_estimate, SHAPE_ESTIMATES)
  crop = images[..., :h - h % patch_size, :w - w % patch_size, :]
  return _niqe_features(crop, constant, patch_size, shape_estimate)
