"""The preflight check's projection: the loop's events counted at the config's intervals, times what was measured.

The check itself runs on the command line in tests/test_main.py.
"""

import pytest

from qagan_jax import preflight


def test_the_projection_counts_what_the_loop_does_at_its_intervals(
    tiny_run_config):
  config = tiny_run_config(train__num_iters=100, run__eval_every=30,
                           run__sample_every=50, run__checkpoint_every=40,
                           run__eval_samples=64, eval__num_samples=640)
  measured = preflight.Measured(
      startup=1.0, compile=2.0, step=0.5, evaluation_first=4.0,
      evaluation=1.0, grid=0.1, checkpoint_save=3.0, checkpoint_blocking=0.2,
      checkpoint_restore=0.3, checkpoint_bytes=10)
  found = preflight.project(config, measured)
  # evaluations and grids at the start, every interval and at the end;
  # checkpoints every interval and at the end
  assert found['counts'] == {'iterations': 100, 'evaluations': 5,
                             'sample_grids': 3, 'checkpoints': 3,
                             'final_evaluation_samples': 640}
  seconds = found['seconds']
  assert seconds == {'startup': 1.0, 'compile': 2.0, 'training': 50.0,
                     'evaluations': 4.0 + 4 * 1.0, 'sample_grids': 0.3,
                     'checkpoints': 0.6, 'final_evaluation': 10.0}
  assert found['total_seconds'] == pytest.approx(61.9)
  # nothing where the config does none
  quiet = tiny_run_config(run__sample_grid=0, eval__train_metrics=())
  none = preflight.project(quiet, measured)
  assert none['counts']['evaluations'] == none['counts']['sample_grids'] == 0
  assert none['seconds']['evaluations'] == none['seconds']['sample_grids'] == 0
