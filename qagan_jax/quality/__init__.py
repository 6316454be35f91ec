"""Image-quality functions in pure jax.numpy: SSIM, d_Q, natural-scene statistics and NIQE.

Every function works under `jax.jit`, `jax.vmap` and `jax.grad`, and takes
its inputs on one contract:

* Images are channels-last arrays `[..., H, W, C]` (grayscale is C = 1);
  leading batch dimensions are kept in every result. A shape that looks
  channels-first (`[..., C, H, W]`, C <= 4) is refused with the
  `jnp.moveaxis(images, -3, -1)` to apply.
* Any real dtype: integers of every width keep their values (8-bit
  photographs as 0..255, int64 and uint64 too, converted to float32 on the
  host, never narrowed through int32); float16 and bfloat16 are computed
  in float32; float64 stays float64 where JAX's x64 is on. bool and complex
  are refused.
* Options (window sizes, sigmas, constants) are Python, NumPy or concrete
  JAX scalars; a traced option, or an invalid one, is refused naming it.
* `data_range` (SSIM, d_Q) is the width of the images' value range: 255
  for 8-bit images, 1 for [0, 1], 2 for [-1, 1]. It has no default.
  Outside `jax.jit` the images' values are compared with it: images that
  span more are an error, 8-bit images with a range of 1 or [0, 1] images
  with a range of 255 a warning. Under `jit` nothing is read (no cost; the
  training step's penalties run there), unless `check_range=True`, which
  makes the comparison a `jax.experimental.checkify` check. NIQE wants
  values in [0, 255] and warns once for [0, 1] images.
* NaN in, NaN out, per image: an image holding a NaN or an inf gets NaN
  results; the other images of a batch keep theirs.
"""

from qagan_jax.quality.color import rgb_to_grayscale
from qagan_jax.quality.filters import gaussian_window
from qagan_jax.quality.filters import separable_filter
from qagan_jax.quality.niqe import mvg_distance
from qagan_jax.quality.niqe import mvg_fit
from qagan_jax.quality.niqe import niqe_score
from qagan_jax.quality.niqe import PristineModel
from qagan_jax.quality.nss import aggd_fit
from qagan_jax.quality.nss import downscale_half
from qagan_jax.quality.nss import ggd_fit
from qagan_jax.quality.nss import mscn
from qagan_jax.quality.nss import niqe_features
from qagan_jax.quality.nss import shape_from_ratio
from qagan_jax.quality.ssim import QAGAN_SSIM
from qagan_jax.quality.ssim import ssim
from qagan_jax.quality.ssim import ssim_components
from qagan_jax.quality.ssim import ssim_distance

__all__ = [
    'PristineModel',
    'QAGAN_SSIM',
    'aggd_fit',
    'downscale_half',
    'gaussian_window',
    'ggd_fit',
    'mscn',
    'mvg_distance',
    'mvg_fit',
    'niqe_features',
    'niqe_score',
    'rgb_to_grayscale',
    'separable_filter',
    'shape_from_ratio',
    'ssim',
    'ssim_components',
    'ssim_distance',
]
