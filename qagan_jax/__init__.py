"""qagan_jax: Quality Aware GANs (Kancharla & Channappayya, NeurIPS 2019) in JAX."""

from qagan_jax.quality import niqe_score
from qagan_jax.quality import PristineModel
from qagan_jax.quality import QAGAN_SSIM
from qagan_jax.quality import rgb_to_grayscale
from qagan_jax.quality import ssim
from qagan_jax.quality import ssim_distance

__version__ = '0.1.0'

__all__ = ['PristineModel', 'QAGAN_SSIM', 'niqe_score', 'rgb_to_grayscale',
           'ssim', 'ssim_distance', '__version__']
