"""The training loop and the other things a run does: resume, log, sample, evaluate, stop.

`train_and_evaluate(config, workdir)` is what `python -m qagan_jax.main`
runs. It resumes from the newest readable checkpoint in the workdir (state,
RNG and the input pipeline's position), so an interrupted run continues
exactly; SIGINT and SIGTERM (a preempted TPU VM) save a checkpoint and
stop cleanly (in a multi-process run, every process after the same step).
It refuses a workdir written by a structurally different config, and
stops, without saving, when the state stops being finite.
`sample` and `evaluate_run` are the sample and evaluate modes.

The step itself (pure, sharded) is in train.py; this module does the I/O.
Configs come validated from the caller (main.py validates with
qagan_jax.config, which builds on this module's neighbours, never the
other way round).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import checkpoints
from qagan_jax import compilation
from qagan_jax import device_data
from qagan_jax import input_pipeline
from qagan_jax import reporting
from qagan_jax import run_lock
from qagan_jax import storage
from qagan_jax import train
from qagan_jax.evaluation import report

log = logging.getLogger(__name__)
CONFIG_FILE = 'config.json'
SAMPLE_SEED = 1234       # fixed latents of the sample grids
STANDING_SEED = 4321     # latents for the EMA generator's BatchNorm statistics


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


# --- the workdir's config -------------------------------------------------------------


def check_workdir(config: ml_collections.ConfigDict,
                  workdir: epath.Path) -> None:
  """Refuses a workdir written by a config with other STRUCTURAL_FIELDS;
  records the config of a new run."""
  path = workdir / CONFIG_FILE
  current = structural_fields(config)
  if path.exists():
    saved = json.loads(path.read_text())
    before = structural_fields(ml_collections.ConfigDict(saved))
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
    storage.write_text(path, config.to_json(indent=1))


# --- sampling -----------------------------------------------------------------------


class Sampler:
  """The EMA generator of a state, on this process's devices.

  BatchNorm uses standing statistics: the batch statistics of the EMA
  generator itself on `num_standing` fixed latents, so that a sample
  depends only on its own latent (the running averages follow the live
  generator, not its average). `prepare(state)` computes them once (per
  evaluation or grid) and places the generator on this process's devices;
  `images(prepared, z)` then splits the latents over those devices. Every
  process can sample latents of its own (the evaluation's shares): nothing
  here communicates with other processes.
  """

  def __init__(self, setup: train.Setup, num_standing: int):
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(mesh, P())
    self._split = NamedSharding(mesh, P('data'))
    self._devices = len(devices)
    generator = setup.generator.clone(axis_name=None)
    standing = generator.clone(bn_momentum=0.0)
    self._standing_z = jax.random.normal(jax.random.PRNGKey(STANDING_SEED),
                                         (num_standing, setup.latent_dim))

    @compilation.jit
    def standing_stats(params, batch_stats, z):
      _, stats = standing.apply({'params': params, 'batch_stats': batch_stats},
                                z, train=True, mutable=['batch_stats'])
      return stats['batch_stats']

    @compilation.jit
    def apply(params, stats, z):
      return generator.apply({'params': params, 'batch_stats': stats}, z,
                             train=False)

    self._standing_stats, self._apply = standing_stats, apply

  def prepare(self, state: train.TrainState):
    """(params, standing statistics) of `state`'s EMA generator, replicated
    on this process's devices."""
    params, batch_stats = jax.device_put(
        train.host_value((state.gen_ema_params, state.gen_batch_stats)),
        self._replicated)
    z = jax.device_put(self._standing_z, self._replicated)
    return params, self._standing_stats(params, batch_stats, z)

  def images(self, prepared, z) -> np.ndarray:
    """Samples `[n, R, R, 3]` in [-1, 1] of latents `z [n, latent_dim]`."""
    z = np.asarray(z)
    n = len(z)
    pad = -n % self._devices        # every device gets an equal share
    if pad:
      z = np.concatenate([z, np.zeros((pad,) + z.shape[1:], z.dtype)])
    out = self._apply(*prepared, jax.device_put(z, self._split))
    return np.asarray(jax.device_get(out))[:n]

  def __call__(self, state, z) -> np.ndarray:
    """Samples of `z` from `state` (standing statistics computed afresh)."""
    return self.images(self.prepare(state), z)


@functools.lru_cache(maxsize=8)
def make_sampler(setup: train.Setup, num_standing: int) -> Sampler:
  """The Sampler of (setup, num_standing), built once a process."""
  return Sampler(setup, num_standing)


def generate(sampler: Sampler, state, num: int, seed: int, latent_dim: int,
             batch: int = 500, as_uint8: bool = False,
             shared: bool = False, prepared=None) -> np.ndarray:
  """`num` samples `[num, R, R, 3]` from latents of `seed`: float32 in
  [-1, 1], or uint8 in [0, 255] (rounded as saved images) if `as_uint8`.
  With `shared`, only this process's share of them (`report.share`),
  padded to the same number of rows on every process (`report.gather`
  puts them together). Raises report.NonFiniteSamplesError, counting them,
  if any holds NaN/inf (on every process, if any process's share does,
  with `shared`). `prepared`: `sampler.prepare(state)`, if already made."""
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, latent_dim))
  start, stop = report.share(num) if shared else (0, num)
  convert = input_pipeline.to_uint8 if as_uint8 else np.asarray
  if prepared is None:
    prepared = sampler.prepare(state)    # standing statistics: once
  chunks, bad = [], 0
  for i in range(start, stop, batch):
    images = sampler.images(prepared, z[i:min(i + batch, stop)])
    bad += report.count_non_finite(images)   # before uint8 hides NaN
    if not bad:
      chunks.append(convert(images))
  if shared and jax.process_count() > 1:
    bad = int(np.sum(multihost_utils.process_allgather(np.int32(bad))))
  if bad:
    raise report.NonFiniteSamplesError(bad, num)
  if shared:     # rows beyond `num` on the last processes: padding
    if not chunks:     # no share at all (fewer samples than processes)
      chunks.append(convert(sampler.images(prepared, z[:1]))[:0])
    return report.padded(np.concatenate(chunks), report.share_size(num))
  return np.concatenate(chunks)


