"""What a config trains: the models, optimisers and loss settings (`Setup`), and the state that holds their values.

`build(config)` makes a `Setup`, everything static the train step needs;
`create_train_state` a new run's `TrainState` (parameters, optimiser
states, EMA, BatchNorm statistics, RNG, step, NIQE pristine model: one
pytree, which checkpoints save whole); `replicate` places it on every
device of a mesh, the same on every process. The step that updates it is
in train.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import compilation
from qagan_jax import losses
from qagan_jax import models
from qagan_jax import quality

# the mesh axis of data parallelism, over which the generator's BatchNorm
# statistics are averaged (train.py's step maps over it)
AXIS = 'data'
NUM_FEATURES = 36
PRISTINE_SOURCES = ('sobel', 'critic', 'file')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
CRITIC_LOOPS = ('auto', 'unrolled', 'scan')


def default_config() -> ml_collections.ConfigDict:
  """QAGAN on CIFAR-10 (32x32) with the settings of the authors' code."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = ml_collections.ConfigDict(dict(
      resolution=32,
      width=128,             # channels of every ResBlock (DIM_G = DIM_D)
      latent_dim=128,
      dtype='float32',       # compute dtype; 'bfloat16' on accelerators
      critic_down_blocks=0,  # 0: the resolution's default (models.ARCHITECTURES)
      critic_plain_blocks=-1,  # -1: the resolution's default
  ))
  config.loss = ml_collections.ConfigDict(dict(
      method='wgangp',       # 'wgangp' | 'ssim' | 'niqe'
      adversarial='wasserstein',  # or 'hinge'
      gp_weight=1.0,         # lambda_1 (QAGAN code)
      quality_weight=0.1,    # lambda_2 (QAGAN code)
      drift_weight=1e-5,     # on E[D(x)^2] (QAGAN code)
      ssim=ml_collections.ConfigDict(dict(
          window=8, sigma=1.5, padding='same', min_distance=1e-3)),
      niqe=ml_collections.ConfigDict(dict(
          patch_size=0,      # 0: the image side (one patch per map)
          map_scale=64.0,    # std of every normalised gradient map
          pristine='critic',  # 'critic' (paper) | 'sobel' (released code) | 'file'
          pristine_file='',  # a PristineModel .npz or MATLAB .mat, for 'file'
          refresh_every=10,  # 'critic': iterations between re-estimates
          refresh_momentum=0.1,  # 'critic': weight of a new estimate
          pristine_batches=20,   # 'sobel': real batches to estimate from
      )),
  ))
  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,             # critic batch (global)
      generator_batch_size=128,  # generator batch (global)
      n_critic=5,
      num_iters=100_000,         # generator iterations
      learning_rate=2e-4,
      b1=0.0,
      b2=0.9,
      adam_eps=1e-8,             # TensorFlow's default, as the authors' code
      ema_decay=0.99,            # generator EMA for sampling
      # How the step runs its n_critic critic steps (CRITIC_LOOPS): 'auto'
      # is the loop measured on the platform, so far unrolled everywhere
      # (train.critic_steps_unrolled).
      critic_loop='auto',
  ))
  return config


# --- construction -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static that the step needs, built from a config (`build`)."""
  generator: models.Generator
  critic: models.Critic
  generator_tx: optax.GradientTransformation
  critic_tx: optax.GradientTransformation
  loss: losses.LossConfig
  latent_dim: int
  n_critic: int
  critic_loop: str              # one of CRITIC_LOOPS
  ema_decay: float
  pristine_source: str | None
  refresh_every: int
  refresh_momentum: float

  @functools.cached_property
  def init_parameters(self):
    """`(gen_rng, critic_rng) -> (generator variables, critic params)`,
    compiled once for this setup: one quick compilation instead of
    hundreds of op-by-op ones (~10 s on a CPU)."""
    return compilation.jit(functools.partial(_init_parameters, self),
                           quick=True)


def check_critic_loop(critic_loop) -> None:
  """Raises ValueError unless `critic_loop` is one of CRITIC_LOOPS."""
  if critic_loop not in CRITIC_LOOPS:
    raise ValueError(f'train.critic_loop must be one of {CRITIC_LOOPS}, got '
                     f'{critic_loop!r}.')


def images_per_iteration(train_config) -> int:
  """Images one training iteration reads: a real batch per critic step,
  and the generator's batch of fakes."""
  return (train_config.batch_size * train_config.n_critic
          + train_config.generator_batch_size)


