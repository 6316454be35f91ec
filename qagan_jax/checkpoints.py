"""Checkpoints of a run: the train state and the input pipeline's position, with orbax.

A checkpoint holds everything a run needs to continue exactly: the
`TrainState` (parameters, optimiser states, EMA, BatchNorm statistics, RNG,
step, NIQE pristine model) and the grain iterator's state. Orbax writes each
checkpoint to a temporary folder and renames it when complete, so a run
killed while saving leaves the previous checkpoints intact; a checkpoint that
is damaged later (truncated files, a full disk) is detected on restore and
the run falls back to the one before it, with a warning. States with NaN or
inf are never saved.
"""

from __future__ import annotations

import logging
import os
import sys

import grain
import numpy as np
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from qagan_jax import errors
from qagan_jax import storage

log = logging.getLogger(__name__)


class NonFiniteStateError(errors.CheckpointError, RuntimeError):
  """The train state holds NaN or inf: training diverged."""


class DiskFullError(errors.StorageError, OSError):
  """The workdir's disk has no room for what the run must write."""


class NoCheckpointError(errors.CheckpointError, FileNotFoundError):
  """A folder without the checkpoint asked for."""


class UnreadableCheckpointError(errors.CheckpointError, ValueError):
  """No checkpoint of a folder (or not the one asked for) can be read."""


class CheckpointFolderError(errors.WorkdirError, ValueError):
  """A folder where checkpoints could be saved but not read back."""


def _megabytes(count: int) -> str:
  return f'{count / 2**20:.1f} MB'


