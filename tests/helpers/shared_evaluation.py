"""One process of an evaluation shared by the processes of a jax.distributed job (or the only one).

    [JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=I] \
        python shared_evaluation.py WORKDIR OUT_PREFIX [NUM_SAMPLES [WEIGHTS]]

WORKDIR holds a trained run of the suite's tiny config. Metrics of every
kind of per-sample part (Inception outputs, here of a stand-in, NIQE
features, the images) on NUM_SAMPLES (default 24) samples of the newest
checkpoint, with as many reference images, uncached, as
`sampling.evaluate_samples` computes them: each process generates and
extracts its share, then all are scored together. On the command line
(for timing) the evaluation runs twice and "seconds" times the second
(compiled) one; WEIGHTS (Inception weights, e.g. random ones saved with
qagan_jax.evaluation.inception) puts the real network in place of the
stand-in.
Writes `OUT_PREFIX<process>.json` ({"metrics", "seconds", "processes"})
and `OUT_PREFIX<process>.npz` (the gathered per-sample parts). The suite
calls `evaluate` (tests/helpers/replicated_state.py in two processes,
tests/test_distributed.py in its own for the one-process result); the
command line times it.
"""

import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from helpers import runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax import modes  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax import sampling  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax.evaluation import shares  # pylint: disable=g-import-not-at-top,wrong-import-position


class Projection:
  """`images [N, R, R, 3]` uint8 -> (features `[N, 2048]`, logits
  `[N, 1008]`): a fixed random linear map of each image, on the devices."""

  def __init__(self, resolution: int):
    rng = np.random.default_rng(0)
    size = resolution * resolution * 3
    self._maps = (rng.normal(size=(size, 2048)).astype(np.float32) / size,
                  rng.normal(size=(size, 1008)).astype(np.float32) / size)
    self._apply = jax.jit(lambda x, a, b: (x @ a, x @ b))

  def __call__(self, images):
    flat = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
    return tuple(np.asarray(y) for y in self._apply(flat, *self._maps))


def evaluate(config, workdir: str, prefix: str, num: int = 24,
             warm: bool = False, weights: str | None = None) -> None:
  """The shared evaluation of `workdir`'s newest checkpoint (a run of
  `config`), on `num` samples and as many references; writes this
  process's `prefix<process>.json` and `.npz`. With `weights`, the real
  Inception network (random weights will do for timing) instead of the
  stand-in."""
  config = config.copy_and_resolve_references()
  # every kind of part: Inception outputs, NIQE rows, the samples
  config.eval.metrics = ('fid', 'is', 'kid', 'prdc', 'niqe', 'swd')
  config.eval.reference_samples = config.eval.swd_images = num
  config.eval.batch_size = 12
  setup, state, _ = modes.restore_state(config, workdir)
  if weights:
    config.eval.inception_weights = weights
    evaluator = evaluator_lib.Evaluator(config, config.eval.metrics, num)
  else:
    evaluator = evaluator_lib.Evaluator(config, ('niqe', 'swd'), num)
    # Inception at 299x299 costs seconds a batch on a CPU: a fixed random
    # projection of each image stands in for it (features and logits of
    # the image alone, as Inception's), for the samples and the references
    evaluator.metrics = config.eval.metrics
    evaluator.extractor = Projection(config.model.resolution)
  sampler = sampling.Sampler(setup, config.run.standing_stats_samples)
  # the per-sample parts as scored (the first gather of an evaluation; the
  # reference's comes after), for a closer comparison than the metrics
  parts, gather = {}, shares.gather

  def keep_parts(found, count):
    gathered = gather(found, count)
    if not parts:
      parts.update(gathered)
    return gathered

  shares.gather = keep_parts
  try:
    for _ in range(2 if warm else 1):
      parts.clear()
      start = time.perf_counter()
      metrics = sampling.evaluate_samples(evaluator, sampler, state, num)
      seconds = time.perf_counter() - start
  finally:
    shares.gather = gather
  index = jax.process_index()
  pathlib.Path(f'{prefix}{index}.json').write_text(json.dumps(
      {'metrics': metrics, 'seconds': seconds,
       'processes': jax.process_count()}))
  np.savez(f'{prefix}{index}.npz', **parts)


def main(workdir: str, prefix: str, num: int, weights: str | None) -> None:
  if 'JAX_NUM_PROCESSES' in os.environ:
    jax.distributed.initialize(
        os.environ['JAX_COORDINATOR_ADDRESS'],
        int(os.environ['JAX_NUM_PROCESSES']),
        int(os.environ['JAX_PROCESS_ID']), heartbeat_timeout_seconds=10)
  evaluate(runs.tiny_config(), workdir, prefix, num, warm=True,
           weights=weights)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 24,
       sys.argv[4] if len(sys.argv) > 4 else None)
