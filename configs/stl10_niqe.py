"""QAGAN-NIQE on STL-10 (48x48, unlabelled split resized from 96). Paper: IS 9.17, FID 19.45."""

from qagan_jax import config


def get_config():
  return config.get_config('stl10', 'niqe')
