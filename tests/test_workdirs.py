"""A workdir belongs to one configuration and one live run: others are refused, naming why."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from helpers import runs
from helpers.locks import hold_in_another_process
from qagan_jax import loop
from qagan_jax import modes
from qagan_jax import run_lock
from qagan_jax import workdirs

QUIET = dict(run__sample_grid=0, eval__train_metrics=())   # no grids, no evaluations


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


def test_workdir_of_another_config_is_refused(trained_run, copy_run,
                                              tiny_run_config):
  workdir = copy_run(trained_run)
  with pytest.raises(workdirs.WorkdirMismatchError,
                     match=r'model.width: 4 in the workdir, 8 now'):
    loop.train_and_evaluate(tiny_run_config(model__width=8), workdir)
  # a longer run would decay its learning rates over another schedule
  with pytest.raises(workdirs.WorkdirMismatchError,
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


@pytest.mark.parametrize('damage', [
    lambda text: text[:len(text) // 2],      # cut by a full disk
    lambda text: '',                          # emptied
    lambda text: '\x00\xff' * 20,             # not text
    lambda text: '[1, 2]',                    # not an object
])
def test_a_damaged_config_json_is_named_with_what_to_do(trained_run, copy_run,
                                                        tiny_run_config,
                                                        damage):
  workdir = copy_run(trained_run)
  path = workdir / workdirs.CONFIG_FILE
  path.write_bytes(damage(path.read_text()).encode('latin-1'))
  for command in (loop.train_and_evaluate, modes.sample):
    with pytest.raises(workdirs.WorkdirConfigError,
                       match=r'config.json is damaged .*delete it'):
      command(tiny_run_config(**QUIET), workdir)


def test_an_older_config_json_without_a_field_is_read_with_its_default(
    trained_run, copy_run, tiny_run_config):
  workdir = copy_run(trained_run)
  path = workdir / workdirs.CONFIG_FILE
  older = json.loads(path.read_text())
  del older['loss']['adversarial']      # a field added after the run began
  del older['data']['stl10_resolution']
  path.write_text(json.dumps(older))
  # another value than the default it meant: refused, saying why
  with pytest.raises(workdirs.WorkdirMismatchError,
                     match=r"loss.adversarial: 'wasserstein' in the workdir "
                     r'\(absent from its config.json.*\), .hinge. now'):
    loop.train_and_evaluate(tiny_run_config(loss__adversarial='hinge',
                                            **QUIET), workdir)
  # the same: the run goes on, and config.json is completed
  assert int(loop.train_and_evaluate(tiny_run_config(**QUIET),
                                     workdir).step) == 6
  upgraded = json.loads(path.read_text())
  assert upgraded['loss']['adversarial'] == 'wasserstein'
  assert upgraded['data']['stl10_resolution'] == 48


def _can_bind_read_only(folder) -> bool:
  if not shutil.which('unshare'):
    return False
  return subprocess.run(
      ['unshare', '-rm', 'sh', '-c', f'mount --bind {folder} {folder} && '
       f'mount -o remount,bind,ro {folder}'], capture_output=True
  ).returncode == 0


def test_a_read_only_folder_in_the_workdir_is_refused_at_once(
    stopped_run, tmp_path):
  """checkpoints/ read-only inside a writable workdir (a first run under
  sudo, another user now): refused at start, naming the folder, in
  seconds (orbax's writes waited out a 300 s timeout)."""
  workdir = tmp_path / 'run'
  shutil.copytree(stopped_run, workdir)
  folder = workdir / 'checkpoints'
  if not _can_bind_read_only(folder):
    pytest.skip('needs `unshare -rm` (user and mount namespaces) to mount a '
                'read-only folder')
  flags = ' '.join(f"'{flag}'" for flag in [
      f'--config={runs.DEMO}', f'--workdir={workdir}', *runs.tiny_flags()])
  began = time.monotonic()
  result = subprocess.run(
      ['unshare', '-rm', 'sh', '-c',
       f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} '
       f'&& exec {sys.executable} -m qagan_jax.main {flags}'],
      capture_output=True, text=True, timeout=300, cwd=runs.REPO_ROOT)
  assert result.returncode == 1, result.stderr[-2000:]
  assert time.monotonic() - began < 60
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'qagan_jax: {folder} is not writable (Read-only')
  assert 'Traceback' not in result.stderr
  assert sorted(p.name for p in folder.iterdir()) == ['2', '3']


def test_the_config_of_a_run_is_its_config_json_under_the_overrides(
    tmp_path):
  """What sample and evaluate read a workdir with: its config.json (JSON's
  lists as the tuples they were), the config's value for a field the file
  lacks (an older version) and for each command-line override; a field
  the file holds that no longer exists is left out."""
  config = runs.tiny_config()
  saved = json.loads(config.to_json())
  saved['train']['num_iters'] = 1000                  # the training command's
  saved['model']['width'] = 8
  saved['eval']['metrics'] = ['swd']                  # a tuple, in JSON
  del saved['run']['progress_every']                  # an older version
  saved['run']['a_removed_field'] = 3
  (tmp_path / workdirs.CONFIG_FILE).write_text(json.dumps(saved))
  merged, differed = workdirs.config_of_run(config, tmp_path,
                                            overrides=['model.width'])
  assert merged.train.num_iters == 1000 and merged.eval.metrics == ('swd',)
  assert merged.model.width == config.model.width        # overridden
  assert merged.run.progress_every == config.run.progress_every
  assert 'a_removed_field' not in merged.run
  assert differed == [
      f'train.num_iters: 1000 in the run, {config.train.num_iters} in the '
      'config file',
      f"eval.metrics: ('swd',) in the run, {config.eval.metrics!r} in the "
      'config file']
  assert workdirs.config_of_run(config, tmp_path / 'none') == (config, [])
