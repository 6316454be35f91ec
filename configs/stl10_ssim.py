"""QAGAN-SSIM on STL-10 (48x48, unlabelled split resized from 96). Paper: IS 9.29, FID 19.77."""

from qagan_jax import config


def get_config():
  return config.get_config('stl10', 'ssim')
