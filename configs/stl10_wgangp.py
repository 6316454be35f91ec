"""WGAN-GP (the baseline) on STL-10 (48x48, unlabelled split resized from 96). Paper: IS 9.05, FID 55.1."""

from qagan_jax import config


def get_config():
  return config.get_config('stl10', 'wgangp')
