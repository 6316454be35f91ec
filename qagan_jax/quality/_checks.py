"""Argument checks shared by the quality functions.

Every check runs on static information (shapes, dtypes, Python numbers), so
it raises the same clear error inside `jax.jit` as outside it.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def as_float_images(name: str, images, *, min_ndim: int = 3) -> jax.Array:
  """Returns `images` as a floating jax array, checking rank and dtype.

  Integer images (e.g. uint8 photographs) are converted to float32 values
  unchanged (0..255 stays 0..255); half-precision floats are promoted to
  float32 so that local statistics do not lose precision. Booleans and
  complex numbers are rejected.
  """
  dtype = np.dtype(getattr(images, 'dtype', None) or np.asarray(images).dtype)
  if np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.complexfloating):
    raise TypeError(
        f'{name} must hold real numbers (float or integer pixel values), got '
        f'dtype {dtype}.')
  if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
          or dtype == jnp.bfloat16):
    raise TypeError(f'{name} has unsupported dtype {dtype}; pass float images.')
  images = jnp.asarray(images)
  if images.ndim < min_ndim:
    raise ValueError(
        f'{name} must have at least {min_ndim} dimensions (..., H, W, C), '
        f'channels last; got shape {images.shape}. For a single grayscale '
        f'image of shape (H, W) use image[..., None].')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  if jnp.finfo(images.dtype).bits < 32:
    return images.astype(jnp.float32)
  return images


def same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  if a.shape != b.shape:
    raise ValueError(
        f'{name_a} and {name_b} must have the same shape, got {a.shape} and '
        f'{b.shape}.')


def positive_number(name: str, value, *, allow_traced: bool = True) -> None:
  """Checks that a Python (or concrete) number is finite and > 0."""
  if isinstance(value, jax.core.Tracer):
    if allow_traced:
      return
    raise TypeError(f'{name} must be a concrete Python number, not a traced '
                    'value; mark it static under jit.')
  if not isinstance(value, (numbers.Real, np.ndarray, jax.Array)) or np.ndim(
      value) != 0:
    raise TypeError(f'{name} must be a real number, got {value!r}.')
  if not np.isfinite(float(value)) or float(value) <= 0:
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}.')


def positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f'{name} must be an integer, got {value!r}.')
  if value < 1:
    raise ValueError(f'{name} must be >= 1, got {value}.')
  return int(value)


def one_of(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'{name} must be one of {sorted(choices)}, got {value!r}.')
