"""QAGAN-NIQE on CIFAR-10 (32x32). Paper: IS 7.87, FID 12.47."""

from qagan_jax import config


def get_config():
  return config.get_config('cifar10', 'niqe')
