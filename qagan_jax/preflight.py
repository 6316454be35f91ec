"""A preflight check: what a run of a config costs on these devices and data, measured in minutes.

`python -m qagan_jax.main --config=configs/stl10_niqe.py --mode=check`
builds the run as training would (the data, the placement, the sharded
step), in `<workdir>/preflight/` (removed afterwards, so the checkpoints
are timed on the storage the run will use), and measures: the step's
compile time, seconds per iteration and images per second over a few
steps, the memory the step needs (as XLA planned it) and the peak
memory, one in-training evaluation (the first, with its
compilations and reference statistics, and a second), one sample grid, and
one checkpoint's size and save and restore times. `project` turns these
into the wall time of the whole configured training command (compilation,
the iterations, and the evaluations, grids and checkpoints at the config's
intervals), and of the final evaluation of eval.num_samples, scaled from
the in-training one by the sample count (the evaluate mode's Inception
metrics and its reference statistics, when not cached, come on top; the
report says so).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import jax
import ml_collections

from qagan_jax import compilation
from qagan_jax import loop
from qagan_jax import reporting
from qagan_jax import run as run_lib
from qagan_jax import sampling
from qagan_jax import storage
from qagan_jax import train
from qagan_jax import train_state

log = logging.getLogger(__name__)
TIMED_STEPS = 10        # after WARM_STEPS, for seconds per iteration
WARM_STEPS = 2


@dataclasses.dataclass
class Measured:
  """What the check measured (seconds unless named otherwise)."""
  startup: float                   # the run built: data loaded, state made
  compile: float
  step: float                      # per iteration
  evaluation_first: float | None   # with compilations, reference statistics
  evaluation: float | None         # one in-training evaluation, compiled
  grid: float | None               # one sample grid, compiled
  checkpoint_save: float           # until written (in the background)
  checkpoint_blocking: float       # what a save holds the loop up
  checkpoint_restore: float
  checkpoint_bytes: int | None     # None on remote storage


def _events(total: int, every: int, at_start: bool) -> int:
  """How many times the loop does something every `every` steps of `total`
  (`loop.due`; and before the first step, if `at_start`)."""
  return sum(loop.due(done, every, total)
             for done in range(1, total + 1)) + int(at_start)


def project(config: ml_collections.ConfigDict, measured: Measured) -> dict:
  """Seconds of each part of the whole configured run, and their total."""
  total = config.train.num_iters
  parts = {'startup': measured.startup, 'compile': measured.compile,
           'training': total * measured.step}
  evaluations = (_events(total, config.run.eval_every, True)
                 if config.eval.train_metrics else 0)
  # the first compiles its programs (and reads or computes the references)
  parts['evaluations'] = (
      (measured.evaluation_first or 0.0)
      + max(evaluations - 1, 0) * (measured.evaluation or 0.0)
      if evaluations else 0.0)
  grids = (_events(total, config.run.sample_every, True)
           if config.run.sample_grid else 0)
  parts['sample_grids'] = grids * (measured.grid or 0.0)
  saves = _events(total, config.run.checkpoint_every, False)
  # written in the background while training goes on: the part that
  # holds the loop up
  parts['checkpoints'] = saves * measured.checkpoint_blocking
  # the evaluate mode on eval.num_samples: the in-training evaluation's
  # time per sample (its metrics, not eval.metrics' Inception ones)
  per_sample = (measured.evaluation or 0.0) / config.run.eval_samples
  parts['final_evaluation'] = per_sample * config.eval.num_samples
  return {
      'seconds': {k: round(v, 1) for k, v in parts.items()},
      # the training command; the evaluate mode's is final_evaluation
      'total_seconds': round(sum(v for k, v in parts.items()
                                 if k != 'final_evaluation'), 1),
      'counts': {'iterations': total, 'evaluations': evaluations,
                 'sample_grids': grids, 'checkpoints': saves,
                 'final_evaluation_samples': config.eval.num_samples},
  }


def _memory(compiled) -> dict:
  """The step's device memory as XLA planned it (`program_bytes`) and what
  a device holds, the peak bytes of the first local device, and this
  process's peak host memory; each None where the platform does not say
  (XLA:CPU gives no device figures but the plan; host memory off Unix)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  try:
    import resource  # pylint: disable=g-import-not-at-top
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB
  except ImportError:
    host = None
  return {'step_planned_bytes': compilation.program_bytes(compiled),
          'device_limit_bytes': compilation.device_memory_limit(),
          'device_peak_bytes': stats.get('peak_bytes_in_use'),
          'host_peak_rss_bytes': host}


