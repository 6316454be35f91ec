"""A training run, built and ready for its first step: `build_run(config, workdir) -> Run`.

`build_run` does everything a run does before it trains: it finds the
data (a missing dataset stops it before the workdir is made), chooses
where the training images live (device_data.choose_placement), takes the
workdir's lock, checks the workdir's config (workdirs.py), builds the
models and the sharded step, and resumes from the newest readable
checkpoint or starts afresh (the NIQE pristine model first, for
QAGAN-NIQE). The `Run` it returns holds all of it, the run's compiled
programs included: the training loop (loop.py), the preflight check
(preflight.py) and the benchmarks (experiments/) start from one, and
`close()` it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from qagan_jax import checkpoints
from qagan_jax import compilation
from qagan_jax import device_data
from qagan_jax import input_pipeline
from qagan_jax import run_lock
from qagan_jax import sampling
from qagan_jax import storage
from qagan_jax import train
from qagan_jax import train_state
from qagan_jax import workdirs
from qagan_jax.evaluation import evaluator as evaluator_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
  """Everything a training run builds before its first step."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  setup: train_state.Setup
  mesh: jax.sharding.Mesh
  checkpointer: checkpoints.Checkpointer
  state: train_state.TrainState
  start: int                      # the step it resumes after (0: a new run)
  step_fn: object                 # jitted (state, data) -> (state, metrics);
                                  # None for a finished run
  resident: jax.Array | None      # 'device': the dataset on the devices
  feed: input_pipeline.Prefetcher | None   # 'host': the batches
  lock: run_lock.RunLock | None   # the workdir's (process 0's)

  @property
  def placement(self) -> str:
    return 'host' if self.resident is None else 'device'

  @property
  def finished(self) -> bool:
    """Whether the run has done all of train.num_iters."""
    return self.start >= self.config.train.num_iters

  def step_input(self):
    """The step's data argument: the resident dataset, or the next batches."""
    return self.resident if self.feed is None else next(self.feed)

  def input_shape(self) -> jax.ShapeDtypeStruct:
    """The step's data argument as a shape, for compiling ahead."""
    if self.feed is not None:
      return self.feed.shape
    return jax.ShapeDtypeStruct(self.resident.shape, self.resident.dtype,
                                sharding=self.resident.sharding)

  def data_position(self):
    """What a checkpoint holds of the data: the host iterator's position
    (None for the device placement: the step number says it all)."""
    return None if self.feed is None else self.feed.position()

  def abstract_state(self) -> train_state.TrainState:
    """The state's structure, shapes and shardings (for a restore)."""
    return train_state.abstract_state(self.setup, self.mesh, self.config.seed)

  @functools.cached_property
  def sampler(self) -> sampling.Sampler:
    """The run's EMA-generator sampler (compiled on first use)."""
    return sampling.Sampler(self.setup,
                            self.config.run.standing_stats_samples)

  @functools.cached_property
  def evaluator(self) -> evaluator_lib.Evaluator | None:
    """The evaluator of eval.train_metrics on run.eval_samples samples
    (None when the config evaluates nothing during training)."""
    cfg = self.config
    if not cfg.eval.train_metrics:
      return None
    return evaluator_lib.Evaluator(
        cfg, cfg.eval.train_metrics, cfg.run.eval_samples,
        cache_dir=evaluator_lib.reference_cache_dir(cfg.eval))

  def save(self, step: int, state: train_state.TrainState) -> None:
    """Saves a checkpoint of `state` after `step` (with the data's
    position) if the run still holds its workdir; raises `lost_workdir()`'s
    error otherwise, on every process (orbax would not notice: it makes
    the folders it writes to)."""
    lost = self.lost_workdir()
    if jax.process_count() > 1:    # process 0 holds the lock for all
      kinds = (None, workdirs.WorkdirRemovedError, run_lock.WorkdirBusyError)
      kind = kinds[int(multihost_utils.broadcast_one_to_all(np.int32(
          kinds.index(type(lost) if lost is not None else None))))]
      if lost is None and kind is workdirs.WorkdirRemovedError:
        lost = kind.of(self.workdir)
      elif lost is None and kind is not None:
        lost = kind(f'process 0 found {self.workdir} taken over by another '
                    'run; this process stops with it.')
    if lost is not None:
      raise lost
    self.checkpointer.save(step, state, self.data_position())

  def lost_workdir(self) -> Exception | None:
    """Why this run no longer holds its workdir, as the error to stop
    with: WorkdirRemovedError once the workdir or its lock was removed (or
    moved), WorkdirBusyError once another run took the lock; None while it
    holds it (and on processes other than 0, which hold no lock)."""
    if self.lock is None:
      return None
    holder = self.lock.holder_now()
    if holder is None or holder == self.lock.holder:
      return None    # unreadable (being rewritten on some stores): judged later
    if holder == 'removed':
      return workdirs.WorkdirRemovedError.of(self.workdir)
    return run_lock.WorkdirBusyError(
        f'another run ({holder.describe()}) took over {self.workdir} while '
        "this run trained (it found this run's lock not renewed); this run "
        'stops without writing there again. One run per workdir: stop one of '
        'them.')

  def close(self, finish_saves: bool = True):
    """Stops the input; finishes the checkpoints being written, unless
    another process is lost (its part of the save would never come) or a
    save failed (its partial checkpoint is removed); releases the lock."""
    if self.feed is not None:
      self.feed.close()
    try:
      if finish_saves:
        try:
          self.checkpointer.wait()
        except checkpoints.DiskFullError:
          self.checkpointer.abandon()
          raise
        self.checkpointer.close()
      else:
        self.checkpointer.abandon()
    finally:
      if self.lock is not None:
        self.lock.release()


