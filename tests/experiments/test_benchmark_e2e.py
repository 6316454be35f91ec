"""The end-to-end benchmark's synthetic dataset: tfds's on-disk format, read by the real host and device paths."""

import importlib.util
import pathlib

import numpy as np
import pytest

from qagan_jax import input_pipeline

pytest.importorskip('importlib_resources')   # tfds needs it to prepare

SCRIPT = (pathlib.Path(__file__).resolve().parents[2] / 'experiments' /
          'benchmark_e2e.py')


def load_benchmark():
  spec = importlib.util.spec_from_file_location('benchmark_e2e', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('dataset, side', [('cifar10', 32), ('stl10', 48)])
def test_synthetic_dataset_is_read_from_disk_by_both_paths(tmp_path, dataset,
                                                           side):
  load_benchmark().write_synthetic_dataset(dataset, tmp_path, 40)
  config = input_pipeline.default_config()
  config.dataset = dataset
  config.data_dir = str(tmp_path)
  source = input_pipeline.data_source(config)
  assert len(source) == 40
  loader = input_pipeline.create_loader(config, 8, seed=0, device_count=1)
  batch = next(iter(loader))
  assert batch.shape == (8, side, side, 3) and batch.dtype == np.uint8
  assert batch.min() < batch.max()
  records = input_pipeline.load_images(config, 0, 40, source=source)
  assert records.shape == (40, side, side, 3) and records.dtype == np.uint8
  # the device path's records are the host path's images, unflipped
  held = input_pipeline.fit_geometry(source[7]['image'], dataset, side)
  np.testing.assert_array_equal(records[7], held)
  assert records.std() > 10       # images, not blank
