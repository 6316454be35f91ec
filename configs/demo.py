"""The offline demo: QAGAN-SSIM on 32x32 patches of natural photographs, on a laptop CPU.

Runs in under 5 minutes on a 2-core CPU (compilation included), peak memory
about 1.5 GB, with no network: the data are crops of the photographs that
ship with scikit-image. The sample grids in runs/demo/samples/ go from noise
to photograph-like colour patches, and the logged statistic
eval/niqe_distance_to_held_out (NIQE-feature distance between 512 samples
and 512 patches of photographs held out from training) falls from 7.1 to
about 3.6.

Why QAGAN-SSIM: at this scale it learns faster than QAGAN-NIQE in the same
time (the statistic reached 3.6 against 4.8 after 300 iterations), its
penalty costs next to nothing and compiles quickly, while the NIQE penalty
fits its test MVG to only 32 one-patch gradient maps per step, fewer than
its 36 features, and compiles 25 s longer.
"""

from qagan_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = 'natural_patches'
  config.data.patch_size = 32
  config.model.resolution = 32
  config.model.width = 16            # 128 in the paper; 16 fits a laptop CPU
  config.loss.method = 'ssim'
  config.train.batch_size = 32
  config.train.generator_batch_size = 32
  config.train.n_critic = 5
  config.train.num_iters = 300
  config.train.learning_rate = 1e-3  # decays linearly to 0 over the run
  config.run.log_every = 20
  config.run.checkpoint_every = 100
  config.run.sample_every = 100
  config.run.eval_every = 100
  config.run.eval_samples = 512
  config.run.standing_stats_samples = 256
  return config