def build_run(config: ml_collections.ConfigDict, workdir) -> Run:
  """The run of `config` (validated, qagan_jax.config.validate) in
  `workdir` (a local path or URL), resumed from its newest readable
  checkpoint or new; nothing trained yet. The caller closes it."""
  compilation.use_persistent_cache(config.run.compilation_cache)
  workdir = storage.workdir_path(workdir)
  problem = storage.unwritable_part(workdir)
  if problem:
    raise storage.UnwritableError(
        f'{problem}; the run writes there. Give yourself write access (after '
        f'a run under sudo: sudo chown -R "$USER" {workdir}) or use another '
        '--workdir.')
  # a missing dataset stops the run before the workdir is made
  source = input_pipeline.data_source(config.data, 'train')
  mesh = train.make_mesh()
  placement, why = device_data.choose_placement(
      config.data.placement, config.data.device_budget, len(source),
      config.model.resolution, mesh)
  n_critic, batch = config.train.n_critic, config.train.batch_size
  # both check the data against the batches before anything is made
  spec = loader = None
  if placement == 'device':
    spec = device_data.DrawSpec.for_mesh(
        len(source), mesh, n_critic=n_critic, batch_size=batch,
        flip=input_pipeline.random_flip(config.data))
  else:
    loader = input_pipeline.create_loader(config.data, batch,
                                          seed=config.seed, source=source)
  lock = workdirs.hold(workdir)
  try:
    workdirs.check_config(config, workdir)
    log.info('Training data on the %s: %s.', placement + 's'
             if placement == 'device' else placement, why)
    return _assemble(config, workdir, lock, source, mesh, spec, loader)
  except BaseException:
    if lock is not None:
      lock.release()
    raise


def _assemble(cfg, workdir, lock, source, mesh, spec, loader) -> Run:
  """The rest of `build_run`, with the workdir held: state and step."""
  n_critic, batch = cfg.train.n_critic, cfg.train.batch_size
  setup = train_state.build(cfg)
  iterator = None if loader is None else iter(loader)
  checkpointer = checkpoints.Checkpointer(workdir / 'checkpoints',
                                          cfg.run.keep_checkpoints,
                                          training=True)
  restored = checkpointer.restore(
      train_state.abstract_state(setup, mesh, cfg.seed), iterator)
  if restored is not None:
    state, start = restored
    if start >= cfg.train.num_iters:    # finished: nothing to load or compile
      return Run(cfg, workdir, setup, mesh, checkpointer, state, start,
                 step_fn=None, resident=None, feed=None, lock=lock)
    log.info('Resuming from the checkpoint of step %d in %s.', start, workdir)
  else:
    state, start = _initial_state(cfg, setup, mesh, source), 0
  resident = feed = draw = None
  if spec is not None:
    began = time.perf_counter()
    resident = device_data.load(cfg.data, mesh, spec, source=source)
    draw = functools.partial(device_data.draw, spec=spec)
    log.info('Loaded %d training images onto the devices in %.1f s.',
             spec.num_records, time.perf_counter() - began)
  else:
    feed = input_pipeline.Prefetcher(
        iterator, n_critic, train.batch_sharding(mesh),
        (n_critic, batch) + (cfg.model.resolution,) * 2 + (3,))
  step_fn = train.make_train_step(
      setup, mesh, batch_size=batch,
      generator_batch_size=cfg.train.generator_batch_size, draw=draw)
  return Run(cfg, workdir, setup, mesh, checkpointer, state, start, step_fn,
             resident, feed, lock)


def _initial_state(cfg, setup, mesh, source) -> train_state.TrainState:
  """A new run's state, replicated over `mesh`: fresh parameters, and the
  NIQE pristine model it starts from."""
  sobel_batches = None
  if setup.pristine_source == 'sobel':
    # its own stream (the training one is untouched), the same global
    # batches on every process, as in a one-process run
    sobel_batches = map(input_pipeline.to_unit_range,
                        input_pipeline.create_loader(
                            cfg.data, cfg.train.batch_size, seed=cfg.seed + 1,
                            source=source, process_index=0, process_count=1))
  pristine = train_state.initial_pristine(cfg, setup, sobel_batches)
  state = train_state.create_train_state(setup, jax.random.PRNGKey(cfg.seed),
                                   pristine)
  return train_state.replicate(state, mesh)
