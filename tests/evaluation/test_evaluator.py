"""The Evaluator: every metric of a config on samples, reference statistics cached once for every run, clear failures."""

import logging
import threading

import numpy as np
import pytest

from qagan_jax import config as config_lib
from qagan_jax import input_pipeline
from qagan_jax import storage
from qagan_jax.evaluation import evaluator as evaluator_lib
from qagan_jax.evaluation import inception
from qagan_jax.evaluation import offline


@pytest.mark.slow
def test_inception_metrics_with_converted_weights_and_a_cached_reference(
    tiny_run_config, tmp_path, caplog, random_inception_variables):
  config = tiny_run_config()
  weights = tmp_path / 'inception.npz'
  inception.save_weights(random_inception_variables(seed=4), weights)
  config.eval.inception_weights = str(weights)
  config.eval.metrics = ('fid', 'is', 'kid', 'prdc')
  # one Inception batch of each set (the network resizes them to 299x299)
  config.eval.reference_samples = 12
  config.eval.batch_size = 12
  config_lib.validate(config)
  evaluator = evaluator_lib.Evaluator(config, config.eval.metrics, 12,
                                      cache_dir=tmp_path / 'reference')
  samples = np.random.default_rng(0).uniform(-1, 1, (12, 32, 32, 3))
  first = evaluator(samples)
  assert set(first) == {'fid', 'is', 'is_std', 'kid', 'kid_std', 'kid_stderr',
                        'precision', 'recall', 'density', 'coverage'}
  assert first['fid'] > 0 and first['is'] >= 1
  assert all(0 <= first[n] <= 1 for n in ('precision', 'recall', 'coverage'))
  assert len(list((tmp_path / 'reference').glob('*_inception_12_*.npz'))) == 1
  again = evaluator_lib.Evaluator(config, config.eval.metrics, 12,
                                  cache_dir=tmp_path / 'reference')
  with caplog.at_level(logging.INFO):
    (stats, kid_features), (cached, cached_kid) = (
        evaluator.inception_reference(), again.inception_reference())
  assert 'Reference Inception statistics from' in caplog.text
  for a, b in ((stats.mean, cached.mean), (stats.cov, cached.cov),
               (kid_features, cached_kid)):
    np.testing.assert_array_equal(a, b)


def test_one_reference_cache_serves_every_run_of_the_same_data(
    tiny_run_config, tmp_path, monkeypatch, caplog):
  monkeypatch.setenv('QAGAN_JAX_CACHE', str(tmp_path / 'user'))
  config = tiny_run_config(eval__swd_images=16)
  where = evaluator_lib.reference_cache_dir(config.eval)
  assert str(where) == str(tmp_path / 'user' / 'reference')
  metrics = ('niqe', 'swd')
  first = evaluator_lib.Evaluator(config, metrics, 16, cache_dir=where)
  rows = first.offline_reference()[1]
  cached = list((tmp_path / 'user' / 'reference').glob('*_niqe_16_*.npz'))
  assert len(cached) == 1
  # another run of the same data (another workdir, other loader and
  # training settings) reads them, computing nothing
  other = tiny_run_config(eval__swd_images=16, data__worker_count=1,
                          train__num_iters=12)
  monkeypatch.setattr(offline, 'niqe_feature_rows', _no_recomputation)
  with caplog.at_level(logging.INFO):
    again = evaluator_lib.Evaluator(other, metrics, 16, cache_dir=where)
    np.testing.assert_array_equal(again.offline_reference()[1][0], rows[0])
  assert 'Reference NIQE features from' in caplog.text
  # other data, another file
  changed = tiny_run_config(eval__swd_images=16, data__patches_per_epoch=2048)
  assert (evaluator_lib.Evaluator(changed, metrics, 16, cache_dir=where)
          ._cache_path('niqe', 16) != first._cache_path('niqe', 16))
  config.eval.reference_cache = 'none'
  assert evaluator_lib.reference_cache_dir(config.eval) is None


def _no_recomputation(*args, **kwargs):
  raise AssertionError('the cached reference was computed again')


