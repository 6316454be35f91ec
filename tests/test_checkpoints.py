"""A full disk: the checkpoint that has no room is not begun, one message says what to free, and the run resumes."""

import asyncio
import errno
import gc
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore

from helpers import runs
from qagan_jax import checkpoints
from qagan_jax import loop
from qagan_jax import reporting
from qagan_jax import storage

QUIET = {'run__sample_grid': 0, 'eval__train_metrics': ()}


def entries(folder: pathlib.Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir())


def test_a_checkpoint_without_room_is_not_begun(tmp_path, monkeypatch):
  checkpointer = checkpoints.Checkpointer(tmp_path / 'checkpoints',
                                          training=True)
  state = {'w': jnp.asarray(np.random.default_rng(0).normal(size=4096),
                           jnp.float32)}    # not compressible
  checkpointer.save(1, state)
  checkpointer.wait()
  size = storage.folder_bytes(tmp_path / 'checkpoints' / '1')
  assert size >= 4 * 4096
  monkeypatch.setattr(storage, 'free_bytes', lambda path: size // 2)
  with pytest.raises(checkpoints.DiskFullError) as full:
    checkpointer.save(2, state)
  message = str(full.value)
  assert message.startswith(f'the disk of {tmp_path} is full: could not '
                            'write the checkpoint of step 2')
  assert 'the newest checkpoint, of step 1, is intact' in message
  assert 'run the same command to resume' in message
  assert entries(tmp_path / 'checkpoints') == ['1']
  checkpointer.close()


def test_a_full_disk_while_writing_metrics_stops_with_the_same_message(
    stopped_run, copy_run, monkeypatch, tiny_run_config):
  workdir = copy_run(stopped_run)

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(reporting.MetricWriter, 'scalars', no_space)
  with pytest.raises(checkpoints.DiskFullError) as full:
    loop.train_and_evaluate(tiny_run_config(**QUIET), workdir)
  message = str(full.value)
  assert message.startswith(f'the disk of {workdir} is full: could not '
                            "write the run's metrics and sample grids")
  assert 'the newest checkpoint, of step 3, is intact' in message
  assert entries(workdir / 'checkpoints') == ['2', '3']
  assert not (workdir / 'run.lock').exists()       # released


def _can_mount_a_tmpfs(folder: pathlib.Path) -> bool:
  if not shutil.which('unshare'):
    return False
  probe = subprocess.run(
      ['unshare', '-rm', 'sh', '-c',
       f'mount -t tmpfs -o size=1m none {folder}'], capture_output=True)
  return probe.returncode == 0


@pytest.mark.slow
def test_a_disk_that_fills_stops_the_run_plainly_and_it_resumes(
    tmp_path, stopped_run, trained_run):
  disk = tmp_path / 'disk'
  disk.mkdir()
  if not _can_mount_a_tmpfs(disk):
    pytest.skip('needs `unshare -rm` (user and mount namespaces) to mount a '
                'small tmpfs')
  results = tmp_path / 'results.json'
  flags = ' '.join(f"'{flag}'" for flag in
                   [f'--config={runs.DEMO}', *runs.tiny_flags()])
  helper = runs.REPO_ROOT / 'tests' / 'helpers' / 'full_disk.py'
  subprocess.run(
      ['unshare', '-rm', 'sh', '-c',
       f'mount -t tmpfs -o size=4m none {disk} && exec {sys.executable} '
       f'{helper} {disk} {stopped_run} {results} {flags}'],
      check=True, timeout=600, env=os.environ)
  found = json.loads(results.read_text())
  for name in ('full', 'mid_save'):   # before the save, and during it
    status, _, stderr, steps, others = found[name]
    assert status == 1, (name, stderr[-3000:])
    assert steps == [2, 3] and others == [], name    # intact, no partial
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f'qagan_jax: the disk of {disk}/run is full: could '
                           'not write the checkpoint of step 4'), name
    assert 'the newest checkpoint, of step 3, is intact' in last
    assert 'Traceback' not in stderr and 'Event loop' not in stderr, (
        name, stderr[-3000:])
  status, _, stderr, steps, others = found['resumed']
  assert status == 0, stderr[-3000:]
  assert 'Resuming from the checkpoint of step 3' in stderr
  assert 'Done: 6 iterations' in stderr and steps[-1] == 6 and others == []
  # and the run continued as if never stopped
  logged = [{k: v for k, v in json.loads(line).items() if k != 'time'}
            for text in (found['metrics'],
                         (trained_run / 'metrics.jsonl').read_text())
            for line in text.splitlines()]
  half = len(logged) // 2
  assert logged[:half] == logged[half:]


