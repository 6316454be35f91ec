"""Runs the same train steps, and the same in-step batch draws, on 1 and on 4 devices; saves both.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python sharded_step.py OUT.npz

Used by tests/test_train.py and tests/test_device_data.py through the
`four_devices` fixture (tests/conftest.py), in a subprocess: the device count
is fixed when jax starts, so it cannot be changed inside the test process.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import device_data
from qagan_jax import losses
from qagan_jax import quality
from qagan_jax import train
from qagan_jax import train_state

STEPS = 2


def config():
  cfg = train_state.default_config()
  cfg.model.width = 8
  cfg.loss.method = 'niqe'
  cfg.loss.niqe.pristine = 'critic'
  cfg.loss.niqe.refresh_every = 1      # estimate, then blend, the pristine
  cfg.train.n_critic = 1
  # 40 > 36 patches per step keep the NIQE covariances full rank.
  cfg.train.batch_size = 40
  cfg.train.generator_batch_size = 40
  cfg.train.num_iters = 10
  # With Adam's default eps, the first update is ~lr * sign(g): parameters
  # whose exact gradient is 0 (conv biases before BatchNorm) move by +-lr
  # depending on float rounding. A larger eps keeps rounding-level gradient
  # differences at rounding level, so the states can be compared.
  cfg.train.adam_eps = 1e-3
  return cfg


def run(devices, batches):
  cfg = config()
  setup = train_state.build(cfg)
  mesh = train.make_mesh(devices)
  state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
  state = jax.device_put(state, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  step = train.make_train_step(setup, mesh, batch_size=40,
                               generator_batch_size=40)
  states, metrics = [], []
  for batch in batches:
    state, m = step(state, jax.device_put(batch, train.batch_sharding(mesh)))
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return setup, states, metrics


DRAW_RECORDS = 62     # not a multiple of 4: the last device holds padding
DRAW_STEPS = 8


def draws(devices, records):
  """The batches `device_data.draw` serves, steps 0..DRAW_STEPS-1, as the
  global `[steps, n_critic, batch, H, W, 3]` float32 array."""
  mesh = train.make_mesh(devices)
  spec = device_data.DrawSpec.for_mesh(len(records), mesh, n_critic=2,
                                       batch_size=8, flip=True)
  held = np.zeros((mesh.devices.size * spec.per_device,) + records.shape[1:],
                  np.uint8)
  held[:len(records)] = records
  resident = jax.device_put(held, NamedSharding(mesh, P(train.AXIS)))
  rng = jax.random.PRNGKey(7)
  step_draw = jax.jit(jax.shard_map(
      lambda x, s: device_data.draw(x, rng, s, spec), mesh=mesh,
      in_specs=(P(train.AXIS), P()), out_specs=P(None, train.AXIS),
      check_vma=False))
  batches = [np.asarray(step_draw(resident, jnp.int32(s)))
             for s in range(DRAW_STEPS)]
  indices, flips = zip(*[map(np.asarray, device_data.batch_indices(
      rng, jnp.int32(s), spec)) for s in range(DRAW_STEPS)])
  return np.stack(batches), np.stack(indices), np.stack(flips)


def main(out):
  assert jax.device_count() == 4, jax.devices()
  rng = np.random.default_rng(0)
  batches = [rng.uniform(-1, 1, (1, 40, 32, 32, 3)).astype(np.float32)
             for _ in range(STEPS)]
  setup, single, single_metrics = run(jax.devices()[:1], batches)
  _, sharded, sharded_metrics = run(jax.devices(), batches)
  # The pristine estimate the refresh at step 1 should have blended in:
  # the MVG of the real gradient maps under the critic after step 0.
  critic_fn = lambda p, x: setup.critic.apply({'params': p}, x)

  @jax.jit   # one compilation, not hundreds of operations one by one
  def estimate_of(critic_params, real):
    _, grads = losses.input_gradients(critic_fn, critic_params, real)
    found = losses.map_features(losses.gradient_maps(grads), 32)
    return quality.mvg_fit(found.features, found.valid)

  estimate = estimate_of(single[0].critic_params, jnp.asarray(batches[1][0]))
  flat = {}
  for name, states in (('single', single), ('sharded', sharded)):
    for i, state in enumerate(states):
      for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        flat[f'{name}/{i}/{jax.tree_util.keystr(path)}'] = np.asarray(leaf)
  for name, metrics in (('single', single_metrics),
                        ('sharded', sharded_metrics)):
    for i, m in enumerate(metrics):
      for key, value in m.items():
        flat[f'{name}/metrics/{i}/{key}'] = np.asarray(value)
  records = rng.integers(0, 256, (DRAW_RECORDS, 6, 6, 3), np.uint8)
  for count in (1, 4):
    batches, indices, flips = draws(jax.devices()[:count], records)
    flat[f'draw/{count}/batches'] = batches
    flat[f'draw/{count}/indices'] = indices
    flat[f'draw/{count}/flips'] = flips
  flat['draw/records'] = records
  flat['estimate_mean'] = np.asarray(estimate[0])
  flat['estimate_cov'] = np.asarray(estimate[1])
  np.savez(out, **flat)


if __name__ == '__main__':
  main(sys.argv[1])
