"""A workdir belongs to one configuration and one live run: others are refused, naming why."""

import pytest

from helpers.locks import hold_in_another_process
from qagan_jax import loop
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
