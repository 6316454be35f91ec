"""A preflight check: what a run of a config costs on these devices and data, measured in minutes.

`python -m qagan_jax.main --config=configs/stl10_niqe.py --mode=check`
builds the run as training would (the data, the placement, the sharded
step), in `<workdir>/preflight/` (removed afterwards, so the checkpoints
are timed on the storage the run will use), and measures: the step's
compile time, seconds per iteration and images per second over a few
steps, the memory the step needs (as XLA planned it) and the peak
memory, one sample grid, one checkpoint's size and save and restore
times, and the two kinds of evaluation (`evaluation_cost`): training's
(eval.train_metrics on run.eval_samples) and the evaluate mode's that
follows training (eval.metrics, Inception's included, on
eval.num_samples), each measured on small counts and projected, with the
reference statistics the cache lacks and the Inception network's memory.
Missing Inception weights are said, and the rest projected. `project`
turns these into the wall time of the whole configured training command
(compilation, the iterations, and the evaluations, grids and checkpoints
at the config's intervals), and of the evaluate mode after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time

import jax
import ml_collections
import numpy as np

from qagan_jax import compilation
from qagan_jax import errors
from qagan_jax import loop
from qagan_jax import reporting
from qagan_jax import run as run_lib
from qagan_jax import sampling
from qagan_jax import storage
from qagan_jax import train
from qagan_jax import train_state
from qagan_jax.evaluation import evaluator as evaluator_lib

log = logging.getLogger(__name__)
TIMED_STEPS = 10        # after WARM_STEPS, for seconds per iteration
WARM_STEPS = 2


@dataclasses.dataclass
class Measured:
  """What the check measured (seconds unless named otherwise)."""
  startup: float                   # the run built: data loaded, state made
  compile: float
  step: float                      # per iteration
  evaluation_first: float | None   # with compilations, missing references
  evaluation: float | None         # one in-training evaluation, compiled
  grid: float | None               # one sample grid, compiled
  checkpoint_save: float           # until written (in the background)
  checkpoint_blocking: float       # what a save holds the loop up
  checkpoint_restore: float
  checkpoint_bytes: int | None     # None on remote storage
  final_evaluation: float | None = None   # --mode=evaluate, all of it


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
  # the evaluate mode on eval.num_samples, its compilations and the
  # references it lacks included
  parts['final_evaluation'] = measured.final_evaluation or 0.0
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


def evaluation_cost(run: run_lib.Run, state, metrics, num_samples: int,
                    skip_cached: frozenset = frozenset(),
                    required: bool = False) -> dict:
  """What evaluating `num_samples` samples of `state` with `metrics` costs,
  as `sampling.evaluate_samples` does it (training's evaluations, the
  evaluate mode).

  What grows with the sample count, generating the samples and extracting
  what the metrics need of them (the Inception network, the NIQE
  features), is timed on a probe of eval.batch_size samples and projected.
  The scoring is timed at the full count, on the probe's rows repeated:
  FID's matrix square root, KID's subsets, PRDC's neighbours and SWD's
  projections do not grow linearly. It scores against the offline
  reference of the real images at its real size (read from the cache, or
  computed and cached, as the evaluation would) and against stand-ins of
  the Inception reference's real size; the Inception reference statistics
  that neither the cache holds nor `skip_cached` (kind, images) names are
  projected from their time per image on the probe. A first evaluation of
  the probe pays the compilations.

  Returns {'metrics', 'samples', 'seconds': one evaluation of
  `num_samples` (its references at hand), 'first_seconds': the first
  (compilations and references included), 'compile_seconds',
  'references': [{kind, images, cached, seconds}], 'probe_samples',
  'inception_planned_bytes', 'missing_inception'} (the DataError's message
  when the Inception weights are missing: the Inception metrics are left
  out and the rest measured; raised instead when the metrics are
  `required`, as training's are).
  """
  cfg = run.config
  cache = evaluator_lib.reference_cache_dir(cfg.eval)
  missing = None
  try:
    scorer = evaluator_lib.Evaluator(cfg, metrics, num_samples, cache)
  except errors.DataError as error:
    if required:
      raise
    missing = str(error)
    metrics = tuple(m for m in metrics
                    if m not in evaluator_lib.INCEPTION_METRICS)
    scorer = evaluator_lib.Evaluator(cfg, metrics, num_samples, cache)
  found = {'metrics': list(metrics), 'samples': num_samples, 'seconds': 0.0,
           'first_seconds': 0.0, 'compile_seconds': 0.0, 'references': [],
           'probe_samples': 0, 'inception_planned_bytes': None,
           'missing_inception': missing}
  if not metrics:
    return found
  # PRDC needs more samples than its neighbour count
  fewest = (cfg.eval.prdc_k + 1 if {'prdc', 'prdc_niqe'} & set(metrics)
            else 1)
  probe = min(num_samples, max(cfg.eval.batch_size, fewest))
  probe_config = cfg.copy_and_resolve_references()
  probe_config.eval.reference_samples = min(probe,
                                            cfg.eval.reference_samples)
  probe_config.eval.swd_images = min(probe, cfg.eval.swd_images)
  prepared = run.sampler.prepare(state)

  def extract(evaluator):
    return sampling.extract_samples(evaluator, run.sampler, state, probe,
                                    prepared)

  with _quiet(evaluator_lib.log):   # the probe's references are not the run's
    began = time.perf_counter()
    compiling = evaluator_lib.Evaluator(probe_config, metrics, probe)
    compiling.score(extract(compiling))
    first = time.perf_counter() - began
    probe_evaluator = evaluator_lib.Evaluator(probe_config, metrics, probe)
    probed, inception_reference = 0.0, None
    if probe_evaluator.extractor is not None:
      probed, inception_reference = _timed(
          probe_evaluator.inception_reference)
    probed += _timed(probe_evaluator.offline_reference)[0]
    extracting, parts = _timed(extract, probe_evaluator)
    scoring_probe = _timed(probe_evaluator.score, parts)[0]

    references = [(kind, images, (kind, images) in skip_cached or (
        path is not None and path.is_file()))
                  for kind, images, path in scorer.references()]
    # the real images of the offline metrics, their NIQE rows (read from
    # the cache, or computed and cached) and pairs: once a command
    offline = (_timed(scorer.offline_reference)[0] if set(metrics) & set(
        evaluator_lib.OFFLINE_METRICS) else 0.0)
    for kind, images, cached in references:
      if kind == 'inception':
        per_image = probed / probe_config.eval.reference_samples
        seconds = 0.0 if cached else per_image * images
        stats, kid_features = inception_reference
        scorer.use_inception_reference(stats, np.resize(kid_features, (
            min(images, evaluator_lib.KID_REFERENCE_ROWS),
            kid_features.shape[1])))
      else:       # the NIQE rows: part of the offline reference
        seconds, offline = offline, 0.0
      found['references'].append({'kind': kind, 'images': images,
                                  'cached': cached,
                                  'seconds': round(seconds, 1)})
    scoring = _timed(scorer.score, {
        name: np.resize(rows, (num_samples,) + rows.shape[1:])
        for name, rows in parts.items()})[0]
  seconds = extracting / probe * num_samples + scoring
  compile_seconds = max(first - probed - extracting - scoring_probe, 0.0)
  found.update(
      seconds=round(seconds, 2), compile_seconds=round(compile_seconds, 2),
      first_seconds=round(compile_seconds + seconds + offline + sum(
          r['seconds'] for r in found['references']), 2),
      probe_samples=probe,
      inception_planned_bytes=(
          probe_evaluator.extractor.planned_bytes(cfg.model.resolution)
          if probe_evaluator.extractor is not None else None))
  return found


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
  """`logger`'s INFO messages dropped within."""
  level = logger.level
  logger.setLevel(logging.WARNING)
  try:
    yield
  finally:
    logger.setLevel(level)


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

  memory = _memory(compiled)
  grid = None
  if cfg.run.sample_grid:
    z = sampling.grid_latents(cfg.run.sample_grid, run.setup.latent_dim)
    _timed(run.sampler, state, z)
    grid = _timed(run.sampler, state, z)[0]
  in_training = None
  if cfg.eval.train_metrics:   # missing Inception weights fail, as in training
    in_training = evaluation_cost(run, state, cfg.eval.train_metrics,
                                  cfg.run.eval_samples, required=True)
  # the evaluate mode, after training: the references training computed
  # are cached by then
  final = evaluation_cost(
      run, state, cfg.eval.metrics, cfg.eval.num_samples,
      skip_cached=frozenset((r['kind'], r['images'])
                            for r in (in_training or {}).get('references', ())))
  peak = (jax.local_devices()[0].memory_stats() or {}).get('peak_bytes_in_use')
  memory['evaluation_device_peak_bytes'] = (
      peak if peak is not None and peak > (memory['device_peak_bytes'] or 0)
      else memory['device_peak_bytes'])
  memory['inception_planned_bytes'] = final['inception_planned_bytes']

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

  measured = Measured(
      startup, compile_seconds, step,
      in_training and in_training['first_seconds'],
      in_training and in_training['seconds'], grid, save, blocking, restore,
      size, final['first_seconds'])
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
      'memory': memory,
      'evaluation': in_training,
      'final_evaluation': final,
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
  if found['evaluation'] is not None:
    lines.append(evaluation_text('evaluation during training',
                                  found['evaluation'], each=True))
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
  lines.append(evaluation_text('then --mode=evaluate',
                                found['final_evaluation'], each=False))
  return '\n'.join(lines)


def evaluation_text(name: str, cost: dict, each: bool) -> str:
  """A line on what an evaluation costs (`evaluation_cost`): the time of
  each one (training's, done again and again) or, for one done once, all of
  it with its compilations and references."""
  missing = cost['missing_inception']
  if not cost['metrics']:
    return f'{name}: no metric to compute' + (
        f" (the Inception weights are missing: {missing.split('. ')[0]})"
        if missing else '')
  seconds = cost['seconds'] if each else cost['first_seconds']
  text = (f"{name} ({', '.join(cost['metrics'])} on {cost['samples']} "
          f"samples): {reporting.duration(seconds)} "
          + ('each' if each else 'in all'))
  notes = []
  if each:
    notes.append(f"the first {reporting.duration(cost['first_seconds'])}")
  notes.append(f"compilations {reporting.duration(cost['compile_seconds'])}")
  for reference in cost['references']:
    notes.append(f"{reference['kind']} reference statistics of "
                 f"{reference['images']} images, "
                 + ('cached' if reference['cached'] else 'not cached')
                 + f": {reporting.duration(reference['seconds'])}")
  if cost['probe_samples'] < cost['samples']:
    notes.append(f"sampling and features timed on {cost['probe_samples']} "
                 'samples')
  text += f" ({'; '.join(notes)})"
  if missing:
    text += ('; not counted: the Inception metrics, whose weights are '
             f"missing ({missing.split('. ')[0]})")
  return text


def _memory_text(memory: dict) -> str:
  def mb(name):
    return f'{memory[name] / 2**20:.0f} MB'

  parts = []
  if memory['step_planned_bytes'] is not None:
    parts.append('the step needs ' + mb('step_planned_bytes') + (
        ' of the ' + mb('device_limit_bytes') + ' a device holds'
        if memory['device_limit_bytes'] else '') + ' (as XLA planned it)')
  if memory.get('inception_planned_bytes') is not None:
    parts.append('the Inception network needs ' + mb('inception_planned_bytes'))
  peaks = [f'{name} {mb(key)}' for name, key in (
      ('device', 'device_peak_bytes'),
      ('device in evaluation', 'evaluation_device_peak_bytes'),
      ('host', 'host_peak_rss_bytes'))
           if memory.get(key) is not None]
  if peaks:
    parts.append('peak ' + ', '.join(peaks))
  return 'memory: ' + ('; '.join(parts) or 'not reported by this platform')


def json_line(found: dict) -> str:
  return json.dumps(found, sort_keys=True)
