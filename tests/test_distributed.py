"""Multi-process training on this machine: two processes of one CPU device each, joined by jax.distributed.

The processes talk over loopback only (the coordinator at 127.0.0.1, CPU
collectives by gloo). Each test pays for the processes' start-up and
compilation once: a run interrupted and resumed by both processes ends its
step 4 with the state of a single-process run of the same config (the data
live on the devices, so the batches do not depend on the process count);
checkpoints and metrics are written once; a process that dies makes the
other stop with a clear message, not hang; SIGTERM stops both after the
same step; the replicated state is the same on both; an evaluation shared
by both scores what one process does.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import filelock
import jax
import numpy as np
import pytest

from helpers import numerics
from helpers.locks import hold_in_another_process
from qagan_jax import config as config_lib
from qagan_jax import loop
from qagan_jax import modes

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PROCESSES = 2
# What one training step of this tiny network makes of a reordered sum's
# rounding (the generator's gradient goes through BatchNorms of 8 x 4 x 4
# values, after a critic update): measured up to 0.17% of the gradients'
# scale between two compilations of the same one-process step from the same
# state (XLA's default and the suite's compile flags, with the flips of the
# data drawn at another rate to try another trajectory), i.e. 40x
# reordered_sum(8 x 32 x 32); 3 ulps of it on the usual trajectory.
STEP_CONDITIONING = 200
# The tiny run of both sides; the data on the devices (natural_patches).
# A larger Adam eps keeps rounding-level gradient differences (a pmean over
# two devices against one batch) at rounding level, as in the 4-device test.
OVERRIDES = {
    'model.width': 4, 'train.batch_size': 8, 'train.generator_batch_size': 8,
    'train.n_critic': 1, 'train.num_iters': 100_000, 'train.adam_eps': 1e-3,
    'loss.method': 'wgangp', 'data.patches_per_epoch': 1024,
    'data.placement': 'device', 'run.log_every': 1,
    'run.checkpoint_every': 1, 'run.keep_checkpoints': 1000,
    'run.sample_every': 100_000, 'run.sample_grid': 4,
    'run.standing_stats_samples': 16, 'eval.train_metrics': (),
    'run.eval_every': 100_000,
    'run.progress_bar': False,
}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(command, logs):
  """Starts `command` (an argv after the interpreter) as the PROCESSES
  processes of one jax.distributed job on loopback; output to
  `<logs>-<port>-<index>.log`."""
  port = free_port()
  processes = []
  for index in range(PROCESSES):
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES=str(PROCESSES), JAX_PROCESS_ID=str(index))
    env['XLA_FLAGS'] = ' '.join(   # one CPU device per process
        f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
    # output to files: a full pipe would block a process, and with it the
    # others at their next collective
    log = pathlib.Path(f'{logs}-{port}-{index}.log')
    with open(log, 'w') as out:
      process = subprocess.Popen([sys.executable, *command], cwd=REPO_ROOT,
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    process.log = log
    processes.append(process)
  return processes


def launch(workdir, *extra, overrides=None):
  """Starts the processes of one multi-process training run; returns them."""
  settings = dict(OVERRIDES, **(overrides or {}))
  args = [f'--config.{k}={v}' for k, v in settings.items()]
  return start_processes(
      ['-m', 'qagan_jax.main', '--config=configs/demo.py',
       f'--workdir={workdir}', '--distributed=on', '--heartbeat_timeout=10',
       *args, *extra], workdir.parent / workdir.name)


def output(process) -> str:
  return process.log.read_text()


def finish(processes, timeout=120):
  for process in processes:
    try:
      process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      for p in processes:
        p.kill()
      pytest.fail('a process of the multi-process run hung')
  for process in processes:
    assert process.returncode == 0, output(process)[-3000:]


def metric_steps(workdir):
  return [json.loads(line)['step'] for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()
          if 'critic_loss' in line]


def single_process_config():
  config = config_lib.demo_config()
  for path, value in OVERRIDES.items():
    section, name = path.split('.')
    config[section][name] = value
  config.run.sample_grid = 0    # not compared; spares a compilation
  config_lib.validate(config)
  return config


@pytest.mark.slow
def test_two_processes_resume_equal_one_process_and_stop_when_one_dies(
    tmp_path):
  workdir = tmp_path / 'two'
  # preempted: SIGTERM to one process, 2 s later to the other; both stop
  # after the same step with one checkpoint (jax's preemption sync point)
  stopped = launch(workdir)
  try:
    deadline = time.monotonic() + 120
    while not (workdir / 'checkpoints' / '1').is_dir():
      assert time.monotonic() < deadline, 'the run never got to step 1'
      assert all(p.poll() is None for p in stopped), [
          output(p)[-3000:] for p in stopped]
      time.sleep(0.05)
    stopped[0].send_signal(signal.SIGTERM)
    time.sleep(2)
    if stopped[1].poll() is None:
      stopped[1].send_signal(signal.SIGTERM)
  except BaseException:
    for p in stopped:
      p.kill()
    raise
  finish(stopped, timeout=60)
  ends = [re.findall(r'SIGTERM: stopped at step (\d+) with a checkpoint',
                     output(p)) for p in stopped]
  assert ends[0] and ends[0] == ends[1], [output(p)[-3000:] for p in stopped]
  end = int(ends[0][0])
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == (
      list(range(1, end + 1)))
  assert metric_steps(workdir) == list(range(1, end + 1))   # by process 0
  assert sorted(p.name for p in (workdir / 'samples').iterdir()) == [
      'step_0000000.png']
  handover = tmp_path / 'handover'      # the two processes' last step
  shutil.copytree(workdir, handover)
  # ... then resumed by every one; meanwhile (the processes compile) the
  # same steps in this process: step 1 from the same initial state, and
  # the step after the handover from the two processes' checkpoint, so that
  # each comparison covers one step of rounding
  processes = launch(workdir)
  try:
    config = single_process_config()
    assert jax.process_count() == 1 and jax.device_count() == 1
    first = loop.train_and_evaluate(config, tmp_path / 'one', stop_after=1)
    after = loop.train_and_evaluate(config, handover, stop_after=end + 1)
    deadline = time.monotonic() + 120
    while not (workdir / 'checkpoints' / str(end + 2)).is_dir():
      assert time.monotonic() < deadline, 'the resumed run did not go on'
      assert all(p.poll() is None for p in processes), [
          output(p)[-3000:] for p in processes]
      time.sleep(0.05)
    # a process dies mid-training: the other stops, with a message
    processes[1].send_signal(signal.SIGKILL)
    start = time.monotonic()
    processes[0].wait(timeout=60)
    waited = time.monotonic() - start
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  assert processes[0].returncode != 0 and waited < 30
  text = output(processes[0])
  assert f'Resuming from the checkpoint of step {end}' in text
  # ours when the loss shows in a collective (nearly always); jax's own when
  # it shows in a checkpoint's barrier, after the heartbeat timeout
  assert ('Another process has most likely stopped; this one stops too. '
          'Run the same command on every host to resume' in text
          or 'another task died' in text), text[-3000:]
  assert metric_steps(workdir)[:end + 2] == list(range(1, end + 3))
  # Two devices sum each gradient over 4 of the 8 images (8 x 32 x 32
  # pixel terms in all) and average the halves; one device sums all 8: the
  # same sums in another order, then the step's conditioning. A sharding
  # bug (a missing pmean, BatchNorm statistics of one device, other noise
  # or other images on a device) changes gradients by O(1) of their scale,
  # 10-100x beyond this tolerance (0.9% of it).
  rel = numerics.reordered_sum(8 * 32 * 32, amplification=STEP_CONDITIONING)
  for step, single in ((1, first), (end + 1, after)):
    two = modes.restore_state(config, workdir, step=step)[1]
    assert numerics.assert_states_close(two, single, rel) > 50, step


@pytest.fixture(scope='session')
def niqe_run(tmp_path_factory):
  """tests/helpers/replicated_state.py in two processes, once a session
  (whichever test process asks first; the other waits): a refused busy
  workdir, QAGAN-NIQE trained with the 'sobel' pristine model (with a
  fall-back from a damaged checkpoint), a shared evaluation. Returns its
  folder: `run/` the workdir, the processes' outputs beside; read-only."""
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
          ) / 'niqe_run'
  with filelock.FileLock(f'{root}.lock'):
    if not root.with_suffix('.complete').exists():
      shutil.rmtree(root, ignore_errors=True)     # a failed attempt's
      root.mkdir()
      busy = root / 'busy'
      holder = hold_in_another_process(busy)
      try:
        processes = start_processes(
            [str(REPO_ROOT / 'tests' / 'helpers' / 'replicated_state.py'),
             str(root / 'run'), str(root / 'out-'), str(busy)],
            root / 'process')
        finish(processes, timeout=180)
      finally:
        holder.kill()
        holder.wait()
      root.joinpath('holder').write_text(str(holder.pid))
      root.joinpath('log-1').write_text(output(processes[1]))
      root.with_suffix('.complete').touch()
  return root


