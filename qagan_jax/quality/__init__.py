"""Image-quality functions in pure jax.numpy: SSIM, d_Q, natural-scene statistics and NIQE.

Images are channels-last `[..., H, W, C]` (grayscale is C = 1); leading batch
dimensions are preserved. Every function works under `jax.jit`, `jax.vmap`
and `jax.grad`.
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
from qagan_jax.quality.ssim import ssim
from qagan_jax.quality.ssim import ssim_components
from qagan_jax.quality.ssim import ssim_distance

__all__ = [
    'PristineModel',
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
