"""SSIM and the SSIM-derived image metric d_Q, in pure jax.numpy.

With Gaussian-weighted local means mu, variances sigma^2 and covariance
sigma_xy (population normalisation, as Wang et al. 2004):

  L   = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
  CS  = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
  SSIM = mean(L * CS),  d_Q = sqrt(2 - L - CS)
  C1 = (k1 * data_range)^2,  C2 = (k2 * data_range)^2.

Both terms are computed from a sum and a difference,

  L  = (((mu_x + mu_y)^2 - (mu_x - mu_y)^2) / 2 + C1) / (mu_x^2 + mu_y^2 + C1)
  CS = ((var(x + y) - var(x - y)) / 2 + C2) / (sigma_x^2 + sigma_y^2 + C2),

with mu_x^2 + mu_y^2 and sigma_x^2 + sigma_y^2 the half sums of the
squares and variances, and var(x + y), var(x - y) >= 0 (which bounds the
covariance, |sigma_xy| <= (sigma_x^2 + sigma_y^2) / 2), so that float
rounding can never take L or CS out of (-1, 1]; each is evaluated in the
form that keeps full relative precision where it lies (`_bounded_ratio`).
The gaps 1 - L = (mu_x - mu_y)^2 / (...) and 1 - CS = var(x - y) / (...)
make d_Q. An image with itself has gaps of exactly 0, L = CS = SSIM = 1 and
d_Q = 0 (with a zero subgradient there); for different images the values
and gradients are those of the formulas above.

Ranges. L, CS and SSIM lie in (-1, 1]. d_Q lies in [0, 2): each gap is
below 2. Where both images' local means are >= 0 (images in [0, 1] or
[0, 255]) L > 0, so d_Q < sqrt(3); the sqrt(2) often quoted is its value at
L = CS = 0, not a bound (1.92 is reached by images in [-1, 1]). d_Q is a
true metric (Brunet, Vrscay & Wang 2011): zero only for identical images,
symmetric, and it satisfies the triangle inequality.

Conventions: images, dtypes and options as the package docstring says
(`qagan_jax.quality`); colour images are compared channel by channel and
averaged over channels (as scikit-image with `channel_axis=-1`), or by
their BT.601 luma with `grayscale=True` (as the QAGAN code); the Gaussian
of an even window is centred on a pixel ('pixel', the QAGAN code) or
between two ('symmetric', tf.image.ssim and dm-pix): `window_center`.
`QAGAN_SSIM` holds the paper's settings. NaN in, NaN out: an image pair in
which either image holds a NaN or an inf gets NaN results (the whole map
for per-pixel outputs), under jit, vmap and grad; the other pairs of the
batch keep their exact values, and the bad pair's gradient is zero.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from qagan_jax.quality import _checks
from qagan_jax.quality import color
from qagan_jax.quality import filters

Reduction = Literal['mean', 'rms', 'none']

# d_Q as the QAGAN training code computes it for its penalty: grayscale
# (BT.601 luma) images in [-1, 1], an 8-tap Gaussian of sigma 1.5 centred on
# a pixel, zero padding. `ssim_distance(x, y, **QAGAN_SSIM)` for RGB x, y in
# [-1, 1].
QAGAN_SSIM = {'data_range': 2.0, 'window_size': 8, 'sigma': 1.5,
              'padding': 'same', 'window_center': 'pixel', 'grayscale': True}


class SsimTerms(NamedTuple):
  """Per-pixel SSIM terms, each `[..., H', W', C]`."""
  luminance: jax.Array            # L
  contrast_structure: jax.Array   # CS
  luminance_gap: jax.Array        # 1 - L, computed without cancellation
  contrast_structure_gap: jax.Array  # 1 - CS, likewise


def _ssim_terms(x, y, data_range, *, window_size, sigma, k1, k2, padding,
                window_center, precision) -> SsimTerms:
  """Per-pixel SSIM terms of checked float images."""
  window = filters.gaussian_window(window_size, sigma, window_center)
  h, w = x.shape[-3], x.shape[-2]
  dtype = x.dtype

  # Local statistics are shift invariant, so each image is centred on its own
  # mean first: then x, y, x + y and x - y all have zero mean and float32
  # never subtracts large, nearly equal squares (mu^2 ~ 1.6e4 on [0, 255]
  # images, or a constant x - y). Only 'same' padding (zeros outside) breaks
  # the invariance, and the (1 - r) terms below restore it exactly. The result
  # does not depend on the centres, so they need no gradient.
  # Both images go through one reduction (stacked), so that equal images get
  # bit-equal centres whatever the compiler fuses.
  centres = jax.lax.stop_gradient(jnp.mean(jnp.stack([x, y]), axis=(-3, -2),
                                           keepdims=True))
  cx, cy = centres[0], centres[1]
  xc, yc = x - cx, y - cy
  s, d = xc + yc, xc - yc
  # Four filtered maps suffice: sigma_x^2 + sigma_y^2 follows from E[s^2]
  # and E[d^2] by polarisation, and var(x - y) from E[d^2].
  stacked = jnp.concatenate([xc, yc, s * s, d * d], axis=-1)
  f = filters.separable_filter(stacked, window, padding=padding,
                               precision=precision)
  n = x.shape[-1]
  mu_xc, mu_yc, e_ss, e_dd = (f[..., i * n:(i + 1) * n] for i in range(4))

  # var(x + y) and var(x - y): both >= 0, which bounds the covariance,
  # |2 sigma_xy| <= sigma_x^2 + sigma_y^2 (their half sum, by polarisation)
  mu_sc, mu_dc = mu_xc + mu_yc, mu_xc - mu_yc
  var_plus = e_ss - mu_sc**2
  var_minus = e_dd - mu_dc**2
  if padding == 'same':
    r = jnp.asarray(filters.filter_row_sums((h, w), window, padding), dtype)
    sc, dc = cx + cy, cx - cy
    var_plus += (1 - r) * (2 * sc * mu_sc + sc**2 * r)
    var_minus += (1 - r) * (2 * dc * mu_dc + dc**2 * r)
  else:
    r = 1
  mu_sum = mu_sc + (cx + cy) * r                          # mu_x + mu_y
  mu_diff = mu_dc + (cx - cy) * r                         # exactly 0 if x == y
  c1 = (k1 * data_range)**2
  c2 = (k2 * data_range)**2
  luminance, luminance_gap = _bounded_ratio(mu_sum**2, mu_diff**2, c1)
  structure, structure_gap = _bounded_ratio(jnp.maximum(var_plus, 0),
                                            jnp.maximum(var_minus, 0), c2)
  return SsimTerms(
      luminance=luminance,
      contrast_structure=structure,
      luminance_gap=luminance_gap,
      contrast_structure_gap=structure_gap,
  )


def _bounded_ratio(plus, minus, c):
  """(T, 1 - T) for T = ((plus - minus) / 2 + c) / ((plus + minus) / 2 + c),
  plus, minus >= 0: L from (mu_x +- mu_y)^2 and C1, CS from var(x +- y) and
  C2. T lies in (-1, 1] in exact arithmetic, and here too: it is computed as
  1 - minus / den where it is near 1 (exactly 1 where minus is 0, an image
  with itself), as (plus + 2c) / den - 1 where it is near -1, and directly
  in between, each form where it keeps full relative precision; the three
  are one function, so values and gradients are those of the formula."""
  den = 0.5 * (plus + minus) + c
  gap = minus / den
  near_one = 1 - gap
  near_minus_one = (plus + 2 * c) / den - 1
  direct = (0.5 * (plus - minus) + c) / den
  value = jnp.where(gap <= 0.5, near_one,
                    jnp.where(gap >= 1.5, near_minus_one, direct))
  return value, gap


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
    'output', 'window_size', 'sigma', 'k1', 'k2', 'padding', 'window_center',
    'grayscale', 'precision', 'checked_under_jit'))
def _compute(x, y, data_range, *, output, grayscale, checked_under_jit,
             **options):
  """One compiled kernel per output kind and option set (cached by jit)."""
  if checked_under_jit:
    _checks.check_value_range_traced((x, y), data_range, output_name(output))
  if grayscale:
    x, y = color.rgb_to_grayscale(x), color.rgb_to_grayscale(y)
  # NaN in, NaN out, per image: a bad image is replaced by zeros for the
  # computation (so nothing non-finite reaches the others' values or
  # gradients) and its results are NaN; without this, NaN would compare
  # as "not > 0" in the square roots and read as d_Q = 0, "identical".
  bad = non_finite_images(x, y)
  per_pixel = bad[..., None, None, None]
  x, y = jnp.where(per_pixel, 0, x), jnp.where(per_pixel, 0, y)
  # SSIM is scale invariant: x / 2^e and y / 2^e at data_range / 2^e (e the
  # exponent of data_range) give the same values with the same rounding (a
  # power of two scales floats exactly), and squares of any range (int64
  # images, tiny ranges) clear of float32's overflow and underflow.
  _, exponent = jnp.frexp(jnp.asarray(data_range, x.dtype))
  scale = jnp.ldexp(jnp.ones((), x.dtype), -exponent)
  x, y, data_range = x * scale, y * scale, data_range * scale
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


def output_name(output: str) -> str:
  """The public function that computes `output`, for messages."""
  return {'components': 'ssim_components', 'ssim': 'ssim'}.get(
      output, 'ssim_distance')


def _run(x, y, *, output, data_range, window_size, sigma, k1, k2, padding,
         window_center, grayscale, check_range, precision):
  """Checks images and options (as the package docstring says), then
  computes `output`."""
  function = output_name(output)
  integer_input = _checks.is_integer_input(x) or _checks.is_integer_input(y)
  x = _checks.as_float_images('x', x)
  y = _checks.as_float_images('y', y)
  _checks.same_shape('x', x, 'y', y)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  x, y = x.astype(dtype), y.astype(dtype)
  data_range = _checks.data_range(data_range)
  options = {'window_size': _checks.positive_int('window_size', window_size),
             'sigma': _checks.positive_number('sigma', sigma),
             'k1': _checks.positive_number('k1', k1),
             'k2': _checks.positive_number('k2', k2),
             'padding': padding, 'window_center': window_center,
             'precision': precision}
  _checks.one_of('padding', padding, filters.PADDINGS)
  _checks.one_of('window_center', window_center, filters.WINDOW_CENTERS)
  if check_range not in (None, True, False):
    raise TypeError(f'check_range must be None, True or False, got '
                    f'{check_range!r}.')
  if not isinstance(grayscale, bool):
    raise TypeError(f'grayscale must be True or False, got {grayscale!r}.')
  if grayscale and x.shape[-1] != 3:
    raise ValueError(f'grayscale=True compares the luma of RGB images '
                     f'[..., H, W, 3]; got shape {x.shape}.')
  h, w = x.shape[-3], x.shape[-2]
  if options['window_size'] > min(h, w):
    raise ValueError(
        f'the SSIM window (window_size={options["window_size"]}) is larger '
        f'than the images ({h}x{w}); pass a smaller window_size.')
  traced = _checks.is_traced(x) or _checks.is_traced(y) or _checks.is_traced(
      data_range)
  if check_range is not False and not traced:
    _checks.check_value_range((x, y), data_range,
                              integer_input=integer_input, function=function)
  return _compute(x, y, data_range, output=output, grayscale=grayscale,
                  checked_under_jit=bool(check_range) and traced, **options)


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
    window_center: filters.WindowCenter = 'pixel',
    grayscale: bool = False,
    check_range: bool | None = None,
    precision=jax.lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
  """Per-pixel luminance L and contrast-structure CS maps of SSIM.

  Args:
    x: `[..., H, W, C]` images (C = 1 for grayscale), of any real dtype
      (integers keep their values).
    y: images of the same shape as `x`.
    data_range: width of the range the values can take (2 for [-1, 1], 1
      for [0, 1], 255 for 8-bit images); must be > 0. It sets C1 and C2, so
      it has no default. Concrete images spanning more than it are an error
      (`check_range`).
    window_size: taps of the Gaussian window (11 in Wang et al. 2004; 8 in
      the QAGAN training code).
    sigma: standard deviation of the Gaussian window, in pixels.
    k1: luminance constant, C1 = (k1 * data_range)^2.
    k2: contrast constant, C2 = (k2 * data_range)^2 (C3 = C2 / 2).
    padding: 'valid' keeps pixels whose window lies inside the image (the
      reference SSIM, as scikit-image); 'same' pads with zeros and keeps the
      image size (as the QAGAN TensorFlow code); 'edge' repeats border pixels.
    window_center: for even window sizes, the Gaussian centred on a pixel
      ('pixel': one more tap after the centre than before, as the QAGAN
      code's `mgrid`) or in the middle of the window ('symmetric', as
      tf.image.ssim and dm-pix); the same window for odd sizes
      (`filters.gaussian_window`).
    grayscale: compare the BT.601 luma of RGB images (`rgb_to_grayscale`,
      as the QAGAN code) instead of each channel.
    check_range: compare the images' values with data_range. None (the
      default): for concrete images, not under jit (no cost there); True:
      also under jit, as a `jax.experimental.checkify` check (effective when
      the caller is wrapped in `checkify.checkify`); False: never.
    precision: matmul precision of the local filters.

  Returns:
    `(L, CS)`, each `[..., H', W', C]` (C = 1 with `grayscale`) with
    H' = H - window_size + 1 for 'valid' and H' = H otherwise (W' likewise);
    values in (-1, 1]; NaN maps for image pairs holding a NaN or an inf.
  """
  return _run(x, y, output='components', data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, window_center=window_center,
              grayscale=grayscale, check_range=check_range,
              precision=precision)


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
    window_center: filters.WindowCenter = 'pixel',
    grayscale: bool = False,
    check_range: bool | None = None,
    precision=jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """Mean structural similarity (Wang et al. 2004) of image pairs.

  With the defaults this is the reference SSIM as scikit-image computes it
  with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`
  (11x11 window, 'valid' borders); colour images give the mean over channels
  of the per-channel SSIM, as scikit-image with `channel_axis=-1`.
  `window_center='symmetric'` with an even `window_size` gives tf.image.ssim
  and dm-pix's window; docs/quality.md has the call that reproduces each
  library.

  Args:
    x, y: `[..., H, W, C]` images of the same shape.
    data_range, window_size, sigma, k1, k2, padding, window_center,
      grayscale, check_range, precision: as in `ssim_components`.

  Returns:
    `[...]`: the SSIM of each image pair, in (-1, 1] (exactly 1 for an image
    with itself; NaN for a pair holding a NaN or an inf).
  """
  return _run(x, y, output='ssim', data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, window_center=window_center,
              grayscale=grayscale, check_range=check_range,
              precision=precision)


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
    window_center: filters.WindowCenter = 'pixel',
    grayscale: bool = False,
    reduction: Reduction = 'mean',
    check_range: bool | None = None,
    precision=jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """The SSIM-derived metric d_Q = sqrt(2 - L - CS) between image pairs.

  d_Q (Brunet, Vrscay & Wang 2011) is a true metric: zero only for
  identical images, symmetric, and it satisfies the triangle inequality.
  QAGAN-SSIM asks the critic to be 1-Lipschitz
  with respect to it: `ssim_distance(x, y, **QAGAN_SSIM)` is the paper's
  (RGB images in [-1, 1], their BT.601 luma, an 8-tap Gaussian of sigma
  1.5 centred on a pixel, zero padding). Its values lie in [0, 2), and in
  [0, sqrt(3)) where local means are >= 0 (module docstring).
  Differentiable everywhere it is smooth, with finite gradients everywhere
  (a zero subgradient where x == y).

  Args:
    x, y: `[..., H, W, C]` images of the same shape (C = 1 for grayscale;
      colour images are compared per channel unless `grayscale`).
    data_range, window_size, sigma, k1, k2, padding, window_center,
      grayscale, check_range, precision: as in `ssim_components`.
    reduction: 'mean' averages the per-pixel map sqrt(2 - L - CS) over pixels
      and channels (the QAGAN authors' choice); 'rms' returns
      sqrt(2 - mean(L) - mean(CS)), which is the root mean square of that map;
      'none' returns the map itself.

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
    >>> bool(jnp.all((d > 0) & (d < 2)))
    True
    >>> g = jax.grad(lambda y: ssim_distance(x, y, data_range=2.0).sum())(x)
    >>> bool(jnp.all(jnp.isfinite(g)))
    True
  """
  _checks.one_of('reduction', reduction, ('mean', 'rms', 'none'))
  return _run(x, y, output=reduction, data_range=data_range,
              window_size=window_size, sigma=sigma, k1=k1, k2=k2,
              padding=padding, window_center=window_center,
              grayscale=grayscale, check_range=check_range,
              precision=precision)
