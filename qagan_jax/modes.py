"""The sample and evaluate modes: what `--mode=sample` and `--mode=evaluate` do with a trained workdir.

Both read a checkpoint (the newest, or `step`) of a workdir, finished or
still training (`restore_state`), without the training data, and use its
EMA generator: `sample` writes a PNG grid and an .npz of samples,
`evaluate_run` the metrics of eval.metrics as a JSON report.
"""

from __future__ import annotations

import json
import time

import jax
import ml_collections
from etils import epath

from qagan_jax import checkpoints
from qagan_jax import compilation
from qagan_jax import input_pipeline
from qagan_jax import reporting
from qagan_jax import sampling
from qagan_jax import storage
from qagan_jax import train
from qagan_jax import train_state
from qagan_jax import workdirs
from qagan_jax.evaluation import evaluator as evaluator_lib


def restore_state(config: ml_collections.ConfigDict, workdir, step=None):
  """(setup, train state, its step) of `workdir`'s newest (or `step`)
  checkpoint."""
  compilation.use_persistent_cache(config.run.compilation_cache)
  workdir = storage.workdir_path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise checkpoints.NoCheckpointError(
        f'no checkpoints in {workdir}; train first, or pass the --workdir of '
        'a trained run.')
  workdirs.check_config(config, workdir)
  setup = train_state.build(config)
  checkpointer = checkpoints.Checkpointer(workdir / 'checkpoints',
                                          config.run.keep_checkpoints)
  restored = checkpointer.restore(
      train_state.abstract_state(setup, train.make_mesh(), config.seed), step=step)
  checkpointer.close()
  if restored is None:
    raise checkpoints.NoCheckpointError(
        f'no checkpoints in {workdir / "checkpoints"}.')
  return setup, restored[0], restored[1]


def sample(config: ml_collections.ConfigDict, workdir, num_samples: int = 64,
           step: int | None = None, seed: int = 0) -> epath.Path:
  """Writes `num_samples` EMA-generator samples as a PNG grid and an .npz
  (uint8 images, the step and the seed) to `<workdir>/samples/`; returns
  the PNG's path."""
  setup, state, step = restore_state(config, workdir, step)
  sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
  images = sampling.generate(sampler, state, num_samples, seed)
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

  The metrics of eval.metrics (`evaluator.Evaluator`); `num_samples`
  defaults to eval.num_samples (50,000, as the paper). The report goes to
  `<workdir>/eval/step_<step>.json`.
  """
  workdir = storage.workdir_path(workdir)
  num_samples = num_samples or config.eval.num_samples
  # before the checkpoint is read: missing Inception weights stop it here
  evaluator = evaluator_lib.Evaluator(
      config, config.eval.metrics, num_samples,
      cache_dir=evaluator_lib.reference_cache_dir(config.eval))
  setup, state, step = restore_state(config, workdir, step)
  start = time.perf_counter()
  sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
  results = sampling.evaluate_samples(evaluator, sampler, state, num_samples)
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
