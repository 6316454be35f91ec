"""The training loop: exact resume, checkpoint fallback, NaN guard, workdir checks, configs."""

import importlib.util
import json
import logging
import os
import pathlib
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from helpers import numerics
from helpers.locks import hold_in_another_process
from qagan_jax import checkpoints
from qagan_jax import config as config_lib
from qagan_jax import input_pipeline
from qagan_jax import loop
from qagan_jax import run_lock
from qagan_jax import train


QUIET = dict(run__sample_grid=0, eval__train_metrics=())   # no grids, no evaluations


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


def logged_steps(workdir):
  return [json.loads(line)['step'] for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()
          if 'critic_loss' in line]


def final_state(config, workdir, step=None):
  return jax.device_get(loop.restore_state(config, workdir, step)[1])


def assert_same_state(actual, expected):
  # One program on the same inputs: a resumed run's state is the
  # uninterrupted run's, bit for bit (tests/helpers/numerics.py).
  chex.assert_trees_all_equal(jax.device_get(actual), jax.device_get(expected))


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    trained_run, stopped_run, copy_run, tiny_run_config, monkeypatch):
  config = tiny_run_config()
  assert checkpoint_steps(stopped_run) == [2, 3]
  resumed_dir = copy_run(stopped_run)
  prepared = []
  prepare = loop.Sampler.prepare
  monkeypatch.setattr(loop.Sampler, 'prepare', lambda self, state: (
      prepared.append(int(state.step)), prepare(self, state))[1])
  resumed = loop.train_and_evaluate(config, resumed_dir)
  assert int(resumed.step) == 6
  # step 6's grid and evaluation share one computation of the standing
  # statistics (the resumed run's only grid and evaluation)
  assert prepared == [6]
  assert_same_state(resumed, final_state(config, trained_run))
  # the metrics of the resumed run continue the interrupted one, once each
  assert logged_steps(resumed_dir) == [2, 4, 6]
  outputs = trained_run
  assert (outputs / 'loss_curves.png').is_file()
  assert sorted(p.name for p in (outputs / 'samples').iterdir()) == [
      'step_0000000.png', 'step_0000003.png', 'step_0000006.png']
  assert list((outputs / 'tensorboard').glob('events.out.tfevents.*'))
  records = [json.loads(line) for line in
             (outputs / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if 'eval/niqe_distance' in r and
          'eval/swd/mean' in r and 'eval/diversity/ssim_pairs' in r and
          'eval/prdc_niqe/coverage' in r] == [0, 3, 6]
  assert all(np.isfinite(v) for r in records for v in r.values())


def test_sigterm_saves_a_checkpoint_that_resumes(stopped_run, copy_run,
                                                 tiny_run_config, trained_run,
                                                 capsys):
  """SIGTERM (a preempted machine) or Ctrl-C: the step under way finishes,
  a checkpoint is saved, and the same command resumes."""
  config = tiny_run_config(**QUIET)
  workdir = copy_run(stopped_run)

  def terminate_after_step_4(step, state):
    del state
    if step == 4:
      # the loop's handler, not the default one (which would end pytest)
      handler = signal.getsignal(signal.SIGTERM)
      assert type(getattr(handler, '__self__', None)).__name__ == (
          '_StopRequests'), handler
      os.kill(os.getpid(), signal.SIGTERM)

  state = loop.train_and_evaluate(config, workdir,
                                  on_step=terminate_after_step_4)
  # the signal arrives during step 4's callback: step 5 is the first to see it
  assert int(state.step) == 5 and checkpoint_steps(workdir) == [3, 4, 5]
  assert 'SIGTERM: stopped at step 5 with a checkpoint' in (
      capsys.readouterr().err)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # restored
  resumed = loop.train_and_evaluate(config, workdir)
  assert_same_state(resumed, final_state(config, trained_run))


@pytest.mark.slow
def test_host_placement_resumes_exactly_from_the_prefetched_position(
    tmp_path, tiny_run_config, caplog, stopped_run, copy_run):
  """The host pipeline reads ahead; a checkpoint holds the position of the
  batches used, not of those read ahead. (The tests above run with the data
  on the devices, the default on this machine.)"""
  config = tiny_run_config(data__placement='host', **QUIET)
  with caplog.at_level(logging.INFO):
    straight = loop.train_and_evaluate(config, tmp_path / 'straight')
  assert 'Training data on the host' in caplog.text
  loop.train_and_evaluate(config, tmp_path / 'resumed', stop_after=3)
  resumed = loop.train_and_evaluate(config, tmp_path / 'resumed')
  assert_same_state(resumed, straight)
  assert not (tmp_path / 'straight' / 'samples').exists()
  records = [json.loads(line) for line in
             (tmp_path / 'straight' / 'metrics.jsonl').read_text().splitlines()]
  assert not any(k.startswith('eval/') for r in records for k in r)
  # a checkpoint of the device placement (no input position) resumes on the
  # host with a warning
  switched = copy_run(stopped_run)
  with caplog.at_level(logging.WARNING):
    state = loop.train_and_evaluate(config, switched)
  assert 'holds no input position' in caplog.text and int(state.step) == 6


def test_damaged_latest_checkpoint_falls_back_to_the_previous(
    trained_run, copy_run, caplog, tiny_run_config):
  workdir = copy_run(trained_run)
  latest = workdir / 'checkpoints' / '6' / 'state'
  for path in latest.rglob('*'):
    if path.is_file():
      path.write_bytes(b'\0' * 7)         # truncated, garbage files
  with caplog.at_level(logging.WARNING):
    state = loop.train_and_evaluate(tiny_run_config(**QUIET), workdir)
  assert 'step 6' in caplog.text and 'unreadable' in caplog.text
  assert int(state.step) == 6
  assert (workdir / 'checkpoints.damaged' / '6').is_dir()   # kept, aside
  assert checkpoint_steps(workdir) == [2, 4, 6]


def test_non_finite_state_stops_the_run_without_saving(tmp_path, monkeypatch,
                                                       tiny_run_config):
  config = tiny_run_config(run__log_every=1, run__checkpoint_every=1, **QUIET)
  real_make = train.make_train_step

  def poisoned(*args, **kwargs):
    step = real_make(*args, **kwargs)

    def wrapped(state, batch):
      state, metrics = step(state, batch)
      if int(state.step) >= 3:
        state = state.replace(critic_params=jax.tree_util.tree_map(
            lambda p: p * jnp.nan, state.critic_params))
        metrics = dict(metrics, critic_loss=jnp.nan)
      return state, metrics

    wrapped.lower = step.lower    # the loop compiles ahead through it
    return wrapped

  monkeypatch.setattr(train, 'make_train_step', poisoned)
  with pytest.raises(checkpoints.NonFiniteStateError,
                     match='diverged at step 3: critic_loss'):
    loop.train_and_evaluate(config, tmp_path)
  assert checkpoint_steps(tmp_path) == [1, 2]
  # and the checkpointer itself refuses a non-finite state
  checkpointer = checkpoints.Checkpointer(tmp_path / 'other')
  with pytest.raises(checkpoints.NonFiniteStateError, match='not saved'):
    checkpointer.save(1, {'w': jnp.array([1.0, jnp.inf])}, None)


def test_workdir_of_another_config_is_refused(trained_run, copy_run,
                                              tiny_run_config):
  workdir = copy_run(trained_run)
  with pytest.raises(loop.WorkdirMismatchError,
                     match=r'model.width: 4 in the workdir, 8 now'):
    loop.train_and_evaluate(tiny_run_config(model__width=8), workdir)
  # a longer run would decay its learning rates over another schedule
  with pytest.raises(loop.WorkdirMismatchError,
                     match=r'train.num_iters: 6 in the workdir, 12 now'):
    loop.train_and_evaluate(tiny_run_config(train__num_iters=12), workdir)
  # non-structural changes are fine: the finished run has nothing to do
  fine = tiny_run_config(run__log_every=1, **QUIET)
  assert int(loop.train_and_evaluate(fine, workdir).step) == 6


def test_a_workdir_that_a_live_run_trains_in_is_refused(
    stopped_run, trained_run, copy_run, tiny_run_config):
  assert not (trained_run / run_lock.LOCK_FILE).exists()   # released at the end
  workdir = copy_run(stopped_run)
  assert not (workdir / run_lock.LOCK_FILE).exists()       # and when stopped
  holder = hold_in_another_process(workdir)
  try:
    with pytest.raises(run_lock.WorkdirBusyError,
                       match=f'process {holder.pid} on host'):
      loop.train_and_evaluate(tiny_run_config(**QUIET), workdir)
  finally:
    holder.kill()
    holder.wait()
  assert checkpoint_steps(workdir) == checkpoint_steps(stopped_run)


def test_sample_mode_writes_a_grid_and_the_images(trained_run, copy_run,
                                                  tiny_run_config,
                                                  monkeypatch, tmp_path):
  config = tiny_run_config()
  workdir = copy_run(trained_run)

  def no_data(*args, **kwargs):
    raise AssertionError('sampling must not need the dataset')

  monkeypatch.setattr(input_pipeline, 'create_loader', no_data)
  monkeypatch.setattr(input_pipeline, 'data_source', no_data)
  path = loop.sample(config, workdir, num_samples=10)
  assert path.is_file()
  stored = np.load(path.with_suffix('.npz'))
  assert stored['images'].shape == (10, 32, 32, 3)
  assert stored['images'].dtype == np.uint8 and int(stored['step']) == 6
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    loop.sample(config, tmp_path / 'empty')


def test_standing_statistics_once_per_evaluation_and_samples_by_latent(
    tiny_run_config):
  """The EMA generator's standing BatchNorm statistics are computed once per
  `generate`, not per chunk; a sample depends on its latent alone (not on
  the chunk it is generated in), and a one-process share is all of them."""
  config = tiny_run_config()
  setup = train.build(config)
  state = train.create_train_state(setup, jax.random.PRNGKey(0))
  sampler = loop.Sampler(setup, config.run.standing_stats_samples)
  calls = []
  standing = sampler._standing_stats   # pylint: disable=protected-access

  def counted(*args):
    calls.append(1)
    return standing(*args)

  sampler._standing_stats = counted    # pylint: disable=protected-access
  chunked = loop.generate(sampler, state, 10, seed=3, batch=4,
                          latent_dim=setup.latent_dim)
  assert len(calls) == 1 and chunked.shape == (10, 32, 32, 3)
  # standing statistics made beforehand (a grid's, at the same step) are used
  again = loop.generate(sampler, state, 10, seed=3, batch=4,
                        latent_dim=setup.latent_dim,
                        prepared=sampler.prepare(state))
  assert len(calls) == 2
  np.testing.assert_array_equal(again, chunked)
  whole = loop.generate(sampler, state, 10, seed=3, batch=10,
                        latent_dim=setup.latent_dim)
  # the same per-sample program at another batch size: equal to the
  # rounding of reordered sums (the tiny generator's largest: its dense
  # layer over 128 latents), carried through its few layers to images in
  # [-1, 1]
  np.testing.assert_allclose(chunked, whole, rtol=0,
                             atol=numerics.reordered_sum(128, amplification=8))
  shared = loop.generate(sampler, state, 10, seed=3, batch=4, as_uint8=True,
                         shared=True, latent_dim=setup.latent_dim)
  np.testing.assert_array_equal(shared, input_pipeline.to_uint8(chunked))


def load_config_file(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


CONFIG_FILES = sorted(
    (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))


def test_there_are_nine_paper_configs_a_base_and_the_demo():
  names = {p.stem for p in CONFIG_FILES}
  assert {'base', 'demo'} < names
  assert {f'{d}_{m}' for d in ('cifar10', 'stl10', 'celeba')
          for m in ('wgangp', 'ssim', 'niqe')} < names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_file_validates_and_builds_models_and_pipeline(path):
  config = load_config_file(path)
  config_lib.validate(config)
  setup = train.build(config)
  state = jax.eval_shape(lambda: train.create_train_state(
      setup, jax.random.PRNGKey(0)))
  assert state.gen_params and state.critic_params
  side = config.model.resolution
  with tfds.testing.mock_data(num_examples=2 * config.train.batch_size):
    loader = input_pipeline.create_loader(config.data, config.train.batch_size,
                                          seed=0, device_count=1)
    batch = next(iter(loader))
  assert batch.shape == (config.train.batch_size, side, side, 3)
  if path.stem != 'base' and path.stem != 'demo':
    dataset, method, *protocol = path.stem.split('_')
    assert config.loss.method == method
    assert config.data.dataset == {'celeba': 'celeb_a'}.get(dataset, dataset)
    assert (config.train.n_critic, config.train.learning_rate,
            config.loss.gp_weight, config.loss.quality_weight) == (
                5, 2e-4, 10.0 if protocol == ['gp10'] else 1.0, 0.1)


def _flat(tree, prefix=''):
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


@pytest.mark.parametrize('path', [p for p in CONFIG_FILES
                                  if p.stem.endswith('_gp10')],
                         ids=lambda p: p.stem)
def test_strong_baseline_configs_differ_from_the_paper_only_as_documented(
    path):
  strong = _flat(load_config_file(path).to_dict())
  paper = _flat(load_config_file(
      path.with_name(path.stem[:-len('_gp10')] + '.py')).to_dict())
  assert strong.keys() == paper.keys()
  differences = {k: strong[k] for k in strong if strong[k] != paper[k]}
  assert differences == config_lib.GP10_FIELDS
  assert paper['loss.gp_weight'] == 1.0 and paper['loss.drift_weight'] == 1e-5


def test_nine_strong_baseline_configs():
  assert sorted(p.stem for p in CONFIG_FILES if p.stem.endswith('_gp10')) == (
      sorted(f'{d}_{m}_gp10' for d in ('cifar10', 'stl10', 'celeba')
             for m in ('wgangp', 'ssim', 'niqe')))


def test_validate_names_bad_fields_and_suggests(tiny_run_config):
  config = tiny_run_config()
  config.loss.method = 'nique'
  config.model.resolution = 48
  config.train.learning_rate = -1.0
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  message = str(error.value)
  assert "loss.method = 'nique'" in message and "did you mean 'niqe'" in message
  assert 'train.learning_rate must be in (0.0, inf)' in message
  config = tiny_run_config()
  config.model.resolution = 48
  with pytest.raises(ValueError, match='does not match the 32x32 images'):
    config_lib.validate(config)
  config = config_lib.get_config('cifar10', 'ssim')   # IS: 10 splits
  config.eval.num_samples = 5
  with pytest.raises(ValueError, match='eval.num_samples must be at least 10'):
    config_lib.validate(config)
  config = tiny_run_config()
  config.eval.reference_cache = 'nosuch://bucket/cache'
  with pytest.raises(ValueError, match=r'eval.reference_cache=nosuch://bucket/'
                     r'cache: nosuch:// is not a storage'):
    config_lib.validate(config)
