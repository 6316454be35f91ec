"""The training loop: exact resume after a stop or a signal, checkpoint fallback, the NaN guard, a finished run."""

import json
import logging
import os
import re
import shutil
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qagan_jax import checkpoints
from qagan_jax import errors
from qagan_jax import loop
from qagan_jax import modes
from qagan_jax import reporting
from qagan_jax import run_lock
from qagan_jax import sampling
from qagan_jax import train
from qagan_jax import workdirs


QUIET = dict(run__sample_grid=0, eval__train_metrics=())   # no grids, no evaluations


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


def logged_steps(workdir):
  return [json.loads(line)['step'] for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()
          if 'critic_loss' in line]


def final_state(config, workdir, step=None):
  return jax.device_get(modes.restore_state(config, workdir, step)[1])


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
  prepare = sampling.Sampler.prepare
  monkeypatch.setattr(sampling.Sampler, 'prepare', lambda self, state: (
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
          'StopRequests'), handler
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


def test_ctrl_c_before_the_first_step_stops_without_training(
    tmp_path, tiny_run_config, monkeypatch, caplog):
  """Ctrl-C while the step compiles and the first grid is drawn: the run
  stops when they end, without a step and without a checkpoint."""
  save_png = reporting.save_png

  def interrupt_then_save(image, path):
    os.kill(os.getpid(), signal.SIGINT)   # the loop's handler takes it
    save_png(image, path)

  monkeypatch.setattr(reporting, 'save_png', interrupt_then_save)
  workdir = tmp_path / 'run'
  with caplog.at_level(logging.INFO):
    state = loop.train_and_evaluate(
        tiny_run_config(eval__train_metrics=()), workdir)
  assert int(state.step) == 0
  assert 'SIGINT: stopped before step 1; nothing to save' in caplog.text
  assert not any((workdir / 'checkpoints').glob('[0-9]*'))
  assert (workdir / 'samples' / 'step_0000000.png').exists()


def test_out_of_device_memory_is_told_with_what_the_step_needs(
    stopped_run, copy_run, tiny_run_config):
  """A device that runs out of memory mid-run (as XLA reports it on a GPU):
  a ResourceError naming the allocation, the step's planned memory and
  what to lower; no checkpoint is lost."""
  workdir = copy_run(stopped_run)
  before = checkpoint_steps(workdir)

  class OutOfMemory(jax.errors.JaxRuntimeError):
    pass

  def exhaust(step, state):
    del step, state
    raise OutOfMemory('RESOURCE_EXHAUSTED: Out of memory while trying to '
                      'allocate 9663676416 bytes.\nBufferAssignment OOM')

  with pytest.raises(errors.ResourceError) as raised:
    loop.train_and_evaluate(tiny_run_config(**QUIET), workdir,
                            on_step=exhaust)
  message = str(raised.value)
  assert 'allocate 9663676416 bytes' in message, message
  assert re.search(r'The training step needs \d+\.\d\d GiB a device',
                   message), message
  assert 'train.batch_size' in message and 'BufferAssignment' not in message
  assert set(before) <= set(checkpoint_steps(workdir))   # none lost


@pytest.mark.parametrize('made_again', [False, True])
def test_a_workdir_removed_under_its_run_stops_it_with_one_message(
    stopped_run, copy_run, tiny_run_config, capfd, made_again):
  """A workdir deleted (or moved away) while its run trains, perhaps made
  again (orbax makes the folders it writes to): the run stops at its next
  write with WorkdirRemovedError, rather than go on writing a workdir
  without its config and lock, and prints no traceback of orbax's failed
  writes."""
  workdir = copy_run(stopped_run)

  def remove(step, state):
    del state
    if step == 4:       # the checkpoint of step 4 still being written
      while workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
      if made_again:
        workdir.mkdir()

  with pytest.raises(workdirs.WorkdirRemovedError,
                     match='was removed .* while the run trained'):
    loop.train_and_evaluate(tiny_run_config(**QUIET), workdir,
                            on_step=remove)
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'orbax' not in err, err[-2000:]
  assert not (workdir / 'checkpoints' / '6').exists()


def test_a_run_whose_lock_was_taken_over_stops_before_writing_again(
    stopped_run, copy_run, tiny_run_config):
  """Another run took over the workdir (it found this one's lock not
  renewed: a frozen process): this run stops at its next checkpoint,
  naming the other, and does not save over it."""
  workdir = copy_run(stopped_run)
  other = {'host': 'another-host', 'pid': 7,
           'since': '2026-01-01T00:00:00+00:00'}

  def take_over(step, state):
    del state
    if step == 4:
      (workdir / run_lock.LOCK_FILE).write_text(json.dumps(other))

  with pytest.raises(run_lock.WorkdirBusyError,
                     match=r'another run \(process 7 on host another-host, '
                     r'since .*\) took over'):
    loop.train_and_evaluate(tiny_run_config(**QUIET), workdir,
                            on_step=take_over)
  assert checkpoint_steps(workdir) == [2, 3, 4]
  assert json.loads((workdir / run_lock.LOCK_FILE).read_text()) == other


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
