"""Separable linear filters for channels-last images `(..., H, W, C)`.

A separable filter is applied as two small matrix products, one along H and
one along W, with a banded matrix that holds the 1-D window and the border
rule. The matrices depend only on static shapes, so they are built once at
trace time with numpy. On the shapes this package uses (32..512 pixels a side,
windows of 7..11 taps) this is several times faster than a depthwise
convolution on CPU and maps onto the matrix units of GPUs and TPUs
(`experiments/benchmark_quality.py` measures it).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from qagan_jax.quality import _checks

Padding = Literal['valid', 'same', 'edge']
PADDINGS = ('valid', 'same', 'edge')


WindowCenter = Literal['pixel', 'symmetric']
WINDOW_CENTERS = ('pixel', 'symmetric')


def gaussian_window(size: int, sigma: float,
                    center: WindowCenter = 'pixel') -> np.ndarray:
  """1-D Gaussian window of `size` taps that sums to 1, as float64 numpy.

  Where the Gaussian's centre falls matters for even sizes only:

  * 'pixel': on a pixel. Tap i sits at offset i - (size - 1) // 2, so an
    even window has one more tap after the centre than before it, as the
    2-D window `mgrid[-size//2 + 1 : size//2 + 1]` of the QAGAN training
    code and many TensorFlow SSIM codes.
  * 'symmetric': in the middle of the window. Tap i sits at offset
    i - (size - 1) / 2, between two pixels for even sizes, as
    `tf.image.ssim` and `dm_pix.ssim`.

  Either way a filter reads (size - 1) // 2 pixels before each output pixel
  (TensorFlow's 'SAME'). Returned read-only. Options may be Python, NumPy
  or concrete JAX scalars.
  """
  size = _checks.positive_int('window_size', size)
  sigma = _checks.positive_number('sigma', sigma)
  _checks.one_of('window_center', center, WINDOW_CENTERS)
  return _gaussian_window(size, sigma, center)


@functools.lru_cache(maxsize=64)
def _gaussian_window(size: int, sigma: float, center: str) -> np.ndarray:
  middle = (size - 1) // 2 if center == 'pixel' else (size - 1) / 2
  offsets = np.arange(size, dtype=np.float64) - middle
  window = np.exp(-0.5 * (offsets / sigma)**2)
  window /= window.sum()
  window.setflags(write=False)
  return window


@functools.lru_cache(maxsize=256)
def filter_matrix(n: int, window: tuple[float, ...], padding: str) -> np.ndarray:
  """Banded `(n_out, n)` matrix applying a 1-D window along an axis of size n.

  Output sample o is sum_j window[j] * x[o - before + j], with before = 0 for
  'valid' (n_out = n - k + 1) and before = (k - 1) // 2 otherwise (n_out = n).
  Outside the signal, 'same' reads zeros (TensorFlow's 'SAME') and 'edge'
  repeats the border sample (MATLAB's imfilter 'replicate').
  """
  w = np.asarray(window, dtype=np.float64)
  k = w.shape[0]
  if padding == 'valid':
    n_out, before = n - k + 1, 0
  else:
    n_out, before = n, (k - 1) // 2
  rows = np.arange(n_out)[:, None]
  src = rows - before + np.arange(k)[None, :]          # (n_out, k)
  matrix = np.zeros((n_out, n), dtype=np.float64)
  if padding == 'edge':
    np.add.at(matrix, (np.broadcast_to(rows, src.shape), np.clip(src, 0, n - 1)),
              np.broadcast_to(w, src.shape))
  else:
    inside = (src >= 0) & (src < n)
    np.add.at(matrix, (np.broadcast_to(rows, src.shape)[inside], src[inside]),
              np.broadcast_to(w, src.shape)[inside])
  matrix.setflags(write=False)
  return matrix


def filter_row_sums(shape_hw: tuple[int, int], window: np.ndarray,
                    padding: str) -> np.ndarray:
  """The filter applied to an all-ones image, `(H_out, W_out, 1)` float64.

  1 everywhere for 'valid' and 'edge'; below 1 near the borders for 'same',
  where part of the window falls on the zero padding.
  """
  key = tuple(float(v) for v in window)
  rows = filter_matrix(shape_hw[0], key, padding).sum(axis=1)
  cols = filter_matrix(shape_hw[1], key, padding).sum(axis=1)
  return (rows[:, None] * cols[None, :])[..., None]


def separable_filter(
    images: jax.Array,
    window: np.ndarray,
    *,
    padding: Padding = 'valid',
    precision=jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """Filters `images` along H and W with the same 1-D `window`.

  Args:
    images: `[..., H, W, C]` floating array; leading dimensions are kept and
      every channel is filtered on its own.
    window: 1-D window of k taps (a static numpy array, e.g. from
      `gaussian_window`).
    padding: 'valid' (output `[..., H-k+1, W-k+1, C]`), 'same' (zeros
      outside, output `[..., H, W, C]`) or 'edge' (border samples repeated,
      output `[..., H, W, C]`).
    precision: matmul precision; the default keeps full float32 accuracy on
      GPUs and TPUs, whose default would round operands to bf16/tf32.

  Returns:
    The filtered images, same dtype as `images`.
  """
  _checks.one_of('padding', padding, PADDINGS)
  h, w = images.shape[-3], images.shape[-2]
  key = tuple(float(v) for v in np.asarray(window).ravel())
  if len(key) > min(h, w):
    raise ValueError(f'window of {len(key)} taps does not fit images of '
                     f'{h}x{w} pixels.')
  rows = jnp.asarray(filter_matrix(h, key, padding), images.dtype)
  cols = jnp.asarray(filter_matrix(w, key, padding), images.dtype)
  out = jnp.einsum('oh,...hwc->...owc', rows, images, precision=precision)
  return jnp.einsum('pw,...owc->...opc', cols, out, precision=precision)