@pytest.mark.slow
def test_replicated_state_is_bitwise_equal_across_processes(niqe_run):
  """QAGAN-NIQE with the 'sobel' pristine model, fitted when the run starts:
  after training steps, and after both processes fell back from a damaged
  checkpoint, every leaf of the two processes' copies of the state is the
  same, bit for bit."""
  workdir = niqe_run / 'run'
  text = (niqe_run / 'log-1').read_text()
  assert 'falling back to the previous one' in text, text[-3000:]
  assert (workdir / 'checkpoints.damaged' / '2').is_dir()
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == [
      1, 2, 3]
  for phase, step in (('trained', 2), ('resumed', 3)):
    first, second = (dict(np.load(niqe_run / f'out-{phase}-{i}.npz'))
                     for i in range(PROCESSES))
    assert sorted(first) == sorted(second)
    assert any('pristine' in key for key in first), sorted(first)
    for key in first:
      np.testing.assert_array_equal(first[key], second[key],
                                    err_msg=f'{phase}: {key}')
    assert int(first['.step']) == step


def test_every_process_refuses_a_workdir_that_another_run_holds(niqe_run):
  first, second = ((niqe_run / f'out-busy-{i}.txt').read_text()
                   for i in range(PROCESSES))
  holder = (niqe_run / 'holder').read_text()
  assert f'process {holder} on host' in first       # named by process 0
  assert 'in use by another training run (process 0 names it)' in second
  assert not (niqe_run / 'busy' / 'checkpoints').exists()


