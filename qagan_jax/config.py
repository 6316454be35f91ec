"""Run configurations: the paper's settings per dataset and method, and their validation.

The config files in configs/ build on `get_config(dataset, method)`; every
field can be overridden on the command line (`--config.train.batch_size=128`).
`validate` checks a config before any work starts and names the field at
fault, with the closest valid choice where there is one.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os

import ml_collections

from qagan_jax import device_data
from qagan_jax import input_pipeline
from qagan_jax import losses
from qagan_jax import models
from qagan_jax import train_state
from qagan_jax.errors import ConfigurationError
from qagan_jax.evaluation import evaluator

DATASET_RESOLUTION = {'cifar10': 32, 'stl10': 48, 'celeb_a': 64}
# The two training protocols of the configs: 'paper' is the QAGAN authors'
# code; 'gp10' is the WGAN-GP of Gulrajani et al. (2017, CIFAR-10 ResNet),
# a strong baseline, which differs from it only in these fields (the
# optimiser, its schedule, the batches and n_critic are already theirs).
PROTOCOLS = ('paper', 'gp10')
GP10_FIELDS = {
    'loss.gp_weight': 10.0,    # lambda_1 = 10 (the authors' code: 1)
    'loss.drift_weight': 0.0,  # no drift term (the authors' code: 1e-5)
}


def base_config() -> ml_collections.ConfigDict:
  """Every field, with the settings of the QAGAN authors' code."""
  config = train_state.default_config()
  config.data = input_pipeline.default_config()
  config.run = ml_collections.ConfigDict(dict(
      log_every=50,            # iterations between metric lines
      checkpoint_every=1000,   # iterations between checkpoints
      keep_checkpoints=3,      # most recent checkpoints kept
      sample_every=1000,       # iterations between sample grids
      sample_grid=64,          # fixed latents in each grid (a square; 0: none)
      standing_stats_samples=1024,  # latents for the EMA generator's BN
      eval_every=5000,         # iterations between offline evaluations
      eval_samples=1000,       # samples per evaluation during training
      progress_bar=True,       # a bar on terminals
      # elsewhere (a log file, a pipe, a notebook), or without the bar: a
      # line of step, rate, ETA and losses every this many seconds (0: none)
      progress_every=60.0,
      # JAX's persistent compilation cache, so that a resumed run, the
      # sample and evaluate modes and a second run load their programs
      # instead of compiling them: '' = the one JAX already uses
      # (JAX_COMPILATION_CACHE_DIR), else the user cache's jax/ folder;
      # 'none' = off; or a folder
      compilation_cache='',
  ))
  config.eval = ml_collections.ConfigDict(dict(
      # --mode=evaluate; fid, kid and is need the converted Inception
      # weights (qagan_jax.evaluation.inception says how to get them)
      metrics=('fid', 'is', 'kid', 'swd', 'niqe', 'diversity'),
      # every run.eval_every iterations on run.eval_samples samples (): none
      train_metrics=('swd', 'niqe', 'diversity'),
      num_samples=50_000,      # --mode=evaluate, as the paper
      reference_split='train',  # FID against training images, as the paper
      reference_samples=50_000,  # real images for the Inception statistics
      inception_weights='',    # converted weights; '' = the default path
      # reference statistics (Inception, NIQE) of the real images, shared
      # by every run of the same data: '' = the user cache ($QAGAN_JAX_CACHE,
      # else ~/.cache/qagan_jax), 'none' = computed afresh, or a path / URL
      reference_cache='',
      batch_size=200,          # Inception batch
      swd_images=8192,         # at most this many images per set for SWD
      diversity_pairs=1000,    # random sample pairs for pairwise SSIM
      prdc_k=5,                # neighbour of precision/recall/density/coverage
  ))
  return config


def get_config(dataset: str, method: str,
               protocol: str = 'paper') -> ml_collections.ConfigDict:
  """The settings for `dataset` (cifar10, stl10, celeb_a) and `method`
  (wgangp, ssim, niqe): the paper's (docs/method.md), or with
  protocol='gp10' the strong WGAN-GP baseline's (GP10_FIELDS), the quality
  penalties (lambda_2 = 0.1) on top of it."""
  config = base_config()
  config.data.dataset = dataset
  config.model.resolution = DATASET_RESOLUTION[dataset]
  if dataset == 'cifar10':
    config.data.cifar10_train_and_test = True   # as the authors' code
  config.loss.method = method
  # 100k generator iterations, as WGAN-GP's CIFAR-10 ResNet and the authors.
  config.train.num_iters = 100_000
  return with_protocol(config, protocol)


