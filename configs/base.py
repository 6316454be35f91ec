"""Every config field, with the settings of the QAGAN authors' code.

The dataset and method files below start from `qagan_jax.config.get_config`,
which sets the paper's values on top of this base (docs/method.md, "What
the authors' released code did"): batch 64 (critic) and 128 (generator), 5
critic steps per generator step, Adam lr 2e-4 with beta1 0, beta2 0.9
decayed linearly to 0 over 100k iterations, lambda_1 = 1 (gradient
penalty), lambda_2 = 0.1 (quality penalty), drift 1e-5, generator EMA 0.99,
ResNets of width 128.
"""

from qagan_jax import config


def get_config():
  return config.base_config()