def measure(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs the check for `config` with scratch files under
  `<workdir>/preflight` (removed after); returns the report (a dict
  that `json.dumps` takes)."""
  scratch = storage.workdir_path(workdir) / 'preflight'
  if scratch.exists() and jax.process_index() == 0:
    scratch.rmtree()
  began = time.perf_counter()
  run = run_lib.build_run(config, scratch)
  startup = time.perf_counter() - began
  try:
    found = _measure(run, startup)
  finally:
    run.close()
    if jax.process_index() == 0 and scratch.exists():
      scratch.rmtree()
  found['projection'] = project(config, found.pop('measured'))
  return found


def _timed(function, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(function(*args))
  return time.perf_counter() - start, out


def _measure(run: run_lib.Run, startup: float) -> dict:
  cfg, state = run.config, run.state
  began = time.perf_counter()
  compiled = run.step_fn.lower(state, run.input_shape()).compile()
  compile_seconds = time.perf_counter() - began
  for _ in range(WARM_STEPS):
    state, _ = compiled(state, run.step_input())
  jax.block_until_ready(state)
  began = time.perf_counter()
  for _ in range(TIMED_STEPS):
    state, _ = compiled(state, run.step_input())
  jax.block_until_ready(state)
  step = (time.perf_counter() - began) / TIMED_STEPS
  images = train_state.images_per_iteration(cfg.train)

  grid = first = evaluation = None
  if cfg.run.sample_grid:
    z = sampling.grid_latents(cfg.run.sample_grid, run.setup.latent_dim)
    _timed(run.sampler, state, z)
    grid = _timed(run.sampler, state, z)[0]
  if run.evaluator is not None:
    evaluate = lambda: sampling.evaluate_samples(  # pylint: disable=g-long-lambda
        run.evaluator, run.sampler, state, cfg.run.eval_samples)
    first = _timed(evaluate)[0]
    evaluation = _timed(evaluate)[0]

  began = time.perf_counter()
  run.save(WARM_STEPS + TIMED_STEPS, state)
  blocking = time.perf_counter() - began
  run.checkpointer.wait()
  save = time.perf_counter() - began
  folder = run.checkpointer.directory / str(WARM_STEPS + TIMED_STEPS)
  size = None if storage.is_url(folder) else storage.folder_bytes(folder)
  began = time.perf_counter()
  jax.block_until_ready(run.checkpointer.restore(run.abstract_state())[0])
  restore = time.perf_counter() - began

  measured = Measured(startup, compile_seconds, step, first, evaluation, grid,
                      save, blocking, restore, size)
  return {
      'config': {'dataset': cfg.data.dataset, 'method': cfg.loss.method,
                 'resolution': cfg.model.resolution,
                 'batch_size': cfg.train.batch_size,
                 'num_iters': cfg.train.num_iters},
      'devices': {'platform': jax.devices()[0].platform,
                  'kind': jax.devices()[0].device_kind,
                  'count': jax.device_count(),
                  'processes': jax.process_count()},
      'placement': run.placement,
      'critic_loop': 'unrolled' if train.critic_steps_unrolled(
          cfg.train.critic_loop, run.mesh.devices.flat[0].platform) else 'scan',
      'startup_seconds': round(startup, 2),
      'compile_seconds': round(compile_seconds, 2),
      'seconds_per_iteration': round(step, 4),
      'images_per_second': round(images / step, 1),
      'memory': _memory(compiled),
      'evaluation_seconds': _round(evaluation),
      'evaluation_first_seconds': _round(first),
      'sample_grid_seconds': _round(grid),
      'checkpoint': {'bytes': size, 'save_seconds': round(save, 3),
                     'blocking_seconds': round(blocking, 3),
                     'restore_seconds': round(restore, 3)},
      'measured': measured,
  }


def _round(value, digits: int = 3):
  return None if value is None else round(value, digits)


def text(found: dict) -> str:
  """The report for a person: what was measured, then the projection."""
  projection = found['projection']
  lines = [
      f"devices: {found['devices']['count']} x {found['devices']['kind']} "
      f"({found['devices']['platform']}), {found['devices']['processes']} "
      f"process(es); training data on the {found['placement']}; critic "
      f"steps {found['critic_loop']}",
      f"startup (data, state): {found['startup_seconds']:.1f} s; compile: "
      f"{found['compile_seconds']:.1f} s",
      f"step: {found['seconds_per_iteration'] * 1000:.1f} ms an iteration, "
      f"{found['images_per_second']:.0f} images/s",
      _memory_text(found['memory']),
  ]
  if found['evaluation_seconds'] is not None:
    lines.append('evaluation during training: '
                 f"{found['evaluation_seconds']:.1f} s (the first "
                 f"{found['evaluation_first_seconds']:.1f} s)")
  if found['sample_grid_seconds'] is not None:
    lines.append(f"sample grid: {found['sample_grid_seconds']:.2f} s")
  size = found['checkpoint']['bytes']
  lines.append(
      'checkpoint: ' + (f'{size / 2**20:.1f} MB, ' if size else '')
      + f"saved in {found['checkpoint']['save_seconds']:.2f} s (the loop "
      f"waits {found['checkpoint']['blocking_seconds']:.2f} s of it), "
      f"restored in {found['checkpoint']['restore_seconds']:.2f} s")
  counts = projection['counts']
  lines.append(f"projected run of {counts['iterations']} iterations: "
               f"{reporting.duration(projection['total_seconds'])}")
  for name, seconds in projection['seconds'].items():
    if name == 'final_evaluation':
      continue
    count = counts.get(name)
    lines.append(f'  {name.replace("_", " ")}: {reporting.duration(seconds)}'
                 + (f' ({count})' if count else ''))
  lines.append(
      f"then --mode=evaluate on {counts['final_evaluation_samples']} samples: "
      f"{reporting.duration(projection['seconds']['final_evaluation'])} for the "
      'metrics of eval.train_metrics (its Inception metrics, and reference '
      'statistics not yet cached, come on top)')
  return '\n'.join(lines)


def _memory_text(memory: dict) -> str:
  def mb(name):
    return f'{memory[name] / 2**20:.0f} MB'

  parts = []
  if memory['step_planned_bytes'] is not None:
    parts.append('the step needs ' + mb('step_planned_bytes') + (
        ' of the ' + mb('device_limit_bytes') + ' a device holds'
        if memory['device_limit_bytes'] else '') + ' (as XLA planned it)')
  peaks = [f'{name} {mb(key)}' for name, key in (
      ('device', 'device_peak_bytes'), ('host', 'host_peak_rss_bytes'))
           if memory[key] is not None]
  if peaks:
    parts.append('peak ' + ', '.join(peaks))
  return 'memory: ' + ('; '.join(parts) or 'not reported by this platform')


def json_line(found: dict) -> str:
  return json.dumps(found, sort_keys=True)