def test_folder_names_orbax_cannot_read_back_are_refused(tmp_path):
  """Orbax finds a checkpoint's files by a wildcard search under its folder,
  where `[1]` is a pattern: saved under `sweep[1]`, every checkpoint was
  unreadable. Such a folder is refused before anything is written; the
  other characters of sweep names round-trip."""
  state = {'w': jnp.arange(8, dtype=jnp.float32)}
  for name in ('sweep*?{a,b} #1 é', 'lr=1e-3,seed=2'):
    checkpointer = checkpoints.Checkpointer(tmp_path / name / 'checkpoints')
    checkpointer.save(1, state)
    checkpointer.wait()
    restored, step = checkpointer.restore({'w': state['w']})
    checkpointer.close()
    assert step == 1 and np.array_equal(restored['w'], state['w'])
  with pytest.raises(ValueError, match=r'"\[" and "\]" cannot be in the path.*'
                     r'sweep_1'):
    checkpoints.Checkpointer(tmp_path / 'sweep[1]' / 'checkpoints')
  assert not (tmp_path / 'sweep[1]').exists()


def test_a_reader_follows_a_live_run_that_replaces_its_checkpoint(
    tmp_path, monkeypatch, capfd):
  """Sampling a run that trains with keep_checkpoints=1: the run's rotation
  removes the checkpoint being read and writes the next; the reader takes
  the new one, and moves nothing of the live run's aside."""
  folder = tmp_path / 'checkpoints'
  trainer = checkpoints.Checkpointer(folder, keep=1, training=True)
  state = lambda v: {'w': jnp.full((4,), v, jnp.float32)}
  trainer.save(1, state(1.0))
  trainer.wait()
  reader = checkpoints.Checkpointer(folder)
  restore = reader.manager.restore

  def meanwhile(step, **kwargs):
    if step == 1:        # the live run saves step 2, and removes step 1
      trainer.save(2, state(2.0))
      trainer.wait()
    return restore(step, **kwargs)

  monkeypatch.setattr(reader.manager, 'restore', meanwhile)
  restored, step = reader.restore(state(0.0))
  assert step == 2 and float(restored['w'][0]) == 2.0
  assert not (tmp_path / 'checkpoints.damaged').exists()
  reader.close()
  trainer.close()
  assert 'Traceback' not in capfd.readouterr().err


def test_abandoned_checkpoint_reads_are_not_reported_other_errors_are(
    tmp_path, caplog):
  """A tensorstore read's error that no one retrieved is logged by asyncio
  when its future is collected ('Future exception was never retrieved',
  with the traceback): after a damaged checkpoint was given up, in two of
  four command-line runs. A Checkpointer drops those reports, and no
  other."""
  checkpoints.Checkpointer(tmp_path / 'checkpoints')
  try:
    tensorstore.open({'driver': 'zarr', 'kvstore': {
        'driver': 'file', 'path': str(tmp_path / 'absent')}}, open=True
                     ).result()
  except ValueError as error:
    read_error = error
  loop = asyncio.new_event_loop()
  with caplog.at_level('ERROR', logger='asyncio'):
    for error in (read_error, ValueError('a bug of our own')):
      loop.create_future().set_exception(error)   # collected at once
      gc.collect()
  loop.close()
  reports = [record.getMessage() for record in caplog.records
             if record.name == 'asyncio']
  assert len(reports) == 1 and 'a bug of our own' in reports[0], reports


def test_damaged_array_files_fall_back_without_a_traceback(
    stopped_run, copy_run, tiny_run_config, capfd, caplog):
  """The arrays of the newest checkpoint truncated (its metadata intact):
  tensorstore's abandoned reads report 'Event loop is closed' by the
  hundred, and their futures' errors as never retrieved; the run falls
  back to the previous checkpoint, and prints none of them."""
  workdir = copy_run(stopped_run)
  data = [p for p in (workdir / 'checkpoints' / '3').rglob('*')
          if p.is_file() and '/d/' in str(p)]
  assert data
  for path in data:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  with caplog.at_level('WARNING'):
    state = loop.train_and_evaluate(tiny_run_config(**QUIET), workdir,
                                    stop_after=4)
  assert int(state.step) == 4
  assert 'step 3' in caplog.text and 'unreadable' in caplog.text
  # the abandoned reads' futures are reported when they are collected
  # ('Future exception was never retrieved', through asyncio's logger)
  gc.collect()
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop' not in err
  reports = [record.getMessage() for record in caplog.records
             if record.name == 'asyncio']
  assert not reports, reports[0][:300]