def test_two_processes_share_an_evaluation_and_score_what_one_does(
    niqe_run, tmp_path):
  """FID, IS, KID, PRDC (of a stand-in for Inception), NIQE distance and
  SWD: every kind of per-sample part, on 24 samples of the run's step 3 and
  24 reference images. Each of two processes generates and extracts its 12
  (tests/helpers/shared_evaluation.py), all are scored together, and the
  result is the one-process evaluation's. The same programs run on the
  same inputs (samples are generated and measured in chunks of
  eval.batch_size = 12 either way), so equal means bit for bit."""
  from helpers import replicated_state  # pylint: disable=g-import-not-at-top
  from helpers import shared_evaluation  # pylint: disable=g-import-not-at-top
  shared_evaluation.evaluate(replicated_state.run_config(), niqe_run / 'run',
                             str(tmp_path / 'one-'))
  one = json.loads((tmp_path / 'one-0.json').read_text())
  assert one['processes'] == 1
  assert set(one['metrics']) >= {'fid', 'is', 'kid', 'precision', 'swd/mean',
                                 'niqe_distance'}
  expected = dict(np.load(tmp_path / 'one-0.npz'))
  for index in range(PROCESSES):
    two = json.loads((niqe_run / f'out-eval-{index}.json').read_text())
    assert two['processes'] == PROCESSES
    assert two['metrics'] == one['metrics'], index
    parts = dict(np.load(niqe_run / f'out-eval-{index}.npz'))
    assert sorted(parts) == sorted(expected)
    for name in expected:
      np.testing.assert_array_equal(parts[name], expected[name],
                                    err_msg=f'process {index}: {name}')
