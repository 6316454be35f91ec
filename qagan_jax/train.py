"""Train state and the sharded QAGAN train step.

One call of the step is one generator iteration: n_critic critic updates,
each with its own real batch and fresh noise, then one generator update, all
in one compiled program (a `lax.scan` over the critic batches), so the host
dispatches once per iteration.

Data parallelism: the step is written per device, with collectives over the
mesh axis 'data' (pmap's programming model) and mapped with `jax.shard_map`,
which is what `jax.pmap` itself compiles to since JAX 0.8. Gradients are
averaged with `lax.pmean`, the generator's BatchNorm statistics are averaged
across devices, and every sample's noise comes from `fold_in(key, global
sample index)`, so a global batch gives the same new state on one device or
many. One device runs the same code.
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
from qagan_jax import input_pipeline
from qagan_jax import losses
from qagan_jax import models
from qagan_jax import quality

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
      # unrolls them on CPUs and scans them elsewhere (critic_steps_unrolled).
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
  _check_critic_loop(train_cfg.critic_loop)
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


# --- the step -----------------------------------------------------------------------


def _sample_keys(key, n_local):
  """One key per sample of this device's slice, from its global index."""
  start = jax.lax.axis_index(AXIS) * n_local
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(start +
                                                        jnp.arange(n_local))


def _latents(keys, latent_dim):
  return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def _refreshed_pristine(setup: Setup, state: TrainState, critic_params, real):
  """The 'critic' source: running average of the MVG of real gradient maps."""
  critic_fn = lambda p, x: setup.critic.apply({'params': p}, x)

  def estimate(_):
    _, grads = losses.input_gradients(critic_fn, critic_params, real)
    found = losses.map_features(
        losses.gradient_maps(grads.astype(jnp.float32),
                             setup.loss.niqe_map_scale),
        setup.loss.niqe_patch_size, AXIS)
    mean, cov = quality.mvg_fit(found.features, found.valid)
    weight = jnp.where(state.pristine_count == 0, 1.0, setup.refresh_momentum)
    blend = lambda old, new: (1 - weight) * old + weight * new
    return (losses.Pristine(blend(state.pristine.mean, mean),
                            blend(state.pristine.cov, cov)),
            state.pristine_count + 1)

  refresh = state.step % setup.refresh_every == 0
  return jax.lax.cond(refresh, estimate,
                      lambda _: (state.pristine, state.pristine_count), None)


def _check_critic_loop(critic_loop) -> None:
  if critic_loop not in CRITIC_LOOPS:
    raise ValueError(f'train.critic_loop must be one of {CRITIC_LOOPS}, got '
                     f'{critic_loop!r}.')


def critic_steps_unrolled(critic_loop: str, platform: str) -> bool:
  """Whether a step compiled for `platform` unrolls its critic steps.

  'auto' unrolls them on CPUs only: XLA:CPU runs the convolutions of a while
  loop's body 6-31x slower (measured, docs/speed.md); on GPUs and TPUs the
  unrolled loop is an n_critic times larger program to compile (copies of
  the critic's double backward pass and penalty) for the same work, so they
  scan (which runs faster there, experiments/accelerator_report.py
  measures).
  """
  _check_critic_loop(critic_loop)
  if critic_loop == 'auto':
    return platform == 'cpu'
  return critic_loop == 'unrolled'


