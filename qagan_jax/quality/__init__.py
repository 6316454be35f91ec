"""Image-quality functions in pure jax.numpy: SSIM, d_Q, natural-scene statistics and NIQE.

Images are channels-last `[..., H, W, C]` (grayscale is C = 1); leading batch
dimensions are preserved. Every function works under `jax.jit`, `jax.vmap`
and `jax.grad`.
"""

from qagan_jax.quality.color import rgb_to_grayscale
from qagan_jax.quality.filters import gaussian_window
from qagan_jax.quality.filters import separable_filter
from qagan_jax.quality.ssim import ssim
from qagan_jax.quality.ssim import ssim_components
from qagan_jax.quality.ssim import ssim_distance

__all__ = [
    'gaussian_window',
    'rgb_to_grayscale',
    'separable_filter',
    'ssim',
    'ssim_components',
    'ssim_distance',
]
