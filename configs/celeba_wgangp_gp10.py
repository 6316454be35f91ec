"""WGAN-GP, the strong baseline, on CelebA (64x64, centre crop 108 resized).

As configs/celeba_wgangp.py (the paper's settings) but with the WGAN-GP of
Gulrajani et al. (2017): gradient penalty weight 10 instead of 1 and no
drift term (qagan_jax.config.GP10_FIELDS). experiments/REPRODUCE.md.
"""

from qagan_jax import config


def get_config():
  return config.get_config('celeb_a', 'wgangp', protocol='gp10')