def non_finite_leaves(tree) -> list[str]:
  """Paths of the floating leaves of `tree` that hold NaN or inf."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  floating = [(path, leaf) for path, leaf in flat
              if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)]
  if not floating:
    return []
  finite = _all_finite([leaf for _, leaf in floating])
  # a replicated result; in a multi-process run, read the local copy
  finite = jax.device_get(finite.addressable_data(0))
  return [jax.tree_util.keystr(path)
          for (path, _), ok in zip(floating, finite) if not ok]


@jax.jit
def _all_finite(leaves):
  """`[len(leaves)]` bool: whether each array is free of NaN and inf
  (compiled once per tree of shapes)."""
  return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


class _OrbaxFailedWrites(logging.Filter):
  """Drops orbax's logs of a write that failed for a full disk or because
  the checkpoints' folder was removed (a workdir deleted or moved under a
  live run, even if orbax has made the folder again since): the run
  reports either once itself."""

  def __init__(self, directory: epath.Path):
    super().__init__()
    self.directory = directory
    self.identity = _folder_identity(directory)

  def filter(self, record: logging.LogRecord) -> bool:
    if 'orbax' not in record.pathname or record.levelno < logging.WARNING:
      return True
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not (storage.mentions_out_of_space(text)
                or _folder_identity(self.directory) != self.identity)


def _folder_identity(path: epath.Path):
  """What tells a local folder from one made again at its path: (device,
  inode); None where it is missing; True for a URL that exists."""
  if storage.is_url(path):
    return path.exists() or None
  try:
    found = os.stat(path)
  except OSError:
    return None
  return found.st_dev, found.st_ino


def _drop_closed_event_loop_reports(previous):
  """A sys.unraisablehook that drops what tensorstore reports of async
  work abandoned with its event loop ("RuntimeError: Event loop is
  closed", once per read or write still in flight when a save fails or a
  damaged checkpoint is given up: hundreds of tracebacks, after the failure
  itself was handled), and of such work still running when the interpreter
  exits (an ImportError: "Python is likely shutting down"); passes
  everything else to `previous`."""

  def hook(unraisable):
    text = str(unraisable.exc_value)
    if ((unraisable.exc_type is RuntimeError
         and text == 'Event loop is closed')
        or (issubclass(unraisable.exc_type, ImportError)
            and 'Python is likely shutting down' in text)):
      return
    previous(unraisable)

  hook.qagan_jax_event_loop_filter = True
  return hook


class _AbandonedReads(logging.Filter):
  """Drops asyncio's reports of tensorstore reads and writes whose error no
  one retrieved ("Future exception was never retrieved", logged when the
  future is collected, seconds after a damaged checkpoint was given up or
  a save failed: the run has reported either itself)."""

  def filter(self, record: logging.LogRecord) -> bool:
    first_line = record.getMessage().split('\n', 1)[0]
    if not first_line.endswith('exception was never retrieved'):
      return True
    error = record.exc_info[1] if record.exc_info else None
    # the future's repr names orbax's coroutine; tensorstore's errors name
    # their spec or database
    text = f'{record.getMessage()} {error}'
    return not any(word in text for word in ('tensorstore', 'orbax', 'OCDBT'))


_ABANDONED_READS = _AbandonedReads()


def _quiet_abandoned_async_work() -> None:
  """Installs `_drop_closed_event_loop_reports` and `_AbandonedReads` for
  the process, once (the reports arrive from tensorstore's threads and the
  garbage collector until long after the operation that abandoned
  them)."""
  if not getattr(sys.unraisablehook, 'qagan_jax_event_loop_filter', False):
    sys.unraisablehook = _drop_closed_event_loop_reports(sys.unraisablehook)
  asyncio_log = logging.getLogger('asyncio')
  if _ABANDONED_READS not in asyncio_log.filters:
    asyncio_log.addFilter(_ABANDONED_READS)


# Passes over the list of checkpoints a restore makes (see `restore`).
_RESTORE_PASSES = 3


class Checkpointer:
  """Saves and restores (state, data iterator) under `directory` (a local
  path or a URL of qagan_jax.storage)."""

  def __init__(self, directory: str | os.PathLike, keep: int = 3,
               training: bool = False):
    """`training`: for the run that trains here (it holds the workdir's
    lock): removes the partial checkpoints of a run killed while saving,
    and keeps the reports of a save that fails for a full disk to one
    message (`disk_full`)."""
    # orbax wants absolute paths
    self.directory = storage.workdir_path(directory)
    problem = storage.pattern_characters_problem(self.directory)
    if problem:                  # refused, rather than saved unreadable
      raise CheckpointFolderError(problem)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=training),
        item_names=('state', 'data'))
    self._saving = None      # the step being written in the background
    self._training = training
    _quiet_abandoned_async_work()
    self._failed_writes_filter = (_OrbaxFailedWrites(self.directory)
                                  if training else None)
    if training:
      logging.getLogger('absl').addFilter(self._failed_writes_filter)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None) -> None:
    """Saves a checkpoint (in the background); refuses non-finite states.

    `data_iterator`: the host input's position (anything with grain's
    `get_state()`), or None when the data need none (device placement:
    the step number determines the batches)."""
    bad = non_finite_leaves(state)
    if bad:
      raise NonFiniteStateError(
          f'the train state holds NaN or inf at step {step} (in '
          f'{", ".join(bad[:4])}{" ..." if len(bad) > 4 else ""}); it was not '
          'saved, and earlier checkpoints are intact.')
    self.wait()     # the previous save, whose room the check below counts
    self._check_room(step, state)
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      self.manager.save(step, force=True, args=ocp.args.Composite(**items))
    except Exception as error:  # pylint: disable=broad-except
      if storage.is_out_of_space(error):
        raise self.disk_full(f'the checkpoint of step {step}',
                             self._room_needed(state), step) from None
      raise
    self._saving = step

  def _room_needed(self, state=None) -> int:
    """Bytes a new checkpoint takes: the newest one's size on disk, or
    before there is one the state's own size and a tenth for metadata."""
    self.manager.reload()       # the complete ones, as on disk
    steps = self.manager.all_steps()
    on_disk = (storage.folder_bytes(self.directory / str(max(steps)))
               if steps else 0)
    in_memory = 0 if state is None else sum(
        np.dtype(leaf.dtype).itemsize * int(np.prod(leaf.shape))
        for leaf in jax.tree_util.tree_leaves(state))
    if on_disk:
      return on_disk + 2**16
    return int(in_memory * 1.1) + 2**16

  def _check_room(self, step: int, state) -> None:
    """Raises DiskFullError, before writing anything, where a local disk
    has no room for the checkpoint (on every process if one has none)."""
    free = storage.free_bytes(self.directory)
    needed = self._room_needed(state) if free is not None else 0
    room = free is None or free >= needed
    if jax.process_count() > 1:
      room = bool(np.min(multihost_utils.process_allgather(np.int32(room))))
    if not room:
      raise self.disk_full(f'the checkpoint of step {step}', needed, step)

  def disk_full(self, what: str, needed: int | None = None,
                step: int | None = None) -> DiskFullError:
    """The error of a full disk: `what` could not be written (the
    checkpoint of `step`, or another file), and what to free."""
    free = storage.free_bytes(self.directory) or 0
    needed = self._room_needed() if needed is None else needed
    self.manager.reload()
    steps = [s for s in self.manager.all_steps() if step is None or s < step]
    newest = (f'the newest checkpoint, of step {max(steps)}, is intact'
              if steps else 'there is no earlier checkpoint')
    free_up = (f'Free at least {_megabytes(needed - free)} there'
               if needed > free else 'Free space there')
    return DiskFullError(
        f'the disk of {self.directory.parent} is full: could not write '
        f'{what} ({_megabytes(free)} free; a checkpoint of this run needs '
        f'about {_megabytes(needed)}). Nothing else was lost: {newest}. '
        f'{free_up} (or lower run.keep_checkpoints) and run the same command '
        'to resume.')

  def abandon(self) -> None:
    """After a failed save: stops orbax's threads without raising, and
    removes the partial checkpoints."""
    for finish in (self.manager.wait_until_finished, self.manager.close):
      try:
        finish()
      except Exception:  # pylint: disable=broad-except
        pass   # the failure already reported
    self.discard_partial()
    self._remove_log_filter()

  def discard_partial(self) -> None:
    """Removes the partial checkpoints of saves that failed (process 0)."""
    if jax.process_index() != 0 or not self.directory.exists():
      return
    for path in self.directory.iterdir():
      if '.orbax-checkpoint-tmp' in path.name:
        path.rmtree()

  def restore(self, abstract_state, data_iterator=None,
              step: int | None = None):
    """The newest readable checkpoint (or `step`), as (state, step).

    `abstract_state` gives the structure, shapes, dtypes and shardings (e.g.
    `jax.eval_shape` of the initial state); a data iterator, when given, is
    set to the saved position in place (sampling needs none, and so no
    dataset). Damaged checkpoints are skipped with a warning; a training
    checkpointer moves them to `<directory>.damaged/`, so that the run can
    save those steps again (a reader, sample or evaluate, leaves them: they
    may be a live run's, being replaced). Returns None when there is no
    checkpoint.
    """
    self.manager.wait_until_finished()
    if step is not None and step not in self.all_steps():
      raise NoCheckpointError(
          f'no checkpoint of step {step} in {self.directory}; there are '
          f'{self.all_steps() or "none"}.')
    tried, damaged = [], []
    # A run that trains in this folder meanwhile may remove the checkpoint
    # being read (its rotation) and write a newer one: the steps are listed
    # again after each pass, and the new ones tried.
    for _ in range(_RESTORE_PASSES if step is None else 1):
      self.manager.reload()
      candidates = ([step] if step is not None else
                    [s for s in self.all_steps()[::-1] if s not in tried])
      if not candidates:
        break
      for candidate in candidates:
        tried.append(candidate)
        found = self._restore_step(candidate, abstract_state, data_iterator,
                                   explain=step is None)
        if found is None:
          damaged.append(candidate)
          continue
        if self._training:      # a reader never moves a training run's files
          self._set_aside(damaged)
        return found, candidate
    if tried:
      if self._training:
        advice = (f'move {self.directory} away to start afresh, or train in '
                  'another --workdir')
      else:
        advice = ('if a run is training there, run this again after its next '
                  'checkpoint; otherwise they are damaged (resuming the '
                  'training sets them aside)')
      raise UnreadableCheckpointError(
          f'no readable checkpoint in {self.directory} (tried steps '
          f'{tried}); {advice}.')
    return None

  def _restore_step(self, candidate, abstract_state, data_iterator,
                    explain: bool):
    """The state of one checkpoint, or None (with a warning) where it is
    unreadable or not finite; `explain=False` raises instead."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      if (self.directory / str(candidate) / 'data').is_dir():
        items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
      else:
        log.warning(
            'The checkpoint of step %d holds no input position (it was '
            'written with the data on the devices); the host input starts '
            'a fresh pass, so the batches differ from an uninterrupted '
            'run.', candidate)
    try:
      restored = self.manager.restore(candidate,
                                      args=ocp.args.Composite(**items))
    except Exception as error:  # orbax raises many types for damaged files
      if not explain:
        raise UnreadableCheckpointError(
            f'the checkpoint of step {candidate} in {self.directory} is '
            f'unreadable: {error}') from error
      log.warning('The checkpoint of step %d in %s is unreadable (%s: %s); '
                  'falling back to the previous one.', candidate,
                  self.directory, type(error).__name__,
                  (str(error).splitlines() or [''])[0][:200])
      return None
    bad = non_finite_leaves(restored.state)
    if bad:
      log.warning('The checkpoint of step %d holds NaN or inf (%s); falling '
                  'back to the previous one.', candidate, bad[0])
      return None
    return restored.state

  def _set_aside(self, steps) -> None:
    """Moves damaged checkpoints out of the manager's way, keeping them.

    Process 0 moves them; in a multi-process run every process then waits
    for it and reloads its list of steps, so that none saves or restores
    by a stale list. Every process calls this after each restore (with the
    same `steps`: they read the same files)."""
    several = jax.process_count() > 1
    if steps and jax.process_index() == 0:
      aside = self.directory.parent / (self.directory.name + '.damaged')
      for step in steps:
        target = aside / str(step)
        storage.move_tree(self.directory / str(step), target)
        log.warning('Moved the damaged checkpoint of step %d to %s.', step,
                    target)
    if several:
      multihost_utils.sync_global_devices('qagan_jax: damaged checkpoints')
    if steps:
      self.manager.reload()

  def wait(self) -> None:
    """Waits for the save in progress; DiskFullError if the disk filled."""
    try:
      self.manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-except
      if storage.is_out_of_space(error):
        step, self._saving = self._saving, None
        raise self.disk_full(f'the checkpoint of step {step}',
                             step=step) from None
      raise

  def close(self) -> None:
    self.manager.close()
    self._remove_log_filter()

  def _remove_log_filter(self) -> None:
    if self._failed_writes_filter is not None:
      logging.getLogger('absl').removeFilter(self._failed_writes_filter)