def evaluate_samples(evaluator: report.Evaluator, sampler: Sampler, state,
                     num: int, latent_dim: int,
                     prepared=None) -> dict[str, float]:
  """`evaluator`'s metrics of `num` samples of the evaluation latents
  (report.SEED), shared out: each process generates its share on its own
  devices and extracts what the metrics need of it (Inception outputs,
  NIQE features); every process then scores all of them together. The
  samples are rounded to uint8, as saved images (and 4x smaller). Samples
  are generated in chunks of eval.batch_size, as they are measured: the
  same programs whatever the number of processes. `prepared` as for
  `generate`."""
  mine = generate(sampler, state, num, report.SEED, latent_dim,
                  batch=evaluator.config.eval.batch_size, as_uint8=True,
                  shared=True, prepared=prepared)
  return evaluator.score(report.gather(evaluator.extract(mine), num))


# --- interruption -------------------------------------------------------------------


class _StopRequests:
  """Turns SIGINT / SIGTERM into a request to save and stop.

  One process: the request is this process's own, at the step it arrives.
  Several processes (jax.distributed): SIGTERM is left to the coordination
  service's preemption notifier, which tells every process, and
  `should_stop(step)` turns true on all of them at the same step (jax's
  preemption sync point), so that they save one checkpoint together; SIGINT
  is passed on to that notifier as a SIGTERM. A second signal stops at once.
  """

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    self._shared = (jax.process_count() > 1 and
                    jax.config.jax_enable_preemption_service)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if self._shared else (signal.SIGINT,
                                                         signal.SIGTERM)
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:     # a second signal: stop at once
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signal_name = signal.Signals(signum).name
    if self._shared:                     # to the preemption notifier
      signal.raise_signal(signal.SIGTERM)

  def should_stop(self, step: int) -> str | None:
    """The reason to stop after `step` (a signal's name), or None. Called
    at every step, by every process with the same steps."""
    if self._shared:
      if multihost_utils.reached_preemption_sync_point(step):
        return self.signal_name or 'SIGTERM'
      return None
    return self.signal_name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


# --- the run ---------------------------------------------------------------------------


class PeerLostError(RuntimeError):
  """A collective with the other processes of a multi-process run failed."""


