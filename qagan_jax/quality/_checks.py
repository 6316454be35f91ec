"""The input contract of `qagan_jax.quality`, in one place (the package docstring states it).

Images: real arrays `[..., H, W, C]` of any float or integer dtype. Integers
of every width reach float32 with their values (converted on the host or
from a device dtype, never narrowed through int32); half precision and
bfloat16 are computed in float32; bool and complex are refused; a shape
that looks channels-first is refused with the transpose to apply.

Options: Python, NumPy or concrete JAX scalars, turned into Python numbers
here (so that they can be static arguments of `jax.jit` and keys of
caches); every error names the option.

Values: outside `jax.jit`, `check_value_range` compares the images with
`data_range`; under `jit` it is skipped (no cost), or made a
`checkify` check on request.
"""

from __future__ import annotations

import math
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# Channel counts of images as they come (grayscale, RGB, RGBA): a shape
# whose third-last axis is one of these and whose last is larger is taken
# for channels-first.
_CHANNEL_COUNTS = (1, 2, 3, 4)
# How far values may pass data_range before it is called wrong: rounding
# of the images' own float32 values, relative to the range.
_RANGE_SLACK = 1e-5


def is_traced(value) -> bool:
  """Whether `value` is abstract (under jit, grad, vmap): no values to read."""
  return isinstance(value, jax.core.Tracer)


def _dtype(images) -> np.dtype:
  return np.dtype(getattr(images, 'dtype', None) or np.asarray(images).dtype)


def is_integer_input(images) -> bool:
  """Whether images come as integers (before `as_float_images`)."""
  return np.issubdtype(_dtype(images), np.integer)


def as_float_images(name: str, images, *, min_ndim: int = 3) -> jax.Array:
  """`images` as a float jax array `[..., H, W, C]`, checking dtype and rank.

  Integers (uint8 photographs, int64 labels of a segmentation...) keep
  their values: host arrays and Python sequences are converted to float32
  by NumPy before they reach JAX (whose int64 would be int32 without x64),
  device arrays by `astype`. float16 and bfloat16 become float32, so that
  local statistics do not lose precision. Booleans and complex numbers are
  refused.
  """
  dtype = _dtype(images)
  if np.issubdtype(dtype, np.bool_) or np.issubdtype(dtype, np.complexfloating):
    raise TypeError(
        f'{name} must hold real numbers (float or integer pixel values), got '
        f'dtype {dtype}.')
  if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
          or dtype == jnp.bfloat16):
    raise TypeError(f'{name} has unsupported dtype {dtype}; pass float or '
                    'integer images.')
  if not isinstance(images, jax.Array):
    host = np.asarray(images)
    if np.issubdtype(host.dtype, np.integer):
      host = host.astype(np.float32)     # exact to float32, on the host
    images = jnp.asarray(host)
  if images.ndim < min_ndim:
    raise ValueError(
        f'{name} must have at least {min_ndim} dimensions [..., H, W, C], '
        f'channels last; got shape {images.shape}. For a single grayscale '
        f'image of shape (H, W) use image[..., None].')
  if images.shape[-3] in _CHANNEL_COUNTS and (
      images.shape[-1] not in _CHANNEL_COUNTS):
    raise ValueError(
        f'{name} of shape {images.shape} looks channels-first [..., C, H, W]; '
        'qagan_jax.quality takes channels last [..., H, W, C]: pass '
        f'jnp.moveaxis({name}, -3, -1). (Grayscale images without a channel '
        f'axis, [..., H, W], take {name}[..., None].)')
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


def python_number(name: str, value, *, integer: bool = False):
  """`value`, a Python, NumPy or concrete JAX scalar, as a Python int or
  float. A traced value (under jit) is refused, naming the option: options
  decide the program, so they must be known when it is traced."""
  if is_traced(value):
    raise TypeError(
        f'{name} must be a concrete number, not a traced value: options '
        'decide the compiled program; pass a Python number (under jit, as a '
        'static argument).')
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f'{name} must be a number, got {value!r}.')
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if np.ndim(value) != 0:
      raise TypeError(f'{name} must be a scalar, got an array of shape '
                      f'{np.shape(value)}.')
    value = np.asarray(value).item()
  if integer:
    if isinstance(value, float) and value.is_integer():
      raise TypeError(f'{name} must be an integer, got {value!r}; pass '
                      f'{int(value)}.')
    if not isinstance(value, numbers.Integral):
      raise TypeError(f'{name} must be an integer, got {value!r}.')
    return int(value)
  if not isinstance(value, numbers.Real):
    raise TypeError(f'{name} must be a real number, got {value!r}.')
  return float(value)


