"""The sample and evaluate modes on a trained workdir: a grid and its images, a report of the metrics."""

import json

import numpy as np
import pytest

from qagan_jax import input_pipeline
from qagan_jax import modes


@pytest.fixture
def trained(trained_run, copy_run, tiny_run_config):
  """The tiny run of the suite, trained to step 6 (a copy to write into)."""
  return tiny_run_config(), copy_run(trained_run)


@pytest.mark.slow
def test_evaluate_run_writes_a_report_of_the_offline_metrics(trained):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.eval.metrics = ('swd', 'niqe', 'diversity', 'prdc_niqe')
  path = modes.evaluate_run(config, workdir, num_samples=64)
  assert path == workdir / 'eval' / 'step_0000006.json'
  result = json.loads(path.read_text())
  assert result['step'] == 6 and result['num_samples'] == 64
  values = result['metrics']
  prdc_names = {f'prdc_niqe/{n}' for n in ('precision', 'recall', 'density',
                                           'coverage')}
  assert {'swd/mean', 'swd/32', 'swd/16', 'niqe_distance',
          'diversity/ssim_pairs', 'diversity/ssim_pairs_real_held_out'} | prdc_names <= (
              set(values))
  assert all(np.isfinite(v) for v in values.values())
  # six training steps: far from the data, by every measure
  assert values['swd/mean'] > 10 and values['niqe_distance'] > 1
  assert values['prdc_niqe/coverage'] < 0.5


def test_sample_mode_writes_a_grid_and_the_images(trained_run, copy_run,
                                                  tiny_run_config,
                                                  monkeypatch, tmp_path):
  config = tiny_run_config()
  workdir = copy_run(trained_run)

  def no_data(*args, **kwargs):
    raise AssertionError('sampling must not need the dataset')

  monkeypatch.setattr(input_pipeline, 'create_loader', no_data)
  monkeypatch.setattr(input_pipeline, 'data_source', no_data)
  path = modes.sample(config, workdir, num_samples=10)
  assert path.is_file()
  stored = np.load(path.with_suffix('.npz'))
  assert stored['images'].shape == (10, 32, 32, 3)
  assert stored['images'].dtype == np.uint8 and int(stored['step']) == 6
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    modes.sample(config, tmp_path / 'empty')