@dataclasses.dataclass
class _Run:
  """Everything a run builds before its first step."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  setup: train.Setup
  mesh: jax.sharding.Mesh
  checkpointer: checkpoints.Checkpointer
  state: train.TrainState
  start: int
  step_fn: object                 # (state, data) -> (state, metrics)
  resident: jax.Array | None      # 'device': the dataset on the devices
  feed: input_pipeline.Prefetcher | None   # 'host': the batches
  lock: run_lock.RunLock | None   # the workdir's (process 0's)

  @property
  def placement(self) -> str:
    return 'host' if self.resident is None else 'device'

  def step_input(self):
    """The step's data argument: the resident dataset, or the next batches."""
    return self.resident if self.feed is None else next(self.feed)

  def input_shape(self) -> jax.ShapeDtypeStruct:
    if self.feed is not None:
      return self.feed.shape
    return jax.ShapeDtypeStruct(self.resident.shape, self.resident.dtype,
                                sharding=self.resident.sharding)

  def data_position(self):
    """What a checkpoint holds of the data: the host iterator's position
    (None for the device placement: the step number says it all)."""
    return None if self.feed is None else self.feed.position()

  def close(self, finish_saves: bool = True):
    """Stops the input; finishes the checkpoints being written, unless
    another process is lost (its part of the save would never come) or a
    save failed (its partial checkpoint is removed)."""
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


def _abstract_state(setup, mesh, seed):
  replicated = NamedSharding(mesh, P())
  shapes = jax.eval_shape(lambda: train.create_train_state(
      setup, jax.random.PRNGKey(seed)))
  return jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      shapes)


def _prepare(cfg, workdir) -> _Run:
  workdir = storage.workdir_path(workdir)
  # a missing dataset stops the run before the workdir is made
  source = input_pipeline.data_source(cfg.data, 'train')
  mesh = train.make_mesh()
  placement, why = device_data.choose_placement(
      cfg.data.placement, cfg.data.device_budget, len(source),
      cfg.model.resolution, mesh)
  n_critic, batch = cfg.train.n_critic, cfg.train.batch_size
  # both check the data against the batches before anything is made
  spec = loader = None
  if placement == 'device':
    spec = device_data.DrawSpec.for_mesh(
        len(source), mesh, n_critic=n_critic, batch_size=batch,
        flip=input_pipeline.random_flip(cfg.data))
  else:
    loader = input_pipeline.create_loader(cfg.data, batch, seed=cfg.seed,
                                          source=source)
  lock = _hold_workdir(workdir)
  try:
    return _start(cfg, workdir, lock, source, mesh, placement, why, spec,
                  loader)
  except BaseException:
    if lock is not None:
      lock.release()
    raise


def _hold_workdir(workdir: epath.Path) -> run_lock.RunLock | None:
  """Process 0 takes the workdir's lock (run_lock.py), which it returns;
  every process raises WorkdirBusyError if another run holds it."""
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


def _start(cfg, workdir, lock, source, mesh, placement, why, spec,
           loader) -> _Run:
  n_critic, batch = cfg.train.n_critic, cfg.train.batch_size
  iterator = None
  check_workdir(cfg, workdir)
  setup = train.build(cfg)
  log.info('Training data on the %s: %s.', placement + 's'
           if placement == 'device' else placement, why)
  if loader is not None:
    iterator = iter(loader)
  checkpointer = checkpoints.Checkpointer(workdir / 'checkpoints',
                                          cfg.run.keep_checkpoints,
                                          training=True)
  restored = checkpointer.restore(_abstract_state(setup, mesh, cfg.seed),
                                  iterator)
  if restored is not None:
    state, start = restored
    log.info('Resuming from the checkpoint of step %d in %s.', start, workdir)
  else:
    sobel_batches = None
    if setup.pristine_source == 'sobel':
      # its own stream (the training one is untouched), the same global
      # batches on every process, as in a one-process run
      sobel_batches = map(input_pipeline.to_unit_range,
                          input_pipeline.create_loader(
                              cfg.data, batch, seed=cfg.seed + 1,
                              source=source, process_index=0,
                              process_count=1))
    pristine = train.initial_pristine(cfg, setup, sobel_batches)
    state = train.create_train_state(setup, jax.random.PRNGKey(cfg.seed),
                                     pristine)
    state = train.replicate(state, mesh)
    start = 0
  resident = feed = draw = None
  if spec is not None:
    began = time.perf_counter()
    resident = device_data.load(cfg.data, mesh, spec, source=source)
    draw = device_data.drawer(spec)
    log.info('Loaded %d training images onto the devices in %.1f s.',
             spec.num_records, time.perf_counter() - began)
  else:
    feed = input_pipeline.Prefetcher(
        iterator, n_critic, train.batch_sharding(mesh),
        (n_critic, batch) + (cfg.model.resolution,) * 2 + (3,))
  step_fn = train.make_train_step(
      setup, mesh, batch_size=batch,
      generator_batch_size=cfg.train.generator_batch_size, draw=draw)
  return _Run(cfg, workdir, setup, mesh, checkpointer, state, start,
              step_fn, resident, feed, lock)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       *, stop_after=None, on_step=None) -> train.TrainState:
  """Trains (or resumes) the run of `config` in `workdir`; returns the state.

  Args:
    config: a full, validated config (qagan_jax.config.validate).
    workdir: where checkpoints, metrics, samples and plots go.
    stop_after: a step at which to stop as if interrupted (saving a
      checkpoint), e.g. to end a job before its time limit.
    on_step: called as `on_step(step, state)` after every step's work (for
      benchmarks).
  """
  run = _prepare(config, workdir)
  peer_lost = disk_full = False
  try:
    return _train(run, stop_after, on_step)
  except checkpoints.DiskFullError:
    disk_full = True
    raise
  except OSError as error:
    if not storage.is_out_of_space(error):
      raise
    disk_full = True     # metrics, a sample grid, TensorBoard's events,
    run.checkpointer.wait()   # or the checkpoint being saved meanwhile
    raise run.checkpointer.disk_full(
        os.fspath(error.filename) if error.filename
        else "the run's metrics and sample grids") from None
  except jax.errors.JaxRuntimeError as error:
    if jax.process_count() == 1:
      raise
    peer_lost = True
    raise PeerLostError(
        f'process {jax.process_index()} of {jax.process_count()}: an '
        'operation with the other processes failed '
        f'({str(error).splitlines()[0][:300]}). Another process has most '
        'likely stopped; this one stops too. Run the same command on every '
        'host to resume from the newest checkpoint in '
        f'{run.workdir / "checkpoints"}.') from error
  finally:
    # also when stopped by an error: the checkpoint its message names is
    # complete on disk
    run.close(finish_saves=not (peer_lost or disk_full))


