"""The train step: sharding equivalence, a short training run, schedules, setup errors."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import numerics
from qagan_jax import input_pipeline
from qagan_jax import quality
from qagan_jax import train
from qagan_jax import train_state

# What the NIQE terms make of a reordered sum's rounding in one step, at
# most: the worst leaf of step 0 measured 0.65 of reordered_sum(40 * 32 *
# 32), on 2 cores and pinned to one, of one machine.
NIQE_AMPLIFICATION = 8


def tiny_config(method='wgangp', **train_overrides):
  config = train_state.default_config()
  config.model.width = 8
  config.loss.method = method
  config.train.n_critic = 2
  config.train.batch_size = 16
  config.train.generator_batch_size = 16
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


@pytest.mark.slow
def test_sharded_step_on_four_devices_matches_one_device(four_devices):
  found = four_devices

  def part(name, prefix):
    start = f'{name}/{prefix}'
    return {k[len(start):]: v for k, v in found.items() if k.startswith(start)}

  single, sharded = part('single', '0/'), part('sharded', '0/')
  assert len(single) > 100
  # Step 0, the whole new state. Four devices sum each gradient over 10 of
  # the 40 images (40 x 32 x 32 pixel terms) and average; one device sums
  # all 40: the same sums in another order. The NIQE penalty amplifies
  # their rounding: alpha where rho is nearly flat (d alpha / d R ~ 450 near
  # alpha = 10), the 36 x 36 MVG solve (condition ~1e5). A sharding bug (a
  # missing pmean, unsynchronised BatchNorm statistics, other noise on
  # other devices, a wrong gather) changes gradients (Adam's first moments,
  # b1 = 0) by O(1) of their scale, far beyond this tolerance; parameters
  # moved by at most ~lr = 2e-4 in this step, and are held to their scale.
  rel = numerics.reordered_sum(40 * 32 * 32, amplification=NIQE_AMPLIFICATION)
  numerics.assert_states_close(sharded, single, rel)
  # Step 1 starts from states that differ by rounding, which the critic and
  # Adam amplify to up to lr in parameters with tiny gradients; it checks
  # the sharded pristine refresh (and the metrics) only.
  pristine = lambda state: {k: v for k, v in state.items() if '.pristine' in k}
  numerics.assert_states_close(pristine(part('sharded', '1/')),
                               pristine(part('single', '1/')), rel)
  for key, expected in part('single', 'metrics/').items():
    actual = found['sharded/metrics/' + key]
    # scalars: losses, penalties and norms, of order 1 or larger
    np.testing.assert_allclose(actual, expected, rtol=0, err_msg=key,
                               atol=rel * max(abs(float(expected)), 1.0))
  # The 'critic' pristine source estimated at step 0 and blended at step 1
  # (the estimate computed by another program: the same sums, reordered).
  after = part('single', '1/')
  assert int(single['.pristine_count']) == 1
  assert int(after['.pristine_count']) == 2
  blend = 0.9 * single['.pristine.mean'] + 0.1 * found['estimate_mean']
  np.testing.assert_allclose(after['.pristine.mean'], blend, rtol=0,
                             atol=rel * np.abs(blend).max())


@pytest.mark.slow
def test_short_training_moves_samples_toward_the_data():
  # Data: a fixed colour ramp plus noise. Statistic: the RMS difference
  # between the mean of 64 generated images and the data's mean image.
  steps = 60
  config = tiny_config('ssim', num_iters=steps, learning_rate=3e-3, n_critic=1)
  setup = train_state.build(config)
  mesh = train.make_mesh()
  step = train.make_train_step(setup, mesh, batch_size=16,
                               generator_batch_size=16)
  rows = np.linspace(-1, 1, 32)[:, None]
  mean_image = np.stack([np.broadcast_to(0.8 * rows, (32, 32)),
                         np.full((32, 32), -0.5),
                         np.broadcast_to(-0.6 * rows, (32, 32))], axis=-1)
  rng = np.random.default_rng(0)
  z = jax.random.normal(jax.random.key(9), (64, 128))
  generate = jax.jit(lambda s: setup.generator.clone(axis_name=None).apply(
      {'params': s.gen_params, 'batch_stats': s.gen_batch_stats}, z,
      train=True, mutable=['batch_stats'])[0])

  def distance(state):
    samples = np.asarray(generate(state))
    return float(np.sqrt(np.mean((samples.mean(axis=0) - mean_image)**2)))

  state = train_state.create_train_state(setup, jax.random.key_data(
      jax.random.key(0)))
  before = distance(state)
  for _ in range(steps):
    batch = mean_image + 0.1 * rng.normal(size=(1, 16, 32, 32, 3))
    state, metrics = step(state, jnp.asarray(batch, jnp.float32))
    assert all(np.isfinite(float(v)) for v in metrics.values())
  after = distance(state)
  # Measured: 0.49 -> 0.34.
  assert after < 0.8 * before, (before, after)
  assert int(state.step) == steps


def test_learning_rate_decays_linearly_to_zero_by_iteration():
  config = tiny_config(num_iters=100, n_critic=5, learning_rate=2e-4)
  gen, critic = train_state.learning_rate_schedules(config.train)
  np.testing.assert_allclose([gen(0), gen(50), gen(100), gen(150)],
                             [2e-4, 1e-4, 0, 0], atol=1e-12)
  # the critic steps 5 times per iteration; all share the iteration's rate
  np.testing.assert_allclose([critic(0), critic(4), critic(5), critic(250)],
                             [2e-4, 2e-4, 2e-4 * 0.99, 1e-4], rtol=1e-6)


def test_state_is_a_pytree_that_orbax_saves(tmp_path):
  setup = train_state.build(tiny_config('niqe'))
  state = train_state.create_train_state(setup, jax.random.PRNGKey(0),
                                   quality.PristineModel.standard())
  assert int(state.pristine_count) == 1
  np.testing.assert_allclose(state.pristine.mean,
                             quality.PristineModel.standard().mean, rtol=1e-6)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / 'state', state)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(tmp_path / 'state', state)
  for a, b in zip(jax.tree_util.tree_leaves(state),
                  jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(a, b)
  assert isinstance(restored, train_state.TrainState)


def test_initial_pristine_sources(tmp_path):
  config = tiny_config('niqe')
  config.loss.niqe.pristine = 'sobel'
  config.loss.niqe.pristine_batches = 3
  setup = train_state.build(config)
  rng = np.random.default_rng(1)
  batches = (rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
             for _ in range(10))
  model = train_state.initial_pristine(config, setup, batches)
  assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
  assert np.all(np.isfinite(model.cov))
  assert np.linalg.eigvalsh(model.cov).min() > -1e-9   # 48 patches, PSD
  model.save(tmp_path / 'pristine.npz')
  config.loss.niqe.pristine = 'file'
  config.loss.niqe.pristine_file = str(tmp_path / 'pristine.npz')
  loaded = train_state.initial_pristine(config, train_state.build(config))
  np.testing.assert_array_equal(loaded.cov, model.cov)
  config.loss.niqe.pristine_file = ''
  with pytest.raises(ValueError, match='needs loss.niqe.pristine_file'):
    train_state.initial_pristine(config, train_state.build(config))
  config.loss.niqe.pristine = 'critic'
  assert train_state.initial_pristine(config, train_state.build(config)) is None


def test_setup_errors_are_clear():
  config = tiny_config()
  config.model.dtype = 'float16'
  with pytest.raises(ValueError, match='model.dtype must be one of'):
    train_state.build(config)
  config = tiny_config('niqe')
  config.loss.niqe.pristine = 'imagenet'
  with pytest.raises(ValueError, match='loss.niqe.pristine must be one of'):
    train_state.build(config)
  setup = train_state.build(tiny_config())
  mesh = train.make_mesh()
  fake_mesh = type('M', (), {'devices': np.empty(3)})()
  with pytest.raises(ValueError, match='not divisible by the 3 devices'):
    train.make_train_step(setup, fake_mesh, batch_size=16,
                          generator_batch_size=16)
  assert mesh.devices.size == jax.device_count()


@pytest.mark.slow
def test_unrolled_critic_steps_equal_the_scan_and_bytes_their_floats():
  # The Python loop of critic_loop='unrolled' and the lax.scan of 'scan'
  # compute the same step; the scanned one is fed the batches as bytes (the
  # host placement's), converted on the device, the unrolled one the host's
  # floats of the same bytes (input_pipeline.to_unit_range).
  config = tiny_config(batch_size=4, generator_batch_size=4)
  config.model.width = 4
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3),
                                             np.uint8)
  states, loops = [], []
  for loop, real in (('unrolled', input_pipeline.to_unit_range(images)),
                     ('scan', images)):
    config.train.critic_loop = loop
    setup = train_state.build(config)
    state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
    step = train.make_train_step(setup, train.make_mesh(), batch_size=4,
                                 generator_batch_size=4)
    loops.append(step.lower(state, real).as_text().count('stablehlo.while'))
    if loop == 'unrolled':
      before = jax.device_get(state)      # the step donates `state`
    states.append(step(state, real))
  # Two programs of the same sums, fused and ordered differently (each
  # gradient sums 4 x 32 x 32 pixel terms), on inputs equal to an ulp (XLA
  # may fuse the conversion's multiply-add). A conversion by 2 / 256 instead
  # of 2 / 255 moves the inputs, and so the step, by ~0.4%. Left out: the
  # generator's biases before BatchNorm, whose true gradient is zero: Adam
  # scales their rounding noise (~1e-9) into steps of the learning rate's
  # size.
  before_norm = lambda name: 'gen' in name and "['up" in name and (
      'bias' in name)
  rel = numerics.reordered_sum(4 * 32 * 32)
  assert loops[1] == loops[0] + 1     # the scan is one more while loop
  (unrolled, unrolled_metrics), (scanned, scanned_metrics) = states
  assert numerics.assert_states_close(unrolled, scanned, rel,
                                      skip=before_norm) > 100
  numerics.assert_trees_close(unrolled_metrics, scanned_metrics, rel)
  # The sampling generator's EMA: decay x old + (1 - decay) x new, each
  # element rounded a few times in float32 (3 ulps of the larger operand).
  # A wrong decay moves it by |decay error| x the step (~lr = 2e-4), far
  # more for every weight of magnitude below ~5.
  decay = config.train.ema_decay
  after = jax.device_get(unrolled)
  for old, new, ema in zip(*(jax.tree_util.tree_leaves(tree) for tree in (
      before.gen_ema_params, after.gen_params, after.gen_ema_params))):
    old, new = np.float64(old), np.float64(new)
    np.testing.assert_allclose(
        ema, decay * old + (1 - decay) * new, rtol=0,
        atol=numerics.ulps(3) * np.maximum(np.abs(old), np.abs(new)).max()
        + 1e-30)
  assert not np.array_equal(np.asarray(ema), old)   # it moved


def test_the_critic_loop_is_the_measured_one_unless_set():
  """'auto' is the loop measured on each platform: unrolled on CPUs (the
  scan 6-31x slower there) and on GPUs (the only GPU step time taken),
  and so far on TPUs (none taken)."""
  unrolled = train.critic_steps_unrolled
  assert all(unrolled('auto', platform) for platform in ('cpu', 'gpu', 'tpu'))
  assert unrolled('unrolled', 'gpu') and not unrolled('scan', 'cpu')
  assert not unrolled('scan', 'gpu')
  with pytest.raises(ValueError, match="critic_loop must be one of"):
    unrolled('rolled', 'cpu')
  config = tiny_config()
  config.train.critic_loop = 'rolled'
  with pytest.raises(ValueError, match="critic_loop must be one of"):
    train_state.build(config)