def with_protocol(config: ml_collections.ConfigDict,
                  protocol: str) -> ml_collections.ConfigDict:
  """`config` with the fields of `protocol` ('paper' changes nothing; 'gp10'
  sets GP10_FIELDS), in place; returned for chaining."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {PROTOCOLS}, got {protocol!r}')
  if protocol == 'gp10':
    for path, value in GP10_FIELDS.items():
      section, name = path.split('.')
      config[section][name] = value
  return config


def demo_config() -> ml_collections.ConfigDict:
  """QAGAN-SSIM on 32x32 patches of natural photographs, for a laptop CPU.

  Runs offline in about a minute on a 2-core CPU (58 s measured for the
  command, compilation and three evaluations included): the data are crops
  of the photographs that ship with scikit-image. Its samples go from noise
  to photograph-like colour patches; the README gives its numbers against
  patches of the photographs held out from training.

  Settings chosen by measurement for quality per second on a CPU: a
  width-16 network with a small batch and 2 critic steps per generator
  step, at a learning rate of 2e-3, makes 480 generator steps in the time 5
  critic steps at batch 32 make ~130, and ends closer to the data.
  QAGAN-SSIM rather than QAGAN-NIQE or WGAN-GP: with the same seeds and
  budget it gets closest to the data on both distances, against the strong
  WGAN-GP baseline too (experiments/compare_offline.py; docs/evaluation.md),
  while QAGAN-NIQE, whose penalty fits a Gaussian of 36 features to 16
  gradient maps a step at this scale, gets no closer to the data than
  WGAN-GP and compiles 25 s longer.
  """
  config = base_config()
  config.data.dataset = 'natural_patches'
  config.data.patch_size = 32
  config.model.resolution = 32
  config.model.width = 16            # 128 in the paper; 16 fits a laptop CPU
  config.loss.method = 'ssim'
  config.train.batch_size = 16
  config.train.generator_batch_size = 16
  config.train.n_critic = 2
  config.train.num_iters = 480
  config.train.learning_rate = 2e-3  # decays linearly to 0 over the run
  config.run.log_every = 10
  config.run.checkpoint_every = 120
  config.run.sample_every = 120
  config.run.eval_every = 240
  config.run.eval_samples = 512
  config.run.standing_stats_samples = 256
  config.run.progress_every = 10.0    # a minute's run: a line every 10 s
  # no Inception weights offline; photographs the model never saw
  config.eval.metrics = ('swd', 'niqe', 'diversity', 'prdc_niqe')
  config.eval.train_metrics = ('swd', 'niqe', 'diversity', 'prdc_niqe')
  config.eval.reference_split = 'held_out'
  # the evaluate mode on as many samples as the offline comparison: 18 s on
  # a 2-core CPU, where 50,000 take 94 s
  config.eval.num_samples = 2048
  return config


def _closest(value, choices) -> str:
  close = difflib.get_close_matches(str(value), [str(c) for c in choices],
                                    n=1)
  return f"; did you mean '{close[0]}'?" if close else ''


def _choice(errors, name, value, choices):
  if value not in choices:
    errors.append(f'{name} = {value!r} is not one of '
                  f'{", ".join(map(repr, choices))}{_closest(value, choices)}')


def _positive_int(errors, name, value, minimum=1):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    errors.append(f'{name} must be an integer, got {value!r}')
  elif value < minimum:
    errors.append(f'{name} must be >= {minimum}, got {value}')


def _number(errors, name, value, low=0.0, high=math.inf, low_open=False,
            high_open=True):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value)):
    errors.append(f'{name} must be a finite number, got {value!r}')
    return
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    errors.append(f'{name} must be in {"(" if low_open else "["}{low}, '
                  f'{high}{")" if high_open else "]"}, got {value}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigurationError (a ValueError) listing every invalid field."""
  errors = []
  model, loss, run_cfg = config.model, config.loss, config.run
  train_cfg, data = config.train, config.data
  _choice(errors, 'data.dataset', data.dataset, input_pipeline.DATASETS)
  _choice(errors, 'loss.method', loss.method, losses.METHODS)
  _choice(errors, 'loss.adversarial', loss.adversarial, losses.ADVERSARIAL)
  _choice(errors, 'loss.niqe.pristine', loss.niqe.pristine,
          train_state.PRISTINE_SOURCES)
  _choice(errors, 'model.dtype', model.dtype, tuple(train_state.DTYPES))
  _choice(errors, 'train.critic_loop', train_cfg.critic_loop,
          train_state.CRITIC_LOOPS)
  _choice(errors, 'model.resolution', model.resolution,
          tuple(models.ARCHITECTURES))
  _choice(errors, 'data.stl10_resolution', data.stl10_resolution, (48, 96))
  for name in ('width', 'latent_dim'):
    _positive_int(errors, f'model.{name}', model[name])
  for name in ('batch_size', 'generator_batch_size', 'n_critic', 'num_iters'):
    _positive_int(errors, f'train.{name}', train_cfg[name])
  for name in ('log_every', 'checkpoint_every', 'keep_checkpoints',
               'sample_every', 'standing_stats_samples', 'eval_every',
               'eval_samples'):
    _positive_int(errors, f'run.{name}', run_cfg[name])
  _positive_int(errors, 'run.sample_grid', run_cfg.sample_grid, minimum=0)
  _number(errors, 'run.progress_every', run_cfg.progress_every)
  for name in ('gp_weight', 'quality_weight', 'drift_weight'):
    _number(errors, f'loss.{name}', loss[name])
  _number(errors, 'train.learning_rate', train_cfg.learning_rate, low_open=True)
  _number(errors, 'train.b1', train_cfg.b1, high=1.0)
  _number(errors, 'train.b2', train_cfg.b2, high=1.0)
  _number(errors, 'train.adam_eps', train_cfg.adam_eps, low_open=True)
  _number(errors, 'train.ema_decay', train_cfg.ema_decay, high=1.0)
  _positive_int(errors, 'eval.prdc_k', config.eval.prdc_k)
  _positive_int(errors, 'data.worker_count', data.worker_count, minimum=-1)
  _choice(errors, 'data.placement', data.placement, device_data.PLACEMENTS)
  _number(errors, 'data.device_budget', data.device_budget, high=1.0,
          low_open=True, high_open=False)
  _positive_int(errors, 'data.read_threads', data.read_threads, minimum=0)
  problem = input_pipeline.data_dir_problem(data.data_dir)
  if problem:
    errors.append(problem)
  evaluation = config.eval
  errors += evaluator.check_metrics(evaluation.metrics, 'eval.metrics')
  errors += evaluator.check_metrics(evaluation.train_metrics,
                                    'eval.train_metrics')
  _choice(errors, 'eval.reference_split', evaluation.reference_split,
          evaluator.REFERENCE_SPLITS)
  for name in ('num_samples', 'reference_samples', 'batch_size', 'swd_images',
               'diversity_pairs'):
    _positive_int(errors, f'eval.{name}', evaluation[name])
  if not isinstance(run_cfg.get('compilation_cache', ''), str):
    errors.append("run.compilation_cache must be a folder, '' (the default "
                  f"folder) or 'none', got {run_cfg.compilation_cache!r}")
  cache = evaluation.get('reference_cache', '')
  if not isinstance(cache, str):
    errors.append("eval.reference_cache must be a path or URL, '' (the user "
                  f"cache) or 'none', got {cache!r}")
  else:
    try:
      evaluator.reference_cache_dir(evaluation)
    except ValueError as error:
      errors.append(f'eval.reference_cache={error}')
  for count_field, count, metrics_field, metrics in (
      ('eval.num_samples', evaluation.num_samples, 'eval.metrics',
       evaluation.metrics),
      ('run.eval_samples', run_cfg.eval_samples, 'eval.train_metrics',
       evaluation.train_metrics)):
    # IS has 10 splits; covariances and sample pairs need 2 samples; PRDC
    # needs more than k neighbours
    minimum = 10 if 'is' in metrics else 2
    if isinstance(evaluation.prdc_k, int) and {'prdc', 'prdc_niqe'} & set(
        metrics):
      minimum = max(minimum, evaluation.prdc_k + 1)
    if isinstance(count, int) and count < minimum:
      errors.append(f'{count_field} must be at least {minimum} for the '
                    f'metrics of {metrics_field}, got {count}')
  if isinstance(run_cfg.sample_grid, int) and run_cfg.sample_grid >= 0 and (
      math.isqrt(run_cfg.sample_grid) ** 2 != run_cfg.sample_grid):
    errors.append(f'run.sample_grid must be a square number (0: no grids), got '
                  f'{run_cfg.sample_grid}')
  if not errors:
    expected = input_pipeline.resolution(data)
    if model.resolution != expected:
      errors.append(
          f'model.resolution = {model.resolution} does not match the '
          f'{expected}x{expected} images of data.dataset = {data.dataset!r}'
          f'{"; set data.patch_size" if data.dataset == "natural_patches" else ""}')
    try:
      train_state.build(config)
    except ValueError as error:
      errors.append(str(error))
    if loss.method == 'niqe' and loss.niqe.pristine == 'file':
      path = loss.niqe.pristine_file
      if not path:
        errors.append("loss.niqe.pristine = 'file' needs "
                      'loss.niqe.pristine_file, the path of a PristineModel '
                      '.npz or a MATLAB .mat with mu_prisparam/cov_prisparam')
      elif not os.path.isfile(path):
        errors.append(f'loss.niqe.pristine_file = {path!r}: no such file')
    niqe_patch = loss.niqe.patch_size or model.resolution
    if loss.method == 'niqe' and (niqe_patch % 2 or not 14 <= niqe_patch
                                  <= model.resolution):
      errors.append('loss.niqe.patch_size must be even, at least 14 and at '
                    f'most model.resolution, got {niqe_patch}')
  if errors:
    raise ConfigurationError('invalid config:\n  ' + '\n  '.join(errors))