def due(done: int, every: int, total: int) -> bool:
  """Whether the loop logs, samples, evaluates or saves (each at its own
  `every`) after step `done` of `total`: every `every` steps and at the
  end. The preflight check counts by it too."""
  return done % every == 0 or done == total


def _train(run: _Run, stop_after, on_step) -> train.TrainState:
  cfg, setup, state = run.config, run.setup, run.state
  total = cfg.train.num_iters
  step_fn = run.step_fn
  lead = jax.process_index() == 0
  writer = reporting.MetricWriter(run.workdir, run.start, enabled=lead)
  gen_schedule, _ = train.learning_rate_schedules(cfg.train)
  # Compiling the step takes ~15-50 s on a CPU: a thread compiles it, into
  # jit's cache, while the first sample grid and evaluation run (XLA
  # compiles without the GIL).
  compiling = concurrent.futures.ThreadPoolExecutor(1)
  compiled_step = compiling.submit(lambda initial=state: step_fn.lower(
      initial, run.input_shape()).compile())
  compiling.shutdown(wait=False)
  grids = cfg.run.sample_grid > 0
  evaluates = bool(cfg.eval.train_metrics)
  if grids or evaluates:
    sampler = make_sampler(setup, cfg.run.standing_stats_samples)
  if grids:
    grid_z = jax.random.normal(jax.random.PRNGKey(SAMPLE_SEED),
                               (cfg.run.sample_grid, setup.latent_dim))
  if evaluates:
    evaluator = report.Evaluator(
        cfg, cfg.eval.train_metrics, cfg.run.eval_samples,
        cache_dir=report.reference_cache_dir(cfg.eval))

  def sample_and_evaluate(step, grid: bool, evaluation: bool):
    """The sample grid and the evaluation of `step`, if due: one
    computation of the standing statistics for both."""
    grid, evaluation = grid and grids, evaluation and evaluates
    if not grid and not evaluation:
      return
    prepared = sampler.prepare(state)
    if grid:
      image = reporting.image_grid(sampler.images(prepared, grid_z))
      if lead:
        reporting.save_png(image,
                           run.workdir / 'samples' / f'step_{step:07d}.png')
        writer.image(step, 'samples', image)
    if evaluation:
      results = evaluate_samples(evaluator, sampler, state,
                                 cfg.run.eval_samples, setup.latent_dim,
                                 prepared=prepared)
      writer.scalars(step, {f'eval/{k}': v for k, v in results.items()})

  if run.start == 0:
    sample_and_evaluate(0, True, True)
  compiled_step.result()   # waits; a compilation error surfaces here
  progress = reporting.Progress(total, run.start, cfg.run.progress_bar)
  last_saved = run.start
  stopped_by = None
  with _StopRequests() as requests:
    for step in range(run.start, total):
      state, metrics = step_fn(state, run.step_input())
      done = step + 1
      progress.update()
      if due(done, cfg.run.log_every, total):
        values = {k: float(v) for k, v in train.host_value(metrics).items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
          raise checkpoints.NonFiniteStateError(
              f'training diverged at step {done}: {", ".join(bad)} not '
              f'finite. Nothing was saved after step {last_saved}; lower '
              'train.learning_rate or the penalty weights, and resume.')
        values['learning_rate'] = float(gen_schedule(step))
        writer.scalars(done, values)
        progress.show(values)
      sample_and_evaluate(done, due(done, cfg.run.sample_every, total),
                          due(done, cfg.run.eval_every, total))
      if due(done, cfg.run.checkpoint_every, total):
        writer.flush()     # the metrics of the steps it holds, first
        run.checkpointer.save(done, state, run.data_position())
        last_saved = done
      stopped_by = requests.should_stop(done) or (
          'stop_after' if stop_after is not None and done >= stop_after
          else None)
      if stopped_by and last_saved != done:
        writer.flush()
        run.checkpointer.save(done, state, run.data_position())
        last_saved = done
      if on_step is not None:
        on_step(done, state)
      if stopped_by:
        progress.write(f'{stopped_by}: stopped at step {done} with a '
                       f'checkpoint in {run.workdir}; run the same command '
                       'to resume.')
        break
  progress.close()
  writer.close()
  if lead and not stopped_by:
    reporting.plot_loss_curves(run.workdir)
  return state


# --- sampling and evaluating a finished (or running) run ---------------------------


def restore_state(config: ml_collections.ConfigDict, workdir, step=None):
  """The train state of `workdir`'s newest (or `step`) checkpoint, and its step."""
  workdir = storage.workdir_path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise FileNotFoundError(f'no checkpoints in {workdir}; train first, or '
                            'pass the --workdir of a trained run.')
  check_workdir(config, workdir)
  setup = train.build(config)
  mesh = train.make_mesh()
  checkpointer = checkpoints.Checkpointer(workdir / 'checkpoints',
                                          config.run.keep_checkpoints)
  restored = checkpointer.restore(_abstract_state(setup, mesh, config.seed),
                                  step=step)
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f'no checkpoints in {workdir / "checkpoints"}.')
  return setup, restored[0], restored[1]


