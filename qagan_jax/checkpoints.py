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

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from qagan_jax import storage

log = logging.getLogger(__name__)


class NonFiniteStateError(RuntimeError):
  """The train state holds NaN or inf: training diverged."""


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


class Checkpointer:
  """Saves and restores (state, data iterator) under `directory` (a local
  path or a URL of qagan_jax.storage)."""

  def __init__(self, directory: str | os.PathLike, keep: int = 3):
    # orbax wants absolute paths
    self.directory = storage.workdir_path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=('state', 'data'))

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
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, force=True, args=ocp.args.Composite(**items))

  def restore(self, abstract_state, data_iterator=None,
              step: int | None = None):
    """The newest readable checkpoint (or `step`), as (state, step).

    `abstract_state` gives the structure, shapes, dtypes and shardings (e.g.
    `jax.eval_shape` of the initial state); a data iterator, when given, is
    set to the saved position in place (sampling needs none, and so no
    dataset). Damaged checkpoints are skipped with a warning
    and moved to `<directory>.damaged/`, so that the run can save those steps
    again. Returns None when there is no checkpoint.
    """
    self.manager.wait_until_finished()
    steps = [step] if step is not None else self.all_steps()[::-1]
    if step is not None and step not in self.all_steps():
      raise FileNotFoundError(
          f'no checkpoint of step {step} in {self.directory}; there are '
          f'{self.all_steps() or "none"}.')
    damaged = []
    for candidate in steps:
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
        if step is not None:
          raise ValueError(f'the checkpoint of step {step} in '
                           f'{self.directory} is unreadable: {error}') from error
        log.warning('The checkpoint of step %d in %s is unreadable (%s: %s); '
                    'falling back to the previous one.', candidate,
                    self.directory, type(error).__name__,
                    str(error).splitlines()[0][:200])
        damaged.append(candidate)
        continue
      bad = non_finite_leaves(restored.state)
      if bad:
        log.warning('The checkpoint of step %d holds NaN or inf (%s); falling '
                    'back to the previous one.', candidate, bad[0])
        damaged.append(candidate)
        continue
      self._set_aside(damaged)
      return restored.state, candidate
    if steps:
      raise ValueError(f'no readable checkpoint in {self.directory} '
                       f'(tried steps {steps}); move the folder away to start '
                       'afresh.')
    return None

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
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
