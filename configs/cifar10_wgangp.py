"""WGAN-GP (the baseline) on CIFAR-10 (32x32). Paper: IS 7.86, FID 40.2."""

from qagan_jax import config


def get_config():
  return config.get_config('cifar10', 'wgangp')
