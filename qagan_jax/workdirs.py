"""A run's workdir: the configuration it belongs to, and the one run that trains in it.

    <workdir>/config.json     the config the run was started with
    <workdir>/run.lock        the live run training there (run_lock.py)
    <workdir>/checkpoints/    checkpoints.py
    <workdir>/metrics.jsonl, tensorboard/, samples/, loss_curves.png
                              reporting.py
    <workdir>/eval/           the evaluate mode's reports (modes.py)

`check_config` refuses a workdir written by a config whose STRUCTURAL_FIELDS
differ (its checkpoints would not fit, or would train on another schedule)
and records the config of a new run; `hold` takes the workdir's lock for the
processes of one run.
"""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from qagan_jax import run_lock
from qagan_jax import storage

CONFIG_FILE = 'config.json'

# Fields that decide what a workdir's checkpoints are: a run may not resume
# from a workdir written with different values. train.num_iters among them:
# the learning rates decay linearly to 0 over it, so a resume with another
# value would silently train the remaining steps on another schedule
# (--stop_after ends a session early and keeps it).
STRUCTURAL_FIELDS = (
    'model.resolution', 'model.width', 'model.latent_dim',
    'model.critic_down_blocks', 'model.critic_plain_blocks',
    'loss.method', 'loss.adversarial', 'loss.niqe.pristine',
    'data.dataset', 'data.patch_size', 'data.stl10_resolution',
    'train.n_critic', 'train.num_iters',
)


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of a structurally different config."""


def structural_fields(config: ml_collections.ConfigDict) -> dict:
  """The values of STRUCTURAL_FIELDS, as a flat dict."""
  values = {}
  for path in STRUCTURAL_FIELDS:
    node = config
    for part in path.split('.'):
      node = node[part]
    values[path] = node
  return values


def saved_config(workdir: epath.Path) -> ml_collections.ConfigDict | None:
  """The config a workdir's run was started with (its config.json), or
  None for a workdir without one."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def check_config(config: ml_collections.ConfigDict,
                 workdir: epath.Path) -> None:
  """Refuses a workdir written by a config with other STRUCTURAL_FIELDS
  (WorkdirMismatchError, naming each); records the config of a new run."""
  current = structural_fields(config)
  saved = saved_config(workdir)
  if saved is not None:
    before = structural_fields(saved)
    differences = [f'{k}: {before[k]!r} in the workdir, {current[k]!r} now'
                   for k in current if before[k] != current[k]]
    if differences:
      raise WorkdirMismatchError(
          f'{workdir} holds a run of another configuration:\n  '
          + '\n  '.join(differences)
          + '\nUse another --workdir, or the same configuration to resume.')
    return
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    storage.write_text(workdir / CONFIG_FILE, config.to_json(indent=1))


def hold(workdir: epath.Path) -> run_lock.RunLock | None:
  """Process 0 takes the workdir's lock (run_lock.py), which it returns
  (None on the other processes); every process raises WorkdirBusyError if
  another run holds it."""
  lock = error = None
  if jax.process_index() == 0:
    try:
      lock = run_lock.RunLock(workdir).acquire()
    except run_lock.WorkdirBusyError as busy:
      error = busy
  if jax.process_count() > 1:
    held = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not held and error is None:
      error = run_lock.WorkdirBusyError(
          f'{workdir} is in use by another training run (process 0 names '
          'it); use another --workdir or stop that run.')
  if error is not None:
    raise error
  return lock