def test_two_runs_writing_a_reference_at_once_leave_one_whole_file(tmp_path):
  path = tmp_path / 'cache' / 'reference.npz'
  arrays = [np.full((256, 2048), value, np.float32) for value in (1.0, 2.0)]
  barrier = threading.Barrier(2)

  def write(array):
    barrier.wait()
    for _ in range(5):
      storage.save_npz(path, compress=False, features=array)

  threads = [threading.Thread(target=write, args=(a,)) for a in arrays]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  stored = storage.load_npz(path)['features']
  assert any(np.array_equal(stored, a) for a in arrays)   # one, whole
  assert [p.name for p in path.parent.iterdir()] == ['reference.npz']


def test_missing_weights_fail_before_any_work(tmp_path):
  config = config_lib.get_config('cifar10', 'ssim')
  config.eval.inception_weights = str(tmp_path / 'absent.npz')
  with pytest.raises(inception.InceptionWeightsMissing,
                     match='pt_inception-2015-12-05'):
    evaluator_lib.Evaluator(config, config.eval.metrics, 100)


def test_unknown_metric_names_are_rejected_with_a_suggestion():
  config = config_lib.demo_config()
  config.eval.metrics = ('fdi', 'swd')
  with pytest.raises(ValueError, match="unknown metric 'fdi'; did you mean 'fid'"):
    config_lib.validate(config)


def test_uint8_and_float_samples_give_the_same_metrics(tiny_run_config):
  config = tiny_run_config()
  config.eval.reference_split = 'held_out'
  evaluator = evaluator_lib.Evaluator(config, ('swd', 'niqe', 'diversity'), 32)
  floats = np.random.default_rng(5).uniform(-1, 1, (32, 32, 32, 3))
  as_saved = input_pipeline.to_uint8(floats)
  from_uint8 = evaluator(as_saved)
  from_float = evaluator(input_pipeline.to_unit_range(as_saved))
  # uint8 samples are converted as to_unit_range does, then take the float
  # path: the same numbers
  assert from_uint8 == from_float


def test_non_finite_samples_are_refused_with_their_count(tiny_run_config):
  config = tiny_run_config()
  evaluator = evaluator_lib.Evaluator(config, ('swd',), 8)
  samples = np.zeros((8, 32, 32, 3), np.float32)
  samples[2, 0, 0, 0] = np.nan
  samples[5, 3, 3, 1] = np.inf
  with pytest.raises(evaluator_lib.NonFiniteSamplesError, match='2 of 8 samples'):
    evaluator(samples)


@pytest.mark.parametrize('damage', [
    lambda data: data[:len(data) // 3],                # cut short
    lambda data: b'garbage' * 100,                     # not a zip
    lambda data: np.lib.format.MAGIC_PREFIX + data,    # not an npz either
])
def test_a_damaged_cache_entry_is_computed_again_with_a_warning(
    tiny_run_config, tmp_path, caplog, damage):
  config = tiny_run_config(eval__swd_images=16)
  first = evaluator_lib.Evaluator(config, ('niqe',), 16, cache_dir=tmp_path)
  rows = first.offline_reference()[1]
  (path,) = tmp_path.glob('*_niqe_16_*.npz')
  path.write_bytes(damage(path.read_bytes()))
  with caplog.at_level('WARNING'):
    again = evaluator_lib.Evaluator(config, ('niqe',), 16, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.offline_reference()[1][0], rows[0])
  assert f'{path} cannot be read' in caplog.text
  assert 'computing them again' in caplog.text
  # and written whole again
  np.testing.assert_array_equal(storage.load_npz(path)['features'], rows[0])


def test_an_unwritable_cache_is_skipped_with_a_warning_naming_the_setting(
    tiny_run_config, caplog):
  config = tiny_run_config(eval__swd_images=16)
  unwritable = '/proc/qagan_jax_cache'        # not writable, even as root
  evaluator = evaluator_lib.Evaluator(config, ('niqe', 'swd'), 16,
                                      cache_dir=unwritable)
  samples = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3))
  with caplog.at_level('WARNING'):
    found = evaluator(samples)
  assert np.isfinite(found['niqe_distance'])
  assert 'eval.reference_cache' in caplog.text and unwritable in caplog.text
