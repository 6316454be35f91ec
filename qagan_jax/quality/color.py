"""Colour to grayscale conversions for channels-last images `(..., H, W, 3)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qagan_jax.quality import _checks

# ITU-R BT.601 luma weights, the grayscale the QAGAN penalties use.
BT601_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_grayscale(images: jax.Array) -> jax.Array:
  """ITU-R BT.601 luma of RGB images, keeping a channel axis.

  Args:
    images: `[..., H, W, 3]` RGB images, any value range (the weights sum to
      1, so [-1, 1] maps to [-1, 1] and [0, 255] to [0, 255]).

  Returns:
    `[..., H, W, 1]` grayscale images (C = 1), same dtype as `images` (integer
    input is converted to float32).
  """
  images = _checks.as_float_images('images', images)
  if images.shape[-1] != 3:
    raise ValueError('rgb_to_grayscale expects RGB images with 3 channels '
                     f'last, got shape {images.shape}.')
  weights = jnp.asarray(BT601_WEIGHTS, images.dtype)
  return jnp.tensordot(images, weights, axes=([-1], [0]),
                       precision=jax.lax.Precision.HIGHEST)[..., None]
