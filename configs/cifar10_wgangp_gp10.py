"""WGAN-GP, the strong baseline, on CIFAR-10 (32x32).

As configs/cifar10_wgangp.py (the paper's settings) but with the WGAN-GP of
Gulrajani et al. (2017): gradient penalty weight 10 instead of 1 and no
drift term (qagan_jax.config.GP10_FIELDS). experiments/REPRODUCE.md.
"""

from qagan_jax import config


def get_config():
  return config.get_config('cifar10', 'wgangp', protocol='gp10')