def train_step(setup: Setup, state: TrainState, real_batches, *,
               generator_batch: int, unroll: bool):
  """One generator iteration on this device's slice of the batches.

  Args:
    setup: static settings.
    state: the replicated train state.
    real_batches: `[n_critic, B_local, H, W, 3]` real images in [-1, 1].
    generator_batch: this device's generator batch size.
    unroll: run the critic steps as a Python loop rather than a `lax.scan`
      (`critic_steps_unrolled`).

  Returns:
    (new state, metrics averaged over critic steps and devices).
  """
  n_local = real_batches.shape[1]
  key = jax.random.fold_in(state.rng, state.step)
  critic_key, gen_key = jax.random.split(key)
  critic_fn = lambda p, x: setup.critic.apply({'params': p}, x)
  gen_vars = {'params': state.gen_params, 'batch_stats': state.gen_batch_stats}

  pristine, pristine_count = state.pristine, state.pristine_count
  if setup.pristine_source == 'critic':
    pristine, pristine_count = _refreshed_pristine(
        setup, state, state.critic_params, real_batches[0])

  def critic_update(carry, inputs):
    params, opt_state = carry
    real, step_key = inputs
    keys = _sample_keys(step_key, n_local)
    z = _latents(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys),
                 setup.latent_dim)
    # Batch statistics of this batch; the running averages are updated by
    # the generator step only.
    fake, _ = setup.generator.apply(gen_vars, z, train=True,
                                    mutable=['batch_stats'])
    fake = jax.lax.stop_gradient(fake)
    eps_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    (_, metrics), grads = jax.value_and_grad(losses.critic_loss, argnums=1,
                                             has_aux=True)(
        critic_fn, params, real, fake, eps_keys, setup.loss, pristine, AXIS)
    grads = jax.lax.pmean(grads, AXIS)
    metrics['critic_grad_norm'] = optax.tree_utils.tree_norm(grads)
    updates, opt_state = setup.critic_tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), metrics

  carry = (state.critic_params, state.critic_opt_state)
  step_keys = jax.random.split(critic_key, setup.n_critic)
  if unroll:
    # A Python loop, not scan(unroll=True): that still leaves a one-trip
    # while loop when n_critic is 1, whose convolutions XLA:CPU runs slowly.
    per_step = []
    for i in range(setup.n_critic):
      carry, step_metrics = critic_update(carry, (real_batches[i],
                                                  step_keys[i]))
      per_step.append(step_metrics)
    critic_metrics = jax.tree_util.tree_map(lambda *v: jnp.stack(v),
                                            *per_step)
  else:
    carry, critic_metrics = jax.lax.scan(critic_update, carry,
                                         (real_batches, step_keys))
  critic_params, critic_opt_state = carry

  def generator_objective(gen_params, z):
    fake, new_vars = setup.generator.apply(
        {'params': gen_params, 'batch_stats': state.gen_batch_stats}, z,
        train=True, mutable=['batch_stats'])
    return (losses.generator_loss(critic_fn(critic_params, fake)),
            new_vars['batch_stats'])

  z = _latents(_sample_keys(gen_key, generator_batch), setup.latent_dim)
  (gen_loss, gen_batch_stats), gen_grads = jax.value_and_grad(
      generator_objective, has_aux=True)(state.gen_params, z)
  gen_grads = jax.lax.pmean(gen_grads, AXIS)
  updates, gen_opt_state = setup.generator_tx.update(
      gen_grads, state.gen_opt_state, state.gen_params)
  gen_params = optax.apply_updates(state.gen_params, updates)
  gen_ema_params = optax.incremental_update(
      gen_params, state.gen_ema_params, step_size=1 - setup.ema_decay)

  largest_norm = jnp.max(critic_metrics.pop('input_grad_norm_max'))
  metrics = {name: jnp.mean(values) for name, values in critic_metrics.items()}
  metrics['generator_loss'] = gen_loss
  metrics['generator_grad_norm'] = optax.tree_utils.tree_norm(gen_grads)
  metrics = jax.lax.pmean(metrics, AXIS)
  metrics['input_grad_norm_max'] = jax.lax.pmax(largest_norm, AXIS)
  new_state = state.replace(
      step=state.step + 1,
      gen_params=gen_params,
      gen_batch_stats=gen_batch_stats,
      gen_ema_params=gen_ema_params,
      critic_params=critic_params,
      gen_opt_state=gen_opt_state,
      critic_opt_state=critic_opt_state,
      pristine=pristine,
      pristine_count=pristine_count,
  )
  return new_state, metrics


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


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of `[n_critic, B, H, W, C]` real batches: split along B."""
  return NamedSharding(mesh, P(None, AXIS))


def make_train_step(setup: Setup, mesh: Mesh, *, batch_size: int,
                    generator_batch_size: int, draw=None,
                    compiler_options: dict | None = None):
  """The jitted, sharded step `(state, data) -> (state, metrics)`.

  Args:
    setup: from `build`.
    mesh: a 1-D mesh with axis 'data' (`make_mesh`).
    batch_size: global critic batch size, divisible by the device count.
    generator_batch_size: global generator batch size, likewise.
    draw: None, and `data` is the step's real batches `[n_critic,
      batch_size, H, W, 3]` split along the batch axis (`batch_sharding`),
      float in [-1, 1] or uint8 in [0, 255] (converted on the devices, as
      `input_pipeline.to_unit_range` converts them on the host);
      or a per-device `(data, rng, step) -> [n_critic, batch_size / devices,
      H, W, 3]` that draws them from `data`, a dataset resident on the
      devices and split along its first axis (`device_data.draw` with its
      spec bound).

  The critic steps are unrolled or scanned as `critic_steps_unrolled` says
  for `setup.critic_loop` and the mesh's platform. The state is
  replicated, and its buffers are donated. Compiled with
  `compiler_options`, by default `compilation.compiler_options` for the
  mesh's platform (on CPUs: XLA's own convolutions, not YNNPACK's, whose
  kernel gradients are ~10x slower). A new jitted function at every call:
  its caller keeps it (JAX's persistent compilation cache, when on, spares
  a second process the compilation).
  """
  devices = mesh.devices.size
  for name, size in (('batch_size', batch_size),
                     ('generator_batch_size', generator_batch_size)):
    if size % devices:
      raise ValueError(
          f'train.{name} = {size} is not divisible by the {devices} devices '
          f'of the mesh; use a multiple of {devices}.')
  platform = mesh.devices.flat[0].platform
  if compiler_options is None:
    compiler_options = compilation.compiler_options(platform)
  unroll = critic_steps_unrolled(setup.critic_loop, platform)

  def per_device(state, data):
    real = data if draw is None else draw(data, state.rng, state.step)
    if real.dtype == jnp.uint8:     # host batches travel as bytes
      real = input_pipeline.unit_range_on_device(real)
    return train_step(setup, state, real, unroll=unroll,
                      generator_batch=generator_batch_size // devices)

  data_spec = P(None, AXIS) if draw is None else P(AXIS)
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), data_spec),
                         out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped, donate_argnums=0,
                 compiler_options=compiler_options or None)
