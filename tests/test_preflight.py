"""The preflight check's projection: the loop's events counted at the config's intervals, times what was measured.

The check itself runs on the command line in tests/test_main.py.
"""

import pytest

from qagan_jax import errors
from qagan_jax import preflight
from qagan_jax import run as run_lib
from qagan_jax.evaluation import evaluator as evaluator_lib
from qagan_jax.evaluation import inception


def test_the_projection_counts_what_the_loop_does_at_its_intervals(
    tiny_run_config):
  config = tiny_run_config(train__num_iters=100, run__eval_every=30,
                           run__sample_every=50, run__checkpoint_every=40,
                           run__eval_samples=64, eval__num_samples=640)
  measured = preflight.Measured(
      startup=1.0, compile=2.0, step=0.5, evaluation_first=4.0,
      evaluation=1.0, grid=0.1, checkpoint_save=3.0, checkpoint_blocking=0.2,
      checkpoint_restore=0.3, checkpoint_bytes=10, final_evaluation=10.0)
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


@pytest.mark.slow
def test_the_evaluate_modes_cost_counts_inception_and_missing_references(
    tiny_run_config, tmp_path):
  """Sampling and features timed on a probe and projected, the scoring
  timed at the full count, the Inception reference statistics the cache
  lacks projected to their image count, the Inception network's memory;
  missing weights said, the rest measured."""
  weights = tmp_path / 'inception.npz'
  inception.save_weights(inception.random_variables(seed=1), weights)
  config = tiny_run_config(
      eval__metrics=('fid', 'kid', 'swd'), eval__train_metrics=(),
      eval__inception_weights=str(weights), eval__batch_size=4,
      eval__num_samples=1000, eval__reference_samples=100,
      eval__swd_images=64, eval__reference_cache=str(tmp_path / 'cache'))
  run = run_lib.build_run(config, tmp_path / 'run')
  try:
    cost = preflight.evaluation_cost(run, run.state, config.eval.metrics,
                                     config.eval.num_samples)
    assert cost['metrics'] == ['fid', 'kid', 'swd']
    assert not cost['missing_inception'] and cost['probe_samples'] == 4
    [reference] = cost['references']
    assert (reference['kind'], reference['images'], reference['cached']) == (
        'inception', 100, False)
    assert reference['seconds'] > 0
    assert cost['seconds'] > 0 and cost['compile_seconds'] >= 0
    # and the real images of SWD, read once (rounding: 0.05 s a term)
    assert cost['first_seconds'] >= (
        cost['compile_seconds'] + cost['seconds'] + reference['seconds']
        - 0.15)
    assert cost['inception_planned_bytes'] > 10 * 2**20   # 299x299 inputs
    line = preflight.evaluation_text('then --mode=evaluate', cost, each=False)
    assert 'inception reference statistics of 100 images, not cached' in line
    assert 'sampling and features timed on 4 samples' in line

    # the weights missing: said, and the rest measured
    config.eval.inception_weights = str(tmp_path / 'absent.npz')
    cost = preflight.evaluation_cost(run, run.state, config.eval.metrics,
                                     config.eval.num_samples)
    assert cost['metrics'] == ['swd'] and cost['references'] == []
    assert cost['seconds'] > 0
    assert 'python -m qagan_jax.evaluation.inception' in cost[
        'missing_inception']
    line = preflight.evaluation_text('then --mode=evaluate', cost, each=False)
    assert 'not counted: the Inception metrics, whose weights are missing' in (
        line)
    # training's metrics cannot do without them: the run would fail, and
    # so does its check
    with pytest.raises(errors.DataError, match='evaluation.inception'):
      preflight.evaluation_cost(run, run.state, config.eval.metrics,
                                config.eval.num_samples, required=True)

    # the NIQE reference: computed (and cached) by the first check, read by
    # the next
    for cached in (False, True):
      [reference] = preflight.evaluation_cost(run, run.state, ('niqe',),
                                              64)['references']
      assert (reference['kind'], reference['images'],
              reference['cached']) == ('niqe', 64, cached)
  finally:
    run.close()


def test_the_cache_decides_which_references_are_counted(tiny_run_config,
                                                         tmp_path):
  config = tiny_run_config(eval__metrics=('niqe',), eval__num_samples=640,
                           eval__swd_images=32,
                           eval__reference_cache=str(tmp_path / 'cache'))
  [(kind, images, path)] = evaluator_lib.Evaluator(
      config, config.eval.metrics, 640,
      cache_dir=evaluator_lib.reference_cache_dir(config.eval)).references()
  assert (kind, images) == ('niqe', 32)
  assert str(path).startswith(str(tmp_path / 'cache'))
  assert evaluator_lib.Evaluator(config, ('swd',), 640).references() == []
