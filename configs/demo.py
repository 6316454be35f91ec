"""The offline demo: QAGAN-SSIM on 32x32 patches of natural photographs, on a laptop CPU.

See `qagan_jax.config.demo_config` for what it shows and why SSIM. The same
config is what experiments/colab_tpu.ipynb starts from.
"""

from qagan_jax import config


def get_config():
  return config.demo_config()
