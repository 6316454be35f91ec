"""SSIM and the SSIM-derived image metric d_Q, in pure jax.numpy.

Conventions, shared by all of `qagan_jax.quality`:
  * images are channels-last arrays `[..., H, W, C]`; grayscale is `C = 1`;
    leading (batch) dimensions are preserved in every result;
  * `data_range` is the width of the value range (1 for [0, 1], 2 for
    [-1, 1], 255 for uint8). It sets the stabilising constants, so it has no
    default: a wrong range silently changes every score;
  * colour images are compared channel by channel and averaged over channels
    (as scikit-image's `structural_similarity(..., channel_axis=-1)`); use
    `rgb_to_grayscale` first for the grayscale path of the QAGAN paper;
  * NaN in, NaN out: an image pair in which either image holds a NaN or an
    inf gets NaN results (the whole map for per-pixel outputs), under jit,
    vmap and grad; the other pairs of the batch keep their exact values, and
    the bad pair's gradient is zero rather than NaN.

With Gaussian-weighted local means mu, variances sigma^2 and covariance
sigma_xy (population normalisation, as Wang et al. 2004):

  L   = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
  CS  = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
  SSIM = mean(L * CS),  d_Q = sqrt(2 - L - CS)
  C1 = (k1 * data_range)^2,  C2 = (k2 * data_range)^2.

d_Q is a true metric (Brunet, Vrscay & Wang 2011), 0 <= d_Q <= sqrt(2). It is
computed here as sqrt((1 - L) + (1 - CS)) with

  1 - L  = (mu_x - mu_y)^2 / (mu_x^2 + mu_y^2 + C1)
  1 - CS = var(x - y) / (sigma_x^2 + sigma_y^2 + C2),

which is exactly 0 for identical windows instead of a difference of nearly
equal float32 numbers, and its square root has a zero (sub)gradient there.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from qagan_jax.quality import _checks
from qagan_jax.quality import filters

Reduction = Literal['mean', 'rms', 'none']


class SsimTerms(NamedTuple):
  """Per-pixel SSIM terms, each `[..., H', W', C]`."""
  luminance: jax.Array            # L
  contrast_structure: jax.Array   # CS
  luminance_gap: jax.Array        # 1 - L, computed without cancellation
  contrast_structure_gap: jax.Array  # 1 - CS, likewise


def _checked_images(x, y, *, data_range, window_size, sigma, k1, k2, padding):
  """Checks images and options (on static values), returns float images."""
  x = _checks.as_float_images('x', x)
  y = _checks.as_float_images('y', y)
  _checks.same_shape('x', x, 'y', y)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  x, y = x.astype(dtype), y.astype(dtype)
  _checks.positive_number('data_range', data_range)
  _checks.positive_number('k1', k1, allow_traced=False)
  _checks.positive_number('k2', k2, allow_traced=False)
  _checks.one_of('padding', padding, filters.PADDINGS)
  filters.gaussian_window(window_size, sigma)  # checks size and sigma
  h, w = x.shape[-3], x.shape[-2]
  if window_size > min(h, w):
    raise ValueError(
        f'the SSIM window ({window_size}x{window_size}) is larger than the '
        f'images ({h}x{w}); pass a smaller window_size.')
  return x, y


def _ssim_terms(x, y, data_range, *, window_size, sigma, k1, k2, padding,
                precision) -> SsimTerms:
  """Per-pixel SSIM terms of checked float images."""
  window = filters.gaussian_window(window_size, sigma)
  h, w = x.shape[-3], x.shape[-2]
  dtype = x.dtype

  # Local statistics are shift invariant, so each image is centred on its own
  # mean first: then x, y, x + y and x - y all have zero mean and float32
  # never subtracts large, nearly equal squares (mu^2 ~ 1.6e4 on [0, 255]
  # images, or a constant x - y). Only 'same' padding (zeros outside) breaks
  # the invariance, and the (1 - r) terms below restore it exactly. The result
  # does not depend on the centres, so they need no gradient.
  cx = jax.lax.stop_gradient(jnp.mean(x, axis=(-3, -2), keepdims=True))
  cy = jax.lax.stop_gradient(jnp.mean(y, axis=(-3, -2), keepdims=True))
  xc, yc = x - cx, y - cy
  s, d = xc + yc, xc - yc
  # Four filtered maps suffice: sigma_x^2 + sigma_y^2 and sigma_xy follow
  # from E[s^2] and E[d^2] by polarisation, and var(x - y) from E[d^2].
  stacked = jnp.concatenate([xc, yc, s * s, d * d], axis=-1)
  f = filters.separable_filter(stacked, window, padding=padding,
                               precision=precision)
  n = x.shape[-1]
  mu_xc, mu_yc, e_ss, e_dd = (f[..., i * n:(i + 1) * n] for i in range(4))

  var_sum = 0.5 * (e_ss + e_dd) - mu_xc**2 - mu_yc**2    # sigma_x^2 + sigma_y^2
  cov2 = 0.5 * (e_ss - e_dd) - 2 * mu_xc * mu_yc         # 2 sigma_xy
  var_diff = e_dd - (mu_xc - mu_yc)**2                   # var(x - y)
  if padding == 'same':
    r = jnp.asarray(filters.filter_row_sums((h, w), window, padding), dtype)
    dc = cx - cy
    var_sum += (1 - r) * (2 * (cx * mu_xc + cy * mu_yc) + (cx**2 + cy**2) * r)
    cov2 += (1 - r) * (2 * (cy * mu_xc + cx * mu_yc) + 2 * cx * cy * r)
    var_diff += (1 - r) * (2 * dc * (mu_xc - mu_yc) + dc**2 * r)
  else:
    r = 1
  mu_x, mu_y = mu_xc + cx * r, mu_yc + cy * r
  mu_diff = (mu_xc - mu_yc) + (cx - cy) * r              # exactly 0 if x == y

  c1 = (k1 * data_range)**2
  c2 = (k2 * data_range)**2
  lum_den = mu_x**2 + mu_y**2 + c1
  cs_den = var_sum + c2
  return SsimTerms(
      luminance=(2 * mu_x * mu_y + c1) / lum_den,
      contrast_structure=(cov2 + c2) / cs_den,
      luminance_gap=mu_diff**2 / lum_den,
      contrast_structure_gap=jnp.maximum(var_diff, 0) / cs_den,
  )


def _safe_sqrt(v: jax.Array) -> jax.Array:
  """sqrt with gradient 0 (not inf * 0 = nan) where v == 0; NaN stays NaN."""
  positive = v > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1)),
                   jnp.where(jnp.isnan(v), v, 0))


def non_finite_images(*images: jax.Array) -> jax.Array:
  """`[...]` True for each image `[..., H, W, C]` holding a NaN or an inf."""
  finite = [jnp.all(jnp.isfinite(x), axis=(-3, -2, -1)) for x in images]
  return ~functools.reduce(jnp.logical_and, finite)


def _as_nan_where(bad: jax.Array, values: jax.Array) -> jax.Array:
  """`values` `[..., *tail]` with NaN for the images `[...]` flagged bad."""
  bad = bad.reshape(bad.shape + (1,) * (values.ndim - bad.ndim))
  return jnp.where(bad, jnp.nan, values)


@functools.partial(jax.jit, static_argnames=(
    'output', 'window_size', 'sigma', 'k1', 'k2', 'padding', 'precision'))
def _compute(x, y, data_range, *, output, **options):
  """One compiled kernel per output kind and option set (cached by jit)."""
  # NaN in, NaN out, per image: a bad image is replaced by zeros for the
  # computation (so nothing non-finite reaches the others' values or
  # gradients) and its results are NaN; without this, NaN would compare
  # as "not > 0" in the square roots and read as d_Q = 0, "identical".
  bad = non_finite_images(x, y)
  per_pixel = bad[..., None, None, None]
  x, y = jnp.where(per_pixel, 0, x), jnp.where(per_pixel, 0, y)
  terms = _ssim_terms(x, y, data_range, **options)
  if output == 'components':
    return (_as_nan_where(bad, terms.luminance),
            _as_nan_where(bad, terms.contrast_structure))
  if output == 'ssim':
    result = jnp.mean(terms.luminance * terms.contrast_structure,
                      axis=(-3, -2, -1))
  else:
    squared = terms.luminance_gap + terms.contrast_structure_gap
    if output == 'rms':
      result = _safe_sqrt(jnp.mean(squared, axis=(-3, -2, -1)))
    elif output == 'none':
      result = _safe_sqrt(squared)
    else:
      result = jnp.mean(_safe_sqrt(squared), axis=(-3, -2, -1))
  return _as_nan_where(bad, result)


def _run(x, y, *, output, data_range, **options):
  x, y = _checked_images(x, y, data_range=data_range, **{
      k: v for k, v in options.items() if k != 'precision'})
  return _compute(x, y, data_range, output=output, **options)


def ssim_components(
    x: jax.Array,
    y: jax.Array,
    *,
    data_range: float,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: filters.Padding = 'valid',
    precision=jax.lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
  """Per-pixel luminance L and contrast-structure CS maps of SSIM.

  Args:
    x: `[..., H, W, C]` images (C = 1 for grayscale), float or integer
      (integers are converted to float32, values unchanged).
    y: images of the same shape as `x`.
    data_range: width of the value range of the images (2 for [-1, 1], 1
      for [0, 1], 255 for uint8 values); must be > 0.
    window_size: taps of the Gaussian window (11 in Wang et al. 2004; 8 in
      the QAGAN training code).
    sigma: standard deviation of the Gaussian window, in pixels.
    k1: luminance constant, C1 = (k1 * data_range)^2.
    k2: contrast constant, C2 = (k2 * data_range)^2 (C3 = C2 / 2).
    padding: 'valid' keeps pixels whose window lies inside the image (the
      reference SSIM, as scikit-image); 'same' pads with zeros and keeps the
      image size (as the QAGAN TensorFlow code); 'edge' repeats border pixels.
    precision: matmul precision of the local filters.

  Returns:
    `(L, CS)`, each `[..., H', W', C]` with H' = H - window_size + 1 for
    'valid' and H' = H otherwise (W' likewise); NaN maps for image pairs
    holding a NaN or an inf.
  """
  return _run(x, y, output='components', data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, precision=precision)


def ssim(
    x: jax.Array,
    y: jax.Array,
    *,
    data_range: float,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: filters.Padding = 'valid',
    precision=jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """Mean structural similarity (Wang et al. 2004) of image pairs.

  With the defaults this is the reference SSIM as scikit-image computes it
  with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`
  (11x11 window, 'valid' borders); colour images give the mean over channels
  of the per-channel SSIM, as scikit-image with `channel_axis=-1`.

  Args:
    x, y: `[..., H, W, C]` images of the same shape.
    data_range, window_size, sigma, k1, k2, padding, precision: as in
      `ssim_components`.

  Returns:
    `[...]`: the SSIM of each image pair, in [-1, 1] (1 for identical images;
    NaN for a pair holding a NaN or an inf).
  """
  return _run(x, y, output='ssim', data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, precision=precision)


def ssim_distance(
    x: jax.Array,
    y: jax.Array,
    *,
    data_range: float,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: filters.Padding = 'valid',
    reduction: Reduction = 'mean',
    precision=jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """The SSIM-derived metric d_Q = sqrt(2 - L - CS) between image pairs.

  d_Q (Brunet, Vrscay & Wang 2011) is a true metric: zero only for identical
  images, symmetric, and it satisfies the triangle inequality; it lies in
  [0, sqrt(2)]. QAGAN-SSIM asks the critic to be 1-Lipschitz with respect to
  it. Differentiable everywhere it is smooth, with finite gradients
  everywhere (a zero subgradient where x == y).

  Args:
    x, y: `[..., H, W, C]` images of the same shape (C = 1 for grayscale;
      colour images are compared per channel).
    data_range, window_size, sigma, k1, k2, padding, precision: as in
      `ssim_components`. The QAGAN training code used grayscale images in
      [-1, 1] (`data_range=2`) with `window_size=8, sigma=1.5,
      padding='same'`.
    reduction: 'mean' averages the per-pixel map sqrt(2 - L - CS) over pixels
      and channels (the QAGAN authors' choice); 'rms' returns
      sqrt(2 - mean(L) - mean(CS)), which is the root mean square of that map;
      'none' returns the map itself. Both reductions are metrics.

  Returns:
    `[...]` distances, or the `[..., H', W', C]` map for reduction='none';
    NaN for a pair holding a NaN or an inf (never 0, "identical").

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from qagan_jax import ssim_distance
    >>> x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 1), minval=-1.)
    >>> ssim_distance(x, x, data_range=2.0)
    Array([0., 0., 0., 0.], dtype=float32)
    >>> d = ssim_distance(x, jnp.clip(x + 0.1, -1, 1), data_range=2.0)
    >>> bool(jnp.all((d > 0) & (d < jnp.sqrt(2.0))))
    True
    >>> g = jax.grad(lambda y: ssim_distance(x, y, data_range=2.0).sum())(x)
    >>> bool(jnp.all(jnp.isfinite(g)))
    True
  """
  _checks.one_of('reduction', reduction, ('mean', 'rms', 'none'))
  return _run(x, y, output=reduction, data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, precision=precision)