def learning_rate_schedules(train_config):
  """Linear decay to 0 over the run, by generator iteration, for both nets.

  The critic's optimiser steps n_critic times per iteration, so its count
  is divided by n_critic: all critic steps of an iteration share its rate,
  as in the authors' code.
  """
  lr, total = train_config.learning_rate, train_config.num_iters
  n_critic = train_config.n_critic

  def generator(count):
    return lr * jnp.maximum(0.0, 1.0 - count / total)

  def critic(count):
    return lr * jnp.maximum(0.0, 1.0 - (count // n_critic) / total)

  return generator, critic


def build(config: ml_collections.ConfigDict) -> Setup:
  """Models, optimisers and loss settings from a config: new objects at
  every call (the programs compiled from them belong to their caller, e.g.
  a `run.Run`)."""
  model_cfg, loss_cfg, train_cfg = config.model, config.loss, config.train
  check_critic_loop(train_cfg.critic_loop)
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(DTYPES)}, got '
                     f'{model_cfg.dtype!r}.')
  arch = models.architecture(
      model_cfg.resolution,
      critic_down_blocks=model_cfg.critic_down_blocks or None,
      critic_plain_blocks=(None if model_cfg.critic_plain_blocks < 0
                           else model_cfg.critic_plain_blocks))
  dtype = DTYPES[model_cfg.dtype]
  generator = models.Generator(resolution=model_cfg.resolution,
                               width=model_cfg.width, arch=arch,
                               axis_name=AXIS, dtype=dtype)
  critic = models.Critic(resolution=model_cfg.resolution,
                         width=model_cfg.width, arch=arch, dtype=dtype)
  gen_schedule, critic_schedule = learning_rate_schedules(train_cfg)
  adam = functools.partial(optax.adam, b1=train_cfg.b1, b2=train_cfg.b2,
                           eps=train_cfg.adam_eps)
  niqe_cfg = loss_cfg.niqe
  loss = losses.LossConfig(
      method=loss_cfg.method, adversarial=loss_cfg.adversarial,
      gp_weight=loss_cfg.gp_weight, quality_weight=loss_cfg.quality_weight,
      drift_weight=loss_cfg.drift_weight, ssim_window=loss_cfg.ssim.window,
      ssim_sigma=loss_cfg.ssim.sigma, ssim_padding=loss_cfg.ssim.padding,
      ssim_min_distance=loss_cfg.ssim.min_distance,
      niqe_patch_size=niqe_cfg.patch_size or model_cfg.resolution,
      niqe_map_scale=niqe_cfg.map_scale)
  source = None
  if loss.method == 'niqe':
    source = niqe_cfg.pristine
    if source not in PRISTINE_SOURCES:
      raise ValueError(f'loss.niqe.pristine must be one of {PRISTINE_SOURCES},'
                       f' got {source!r}.')
  return Setup(
      generator=generator, critic=critic,
      generator_tx=adam(gen_schedule), critic_tx=adam(critic_schedule),
      loss=loss, latent_dim=model_cfg.latent_dim, n_critic=train_cfg.n_critic,
      critic_loop=train_cfg.critic_loop,
      ema_decay=train_cfg.ema_decay, pristine_source=source,
      refresh_every=niqe_cfg.refresh_every,
      refresh_momentum=niqe_cfg.refresh_momentum)


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue, as one pytree (orbax can save it)."""
  step: jax.Array               # generator iterations done, int32
  rng: jax.Array                # PRNG key data, uint32[2]
  gen_params: Any
  gen_batch_stats: Any
  gen_ema_params: Any           # EMA of gen_params, for sampling
  critic_params: Any
  gen_opt_state: Any
  critic_opt_state: Any
  pristine: losses.Pristine     # NIQE pristine model (zeros if unused)
  pristine_count: jax.Array     # 'critic' source: estimates averaged so far


def _init_parameters(setup: Setup, gen_rng, critic_rng):
  """Fresh generator variables and critic parameters."""
  resolution = setup.generator.resolution
  gen_vars = setup.generator.clone(axis_name=None).init(
      gen_rng, jnp.zeros((2, setup.latent_dim)), train=False)
  critic_params = setup.critic.init(
      critic_rng, jnp.zeros((2, resolution, resolution, 3)))['params']
  return gen_vars, critic_params


def create_train_state(setup: Setup, rng: jax.Array,
                       pristine: quality.PristineModel | None = None
                       ) -> TrainState:
  """Initial state: fresh parameters, optimiser states and step 0."""
  gen_rng, critic_rng, state_rng = jax.random.split(rng, 3)
  if isinstance(gen_rng, jax.core.Tracer):
    # under a trace (eval_shape, jit) the caller's compilation does it
    init = functools.partial(_init_parameters, setup)
  else:
    init = setup.init_parameters
  gen_vars, critic_params = init(gen_rng, critic_rng)
  gen_params = gen_vars['params']
  if pristine is None:
    mean, cov = np.zeros(NUM_FEATURES), np.zeros((NUM_FEATURES,) * 2)
  else:
    mean, cov = pristine.mean, pristine.cov
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=state_rng,
      gen_params=gen_params,
      gen_batch_stats=gen_vars['batch_stats'],
      gen_ema_params=jax.tree_util.tree_map(jnp.copy, gen_params),
      critic_params=critic_params,
      gen_opt_state=setup.generator_tx.init(gen_params),
      critic_opt_state=setup.critic_tx.init(critic_params),
      pristine=losses.Pristine(jnp.asarray(mean, jnp.float32),
                               jnp.asarray(cov, jnp.float32)),
      pristine_count=jnp.asarray(0 if pristine is None else 1, jnp.int32),
  )


def abstract_state(setup: Setup, mesh: Mesh, seed: int = 0) -> TrainState:
  """The structure, shapes and dtypes of `create_train_state`'s state,
  replicated over `mesh`, computed without computing it (what a checkpoint
  restore needs)."""
  replicated = NamedSharding(mesh, P())
  shapes = jax.eval_shape(lambda: create_train_state(
      setup, jax.random.PRNGKey(seed)))
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      shapes)


def initial_pristine(config: ml_collections.ConfigDict, setup: Setup,
                     real_batches=None) -> quality.PristineModel | None:
  """The pristine model a run starts from, for the NIQE penalty.

  'file': the PristineModel at `config.loss.niqe.pristine_file` (.npz or
  MATLAB .mat). 'sobel': fitted once to the Sobel gradient magnitudes of
  `config.loss.niqe.pristine_batches` batches from `real_batches` (an
  iterator of `[B, H, W, 3]` arrays in [-1, 1]), normalised as the critic's
  gradient maps, as the authors' released code did. 'critic': None, the
  train step estimates it from the critic's gradient maps of real images
  (as the paper describes). None for the other methods.
  """
  if setup.pristine_source == 'file':
    path = config.loss.niqe.pristine_file
    if not path:
      raise ValueError("loss.niqe.pristine='file' needs "
                       'loss.niqe.pristine_file, the path of a PristineModel '
                       '.npz or a MATLAB .mat with mu_prisparam/cov_prisparam.')
    return quality.PristineModel.load(path)
  if setup.pristine_source != 'sobel':
    return None
  if real_batches is None:
    raise ValueError("loss.niqe.pristine='sobel' needs real batches to fit.")
  features_of = jax.jit(lambda x: losses.map_features(
      losses.sobel_maps(x, setup.loss.niqe_map_scale),
      setup.loss.niqe_patch_size))
  found = [features_of(jnp.asarray(batch)) for _, batch in zip(
      range(config.loss.niqe.pristine_batches), real_batches)]
  features = np.concatenate([np.asarray(f.features) for f in found])
  valid = np.concatenate([np.asarray(f.valid) for f in found])
  return quality.PristineModel.fit_features(features, valid)


def host_value(tree):
  """Host copies of (replicated) arrays, in one process or many: a
  replicated array of a multi-process mesh is read from a local copy."""
  return jax.device_get(jax.tree_util.tree_map(
      lambda x: (x.addressable_data(0) if isinstance(x, jax.Array)
                 and not x.is_fully_addressable else x), tree))


def replicate(tree, mesh):
  """`tree`'s arrays replicated over `mesh`, process 0's on every process.

  Each process computes its initial state itself; in a multi-process run
  the state is then taken from process 0 (one broadcast at the start), so
  that every replica is bitwise the same whatever each host's CPU rounded
  (the step treats the state as replicated and never compares replicas).
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() > 1:
    tree = multihost_utils.broadcast_one_to_all(tree)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_callback(
          np.shape(x), sharding, lambda index, x=np.asarray(x): x[index]),
      tree)
