"""The training loop: `train_and_evaluate(config, workdir)`, what `python -m qagan_jax.main` runs.

It builds the run (`run.build_run`: resumed from the newest readable
checkpoint of the workdir, state, RNG and the input's position, so that an
interrupted run continues exactly), then trains: every step, and at the
config's intervals (`due`) the metrics, sample grids, evaluations and
checkpoints. SIGINT and SIGTERM (a preempted TPU VM) save a checkpoint and
stop cleanly (interruption.py; in a multi-process run every process after
the same step). It stops, without saving, when the state stops being
finite, and with one message when the disk fills or another process of the
run is lost.

The step itself (pure, sharded) is in train.py; what the run builds
before it, in run.py; the sample and evaluate modes in modes.py. Configs
come validated from the caller (main.py validates with qagan_jax.config).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import time

import jax
import ml_collections

from qagan_jax import checkpoints
from qagan_jax import compilation
from qagan_jax import errors
from qagan_jax import interruption
from qagan_jax import reporting
from qagan_jax import run as run_lib
from qagan_jax import sampling
from qagan_jax import storage
from qagan_jax import train_state
from qagan_jax import workdirs

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       *, stop_after=None, on_step=None) -> train_state.TrainState:
  """Trains (or resumes) the run of `config` in `workdir`; returns the state.

  Args:
    config: a full, validated config (qagan_jax.config.validate).
    workdir: where checkpoints, metrics, samples and plots go.
    stop_after: a step at which to stop as if interrupted (saving a
      checkpoint), e.g. to end a job before its time limit.
    on_step: called as `on_step(step, state)` after every step's work (for
      benchmarks).
  """
  # signals from here on are requests to stop: one during the start-up is
  # seen before the step compiles
  with interruption.StopRequests() as requests:
    run = run_lib.build_run(config, workdir)
    return _train_run(run, requests, stop_after, on_step)


def _train_run(run, requests, stop_after, on_step) -> train_state.TrainState:
  """`_train`, with the failures of its environment told as what they mean
  (`_failure`), and the run closed."""
  finish_saves = True
  try:
    return _train(run, requests, stop_after, on_step)
  except Exception as error:  # pylint: disable=broad-except
    told = _failure(run, error)
    if told is None:
      raise
    finish_saves = False    # none can finish
    if told is error:
      raise
    raise told from error
  finally:
    # also when stopped by an error: the checkpoint its message names is
    # complete on disk
    run.close(finish_saves=finish_saves)


def _failure(run: run_lib.Run, error: Exception) -> Exception | None:
  """The error a failure of training is told with where it is one of the
  run's environment (the workdir removed, a full disk, a lost peer) that
  leaves no save to finish; None for any other."""
  if isinstance(error, (checkpoints.DiskFullError,
                        workdirs.WorkdirRemovedError)):
    return error
  # everything fails once the workdir is gone: said first
  if _removed(run.workdir):
    return workdirs.WorkdirRemovedError.of(run.workdir)
  lost = run.lost_workdir()      # removed and made again by a writer
  if isinstance(lost, workdirs.WorkdirRemovedError):
    return lost
  if isinstance(error, OSError) and storage.is_out_of_space(error):
    # metrics, a sample grid or TensorBoard's events; the checkpoint
    # being saved meanwhile is waited for, and told if it failed too
    try:
      run.checkpointer.wait()
    except checkpoints.DiskFullError as checkpoint_too:
      return checkpoint_too
    return run.checkpointer.disk_full(
        os.fspath(error.filename) if error.filename
        else "the run's metrics and sample grids")
  return interruption.peer_lost(error, run.workdir / 'checkpoints')


def _removed(workdir) -> bool:
  try:
    return not workdir.exists()
  except Exception:  # pylint: disable=broad-except
    return False     # an unreachable store: not known to be removed


def due(done: int, every: int, total: int) -> bool:
  """Whether the loop logs, samples, evaluates or saves (each at its own
  `every`) after step `done` of `total`: every `every` steps and at the
  end. The preflight check counts by it too."""
  return done % every == 0 or done == total


class _Outputs:
  """What the loop writes besides checkpoints: metrics, sample grids and
  evaluations (process 0 writes the files; every process evaluates)."""

  def __init__(self, run: run_lib.Run):
    cfg = run.config
    self.run = run
    self.lead = jax.process_index() == 0
    self.writer = reporting.MetricWriter(run.workdir, run.start,
                                         enabled=self.lead)
    self.grid_z = (sampling.grid_latents(cfg.run.sample_grid,
                                         run.setup.latent_dim)
                   if cfg.run.sample_grid else None)
    self.evaluator = run.evaluator    # missing weights fail here, not later

  def sample_and_evaluate(self, step: int, state, grid: bool,
                          evaluation: bool) -> None:
    """The sample grid and the evaluation of `step`, if due and configured:
    one computation of the standing statistics for both."""
    grid = grid and self.grid_z is not None
    evaluation = evaluation and self.evaluator is not None
    if not grid and not evaluation:
      return
    sampler = self.run.sampler
    prepared = sampler.prepare(state)
    if grid:
      image = reporting.image_grid(sampler.images(prepared, self.grid_z))
      if self.lead:
        reporting.save_png(image, self.run.workdir / 'samples'
                           / f'step_{step:07d}.png')
        self.writer.image(step, 'samples', image)
    if evaluation:
      results = sampling.evaluate_samples(
          self.evaluator, sampler, state, self.run.config.run.eval_samples,
          prepared=prepared)
      self.writer.scalars(step, {f'eval/{k}': v for k, v in results.items()})


def _train(run: run_lib.Run, requests: interruption.StopRequests, stop_after,
           on_step) -> train_state.TrainState:
  state = run.state
  if run.finished:     # nothing to compile
    return state
  if requests.before_training():     # during the start-up
    return _stopped_before_training(run, requests)
  # Compiling the step takes ~15-50 s on a CPU: a thread compiles it, into
  # jit's cache, while the first sample grid and evaluation run (XLA
  # compiles without the GIL).
  compiling = concurrent.futures.ThreadPoolExecutor(1)
  compiled_step = compiling.submit(lambda initial=state: run.step_fn.lower(
      initial, run.input_shape()).compile())
  compiling.shutdown(wait=False)
  try:
    outputs = _Outputs(run)
    if run.start == 0:
      outputs.sample_and_evaluate(0, state, True, True)
    compiled_step.result()   # waits; a compilation error surfaces here
    if requests.before_training():
      outputs.writer.close()
      return _stopped_before_training(run, requests)
    return _steps(run, state, outputs, requests, stop_after, on_step)
  except jax.errors.JaxRuntimeError as error:
    if not errors.out_of_memory(error):
      raise
    raise errors.as_resource_error(
        error, planned_memory(compiled_step)) from error


def _stopped_before_training(run, requests) -> train_state.TrainState:
  log.info('%s: stopped before step %d; nothing to save (%s).',
           requests.signal_name, run.start + 1,
           f'the newest checkpoint is step {run.start}' if run.start
           else 'no step was trained')
  return run.state


def planned_memory(compiling: concurrent.futures.Future) -> str:
  """What the compiled training step needs on a device as XLA planned it
  (`compilation.program_bytes`, the figure `--mode=check` reports), and
  what the device holds, in a sentence ('' before it compiled)."""
  if not compiling.done() or compiling.exception() is not None:
    return ''
  need = compilation.program_bytes(compiling.result())
  if need is None:
    return ''
  limit = compilation.device_memory_limit()
  held = f' of the {limit / 2**30:.2f} GiB it holds' if limit else ''
  return (f'The training step needs {need / 2**30:.2f} GiB a device{held}, '
          'as XLA planned it (--mode=check reports it).')


def _steps(run, state, outputs, requests, stop_after, on_step):
  """The training steps from run.start, until the end, a stop request or
  `stop_after`."""
  cfg, total, writer = run.config, run.config.train.num_iters, outputs.writer
  gen_schedule, _ = train_state.learning_rate_schedules(cfg.train)
  progress = reporting.Progress(
      total, run.start, bar=cfg.run.progress_bar,
      every_seconds=cfg.run.progress_every,
      images_per_step=train_state.images_per_iteration(cfg.train))
  last_saved = run.start
  stopped_by = None
  for step in range(run.start, total):
    state, metrics = run.step_fn(state, run.step_input())
    done = step + 1
    progress.update()
    if due(done, cfg.run.log_every, total):
      values = {k: float(v) for k, v in train_state.host_value(metrics).items()}
      bad = [k for k, v in values.items() if not math.isfinite(v)]
      if bad:
        raise checkpoints.NonFiniteStateError(
            f'training diverged at step {done}: {", ".join(bad)} not '
            f'finite. Nothing was saved after step {last_saved}; lower '
            'train.learning_rate or the penalty weights, and resume.')
      values['learning_rate'] = float(gen_schedule(step))
      writer.scalars(done, values)
      progress.show(values)
    sample, evaluate = (due(done, cfg.run.sample_every, total),
                        due(done, cfg.run.eval_every, total))
    if sample or evaluate:
      began = time.monotonic()
      outputs.sample_and_evaluate(done, state, sample, evaluate)
      progress.add_evaluation(time.monotonic() - began)
    stopped_by = requests.should_stop(done) or (
        'stop_after' if stop_after is not None and done >= stop_after
        else None)
    if due(done, cfg.run.checkpoint_every, total) or (
        stopped_by and last_saved != done):
      writer.flush()     # the metrics of the steps it holds, first
      run.save(done, state)
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
  if outputs.lead:     # also at a stop: the curves so far
    reporting.plot_loss_curves(run.workdir)
  return state
