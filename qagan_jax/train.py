"""The sharded QAGAN train step: `make_train_step(setup, mesh) -> step(state, data)`.

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
many. One device runs the same code. What the step updates (`Setup`,
`TrainState`) is built in train_state.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import compilation
from qagan_jax import errors
from qagan_jax import input_pipeline
from qagan_jax import losses
from qagan_jax import quality
from qagan_jax import train_state

AXIS = train_state.AXIS


# --- the step -----------------------------------------------------------------------


def _sample_keys(key, n_local):
  """One key per sample of this device's slice, from its global index."""
  start = jax.lax.axis_index(AXIS) * n_local
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(start +
                                                        jnp.arange(n_local))


def _latents(keys, latent_dim):
  return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def _refreshed_pristine(setup: train_state.Setup,
                        state: train_state.TrainState, critic_params, real):
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


def critic_steps_unrolled(critic_loop: str, platform: str) -> bool:
  """Whether a step compiled for `platform` unrolls its critic steps.

  'auto' unrolls them on every platform, the loop that was measured: on
  CPUs XLA runs the convolutions of a while loop's body 6-31x slower
  (docs/speed.md), and on a GPU the only step time taken (26.7 ms on an
  H200) was unrolled. Scanning compiles an n_critic times smaller program;
  `platform` gets it by default once a measurement on it shows it at least
  as fast in wall time (experiments/accelerator_report.py, or
  experiments/benchmark_train.py --critic-loop scan, measures both).
  """
  del platform      # no platform is measured faster with the scan yet
  train_state.check_critic_loop(critic_loop)
  return critic_loop in ('auto', 'unrolled')


def train_step(setup: train_state.Setup, state: train_state.TrainState,
               real_batches, *, generator_batch: int, unroll: bool):
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

def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of `[n_critic, B, H, W, C]` real batches: split along B."""
  return NamedSharding(mesh, P(None, AXIS))


def make_train_step(setup: train_state.Setup, mesh: Mesh, *, batch_size: int,
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
      raise errors.ConfigurationError(
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
