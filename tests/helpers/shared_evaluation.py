"""One process of an evaluation shared by the processes of a jax.distributed job (or the only one).

    [JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=I] \
        python shared_evaluation.py WORKDIR WEIGHTS OUT_PREFIX [NUM_SAMPLES [warm]]

WORKDIR holds a trained run of the suite's tiny config, WEIGHTS Inception
weights (random ones are enough). Metrics of every kind of per-sample part
(Inception outputs, NIQE features, the images) on NUM_SAMPLES (default 24) samples of the newest checkpoint, with as many
reference images, uncached, as `loop.evaluate_samples` computes them: each
process generates and extracts its share, then all are scored together.
With `warm`, the evaluation runs twice and "seconds" times the second
(compiled) one. Writes `OUT_PREFIX<process>.json` ({"metrics", "seconds",
"processes"}) and
`OUT_PREFIX<process>.npz` (the gathered per-sample parts). Used by
tests/test_distributed.py, which also calls `main` in its own process for
the one-process evaluation.
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
from qagan_jax import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from qagan_jax.evaluation import report  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(workdir: str, weights: str, prefix: str, num: int,
         warm: bool) -> None:
  if 'JAX_NUM_PROCESSES' in os.environ:
    jax.distributed.initialize(
        os.environ['JAX_COORDINATOR_ADDRESS'],
        int(os.environ['JAX_NUM_PROCESSES']),
        int(os.environ['JAX_PROCESS_ID']), heartbeat_timeout_seconds=10)
  config = runs.tiny_config(
      eval__inception_weights=weights,
      # every kind of part: Inception outputs, NIQE rows, the samples
      eval__metrics=('fid', 'is', 'kid', 'prdc', 'niqe', 'swd'),
      eval__reference_samples=num, eval__batch_size=12, eval__swd_images=num,
      eval__diversity_pairs=50)
  setup, state, _ = loop.restore_state(config, workdir)
  evaluator = report.Evaluator(config, config.eval.metrics, num)
  sampler = loop.make_sampler(setup, config.run.standing_stats_samples)
  # the per-sample parts as scored (the first gather of an evaluation; the
  # reference's comes after), for a closer comparison than the metrics
  parts, gather = {}, report.gather

  def keep_parts(found, count):
    gathered = gather(found, count)
    if not parts:
      parts.update(gathered)
    return gathered

  report.gather = keep_parts
  try:
    for _ in range(2 if warm else 1):
      parts.clear()
      start = time.perf_counter()
      metrics = loop.evaluate_samples(evaluator, sampler, state, num,
                                      setup.latent_dim)
      seconds = time.perf_counter() - start
  finally:
    report.gather = gather
  index = jax.process_index()
  pathlib.Path(f'{prefix}{index}.json').write_text(json.dumps(
      {'metrics': metrics, 'seconds': seconds,
       'processes': jax.process_count()}))
  np.savez(f'{prefix}{index}.npz', **parts)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], sys.argv[3],
       int(sys.argv[4]) if len(sys.argv) > 4 else 24, len(sys.argv) > 5)
