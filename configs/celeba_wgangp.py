"""WGAN-GP (the baseline) on CelebA (64x64, centre crop 108 resized). Paper: FID 12.89."""

from qagan_jax import config


def get_config():
  return config.get_config('celeb_a', 'wgangp')
