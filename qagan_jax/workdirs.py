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

from qagan_jax import errors
from qagan_jax import input_pipeline
from qagan_jax import run_lock
from qagan_jax import storage
from qagan_jax import train_state

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


class WorkdirMismatchError(errors.WorkdirError, ValueError):
  """The workdir holds a run of a structurally different config."""


class WorkdirConfigError(errors.WorkdirError, ValueError):
  """The workdir's config.json cannot be read."""


class WorkdirRemovedError(errors.WorkdirError, FileNotFoundError):
  """The workdir was removed (or moved) while its run trained."""

  @classmethod
  def of(cls, workdir) -> WorkdirRemovedError:
    return cls(f'{workdir} was removed (or moved) while the run trained, its '
               'checkpoints with it; nothing more is written there. Put the '
               'folder back to resume from its newest checkpoint, or run the '
               'command again to start afresh.')


_ABSENT = object()


def _field(config, path: str):
  """The value at a dotted `path` of `config`, or _ABSENT."""
  node = config
  for part in path.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return _ABSENT
    node = node[part]
  return node


def structural_fields(config: ml_collections.ConfigDict) -> dict:
  """The values of STRUCTURAL_FIELDS, as a flat dict."""
  return {path: _field(config, path) for path in STRUCTURAL_FIELDS}


def _defaults() -> ml_collections.ConfigDict:
  """The defaults of the sections that hold STRUCTURAL_FIELDS: what a
  config.json written before a field existed meant by its absence."""
  config = train_state.default_config()
  config.data = input_pipeline.default_config()
  return config


def saved_config(workdir: epath.Path) -> ml_collections.ConfigDict | None:
  """The config a workdir's run was started with (its config.json), or
  None for a workdir without one. Raises WorkdirConfigError, saying what
  to do, when the file is damaged (truncated, empty, not text)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    data = json.loads(path.read_bytes().decode('utf-8'))
    if not isinstance(data, dict):
      raise ValueError(f'a JSON {type(data).__name__}, not an object')
  except (UnicodeDecodeError, ValueError) as error:
    raise WorkdirConfigError(
        f'{path} is damaged ({str(error).splitlines()[0][:120]}). It records '
        f'the configuration of the run in {workdir}: put back a copy if you '
        'have one; otherwise delete it, and the next command records its own '
        "configuration there (a checkpoint of another model's shape then "
        'fails to load, naming the difference).') from None
  return ml_collections.ConfigDict(data)


def config_of_run(config: ml_collections.ConfigDict, workdir,
                  overrides=(), required: bool = False
                  ) -> tuple[ml_collections.ConfigDict, list]:
  """The configuration to read `workdir`'s run with (sample, evaluate):
  its config.json, so that the training command's overrides need not be
  repeated; `config`'s value where the file lacks a field (an older
  version) and for the dotted paths in `overrides` (the command line's,
  which `check_config` then compares with the run where they are
  structural). Returns (that config, the fields in which `config` differed
  from the run without an override, as 'path: run, config', the
  STRUCTURAL_FIELDS first). `config` as it is when the workdir has no
  config.json, unless `required` (`config` holds only defaults: no config
  file was given), which raises ConfigurationError then."""
  saved = saved_config(storage.workdir_path(workdir))
  if saved is None and required:
    raise errors.ConfigurationError(
        f'--workdir={workdir} holds no config.json to read its run with (no '
        'run was trained there): pass --config=<the config of its run>.')
  if saved is None:
    return config, []
  merged = config.copy_and_resolve_references()
  overridden = set(overrides)
  differed = []

  def copy(node, values, prefix):
    for key, value in values.items():
      path = f'{prefix}{key}'
      if key not in node or path in overridden:
        continue            # a field since removed; the command line's
      current = node[key]
      if isinstance(current, ml_collections.ConfigDict):
        if isinstance(value, dict):
          copy(current, value, path + '.')
        continue
      if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)          # JSON keeps tuples as lists
      if value != current:
        differed.append(f'{path}: {value!r} in the run, {current!r} in the '
                        'config file')
        _set(merged, path, value)      # a field it has: no unlocking

  copy(config, saved.to_dict(), '')
  # what changes the model or the data first
  differed.sort(key=lambda d: d.split(':')[0] not in STRUCTURAL_FIELDS)
  return merged, differed


def _set(config, path: str, value) -> None:
  *parents, name = path.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[name] = value


def check_config(config: ml_collections.ConfigDict,
                 workdir: epath.Path) -> None:
  """Refuses a workdir written by a config with other STRUCTURAL_FIELDS
  (WorkdirMismatchError, naming each); records the config of a new run.
  A config.json of an older version, which lacks a field added since, is
  read with that field's default (what its absence meant) and, where the
  current config agrees, completed in place."""
  current = structural_fields(config)
  saved = saved_config(workdir)
  if saved is not None:
    defaults = structural_fields(_defaults())
    before = structural_fields(saved)
    absent = [k for k, v in before.items() if v is _ABSENT]
    before.update({k: defaults[k] for k in absent})
    differences = [
        f'{k}: {before[k]!r} in the workdir'
        + (' (absent from its config.json, of an older version: the '
           'default then)' if k in absent else '') + f', {current[k]!r} now'
        for k in current if before[k] != current[k]]
    if differences:
      raise WorkdirMismatchError(
          f'{workdir} holds a run of another configuration:\n  '
          + '\n  '.join(differences)
          + '\nUse another --workdir, or the same configuration to resume.')
    if absent and jax.process_index() == 0:     # upgraded in place
      saved = saved.to_dict()
      for path in absent:
        *sections, name = path.split('.')
        node = saved
        for section in sections:
          node = node.setdefault(section, {})
        node[name] = defaults[path]
      storage.write_text(workdir / CONFIG_FILE, json.dumps(saved, indent=1))
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
