"""One process of a two-process QAGAN-NIQE run with the 'sobel' pristine model; saves its own copy of the state, then evaluates.

    JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=I \
        python replicated_state.py WORKDIR OUT_PREFIX BUSY_WORKDIR

Used by tests/test_distributed.py. Every process first tries to train in
BUSY_WORKDIR, whose lock the test holds, and writes what it was told to
`OUT_PREFIXbusy-<I>.txt`. Every process then trains to step 2 (the
pristine model is fitted at the start, before the first step); process 0
then damages the checkpoint of step 2, and every process runs again to step
3: each must fall back to step 1, set step 2 aside and save it again. Each
process writes the leaves of its local copy of the replicated state, by
path: `OUT_PREFIXtrained-<I>.npz` at step 2 (trained from the start; a
restore would hide differences: it reads one copy for all) and
`OUT_PREFIXresumed-<I>.npz` at step 3. Last, both share an evaluation of
step 3 (tests/helpers/shared_evaluation.py: `OUT_PREFIXeval-<I>.json` and
`.npz`).
"""

import os
import pathlib
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from helpers import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from helpers import shared_evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax import run_lock  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax import train_state  # pylint: disable=g-import-not-at-top,wrong-import-position


def run_config():
  """The config of the run (QAGAN-NIQE, 'sobel' pristine model)."""
  return runs.tiny_config(
      loss__method='niqe', loss__niqe__pristine='sobel',
      loss__niqe__pristine_batches=2, data__placement='device',
      run__checkpoint_every=1, run__sample_grid=0, eval__train_metrics=())


def main(workdir: str, prefix: str, busy: str) -> None:
  jax.distributed.initialize(
      os.environ['JAX_COORDINATOR_ADDRESS'],
      int(os.environ['JAX_NUM_PROCESSES']), int(os.environ['JAX_PROCESS_ID']),
      heartbeat_timeout_seconds=10)
  config = run_config()
  try:                       # a workdir another run holds: every one refuses
    loop.train_and_evaluate(config, busy)
    refused = 'trained in the busy workdir'
  except run_lock.WorkdirBusyError as error:
    refused = str(error)
  pathlib.Path(f'{prefix}busy-{jax.process_index()}.txt').write_text(refused)
  save(loop.train_and_evaluate(config, workdir, stop_after=2),
       f'{prefix}trained-')
  multihost_utils.sync_global_devices('trained to step 2')
  if jax.process_index() == 0:
    for path in (pathlib.Path(workdir) / 'checkpoints' / '2' / 'state').rglob(
        '*'):
      if path.is_file():
        path.write_bytes(b'\0' * 7)         # truncated, garbage files
  multihost_utils.sync_global_devices('damaged step 2')
  save(loop.train_and_evaluate(config, workdir, stop_after=3),
       f'{prefix}resumed-')
  shared_evaluation.evaluate(config, workdir, f'{prefix}eval-')


def save(state, prefix: str) -> None:
  """This process's copy of `state`, as `<prefix><process>.npz`."""
  leaves = jax.tree_util.tree_flatten_with_path(train_state.host_value(state))[0]
  np.savez(f'{prefix}{jax.process_index()}.npz',
           **{jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in leaves})


if __name__ == '__main__':
  main(*sys.argv[1:])