def sample(config: ml_collections.ConfigDict, workdir, num_samples: int = 64,
           step: int | None = None, seed: int = 0) -> epath.Path:
  """Writes `num_samples` EMA-generator samples as a PNG grid and an .npz."""
  setup, state, step = restore_state(config, workdir, step)
  sampler = make_sampler(setup, config.run.standing_stats_samples)
  images = generate(sampler, state, num_samples, seed, setup.latent_dim)
  out = storage.workdir_path(workdir) / 'samples'
  stem = out / f'sample_step{step:07d}_seed{seed}_n{num_samples}'
  if jax.process_index() == 0:
    reporting.save_png(reporting.image_grid(images), stem.with_suffix('.png'))
    storage.save_npz(stem.with_suffix('.npz'),
                     images=input_pipeline.to_uint8(images), step=step,
                     seed=seed)
  return stem.with_suffix('.png')



def evaluate_run(config: ml_collections.ConfigDict, workdir,
                 step: int | None = None,
                 num_samples: int | None = None) -> epath.Path:
  """Evaluates a checkpoint's EMA generator; writes and returns a JSON report.

  The metrics of eval.metrics (`report.Evaluator`); `num_samples` defaults
  to eval.num_samples (50,000, as the paper). The report goes to
  `<workdir>/eval/step_<step>.json`.
  """
  workdir = storage.workdir_path(workdir)
  num_samples = num_samples or config.eval.num_samples
  evaluator = report.Evaluator(config, config.eval.metrics, num_samples,
                               cache_dir=report.reference_cache_dir(
                                   config.eval))
  setup, state, step = restore_state(config, workdir, step)
  start = time.perf_counter()
  sampler = make_sampler(setup, config.run.standing_stats_samples)
  results = evaluate_samples(evaluator, sampler, state, num_samples,
                             setup.latent_dim)
  summary = {
      'step': step, 'num_samples': num_samples,
      'dataset': config.data.dataset, 'method': config.loss.method,
      'reference_split': config.eval.reference_split,
      'metrics': results, 'seconds': round(time.perf_counter() - start, 1),
  }
  path = workdir / 'eval' / f'step_{step:07d}.json'
  if jax.process_index() == 0:
    storage.write_text(path, json.dumps(summary, indent=1) + '\n')
  return path