def positive_number(name: str, value) -> float:
  """`value` (see `python_number`) as a finite Python float > 0."""
  value = python_number(name, value)
  if not math.isfinite(value) or value <= 0:
    raise ValueError(f'{name} must be a finite number > 0, got {value!r}.')
  return value


def positive_int(name: str, value) -> int:
  """`value` (see `python_number`) as a Python int >= 1."""
  value = python_number(name, value, integer=True)
  if value < 1:
    raise ValueError(f'{name} must be >= 1, got {value}.')
  return value


def data_range(value):
  """`data_range` as a Python float > 0, or as it is when traced (it may
  vary under jit: it is an argument of the program, not an option)."""
  if is_traced(value):
    return value
  return positive_number('data_range', value)


def one_of(name: str, value, choices) -> None:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f'{name} must be one of {sorted(choices)}, got {value!r}.')


def _finite_extremes(images) -> tuple[float, float] | None:
  """(min, max) of the finite values of concrete images, or None."""
  values = np.asarray(images)
  finite = np.isfinite(values)
  if not finite.any():
    return None
  return (float(np.min(values, where=finite, initial=np.inf)),
          float(np.max(values, where=finite, initial=-np.inf)))


def check_value_range(images, value_range, *, integer_input: bool,
                      function: str) -> None:
  """Compares concrete images with the `data_range` they are measured at.

  Raises ValueError when their values span more than `value_range` (beyond
  float32 rounding): every score would come out wrong (C1 and C2 scale with
  the range). Warns when they fit, but suspiciously: 8-bit images given as
  integers in [0, 1] with a range of about 1 (a binary image, or [0, 255]
  images scaled by mistake), or float images in [0, 1] with a range of
  about 255.

  Args:
    images: the images of both arguments, concrete (a sequence of arrays).
    value_range: the `data_range` option, a Python float.
    integer_input: whether the images came as integers.
    function: the public function's name, for the messages.
  """
  extremes = [e for e in map(_finite_extremes, images) if e is not None]
  if not extremes:
    return
  low = min(e[0] for e in extremes)
  high = max(e[1] for e in extremes)
  spread = high - low
  if spread > value_range * (1 + _RANGE_SLACK):
    hint = ('255 for 8-bit images, 1 for [0, 1], 2 for [-1, 1]'
            if integer_input or high > 2 else '1 for [0, 1], 2 for [-1, 1]')
    raise ValueError(
        f'{function}: the images span [{low:.6g}, {high:.6g}], a range of '
        f'{spread:.6g}, but data_range={value_range:g}. data_range is the '
        f'width of the range the values can take ({hint}); pass the one of '
        'your images, or rescale them. (Under jax.jit values are not read; '
        'check_range=True makes this a checkify check there.)')
  if integer_input and value_range < 2 and high <= 1 and low >= 0:
    warnings.warn(
        f'{function}: integer images with values in [0, 1] and '
        f'data_range={value_range:g}; if they are 8-bit images, pass '
        'data_range=255.', UserWarning, stacklevel=4)
  elif (not integer_input and value_range > 100 and low >= 0 and high <= 1):
    warnings.warn(
        f'{function}: float images with values in [0, 1] and '
        f'data_range={value_range:g}; images in [0, 1] take data_range=1 '
        '(255 is for values in [0, 255]).', UserWarning, stacklevel=4)


def check_value_range_traced(images, value_range, function: str) -> None:
  """The error of `check_value_range` as a `checkify` check, for traced
  images: effective when the caller wraps the function in
  `jax.experimental.checkify.checkify`."""
  low = jnp.min(jnp.stack([jnp.min(jnp.where(jnp.isfinite(x), x, jnp.inf))
                           for x in images]))
  high = jnp.max(jnp.stack([jnp.max(jnp.where(jnp.isfinite(x), x, -jnp.inf))
                            for x in images]))
  checkify.check(
      (high - low <= value_range * (1 + _RANGE_SLACK)) | (high < low),
      f'{function}: the images span [{{low}}, {{high}}] but data_range='
      '{value_range}; pass the width of their range.',
      low=low, high=high, value_range=jnp.asarray(value_range, low.dtype))
