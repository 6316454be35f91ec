"""QAGAN-SSIM on CIFAR-10 (32x32). Paper: IS 8.37, FID 13.91."""

from qagan_jax import config


def get_config():
  return config.get_config('cifar10', 'ssim')
