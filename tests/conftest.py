"""Shared fixtures: the reference data beside the repository, a shared compilation cache."""

import os
import pathlib
import tempfile

import jax
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# One persistent compilation cache for the session, in this process and in
# the subprocesses tests start: a run and its resume, or two command-line
# runs of one config, compile the same programs.
# With pytest-xdist the workers inherit the controller's directory.
_CACHE = os.environ.get('QAGAN_TEST_CACHE') or tempfile.mkdtemp(
    prefix='qagan-jax-test-cache-')
os.environ['QAGAN_TEST_CACHE'] = _CACHE
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


def shared_reference_dir() -> pathlib.Path | None:
  """`../shared/reference` beside the repository (or $QAGAN_SHARED_REFERENCE)."""
  path = pathlib.Path(os.environ.get(
      'QAGAN_SHARED_REFERENCE', REPO_ROOT.parent / 'shared' / 'reference'))
  return path if path.is_dir() else None


@pytest.fixture(scope='session')
def reference_dir() -> pathlib.Path:
  path = shared_reference_dir()
  if path is None:
    pytest.skip('reference data not found: expected ../shared/reference beside '
                'the repository (or set QAGAN_SHARED_REFERENCE)')
  return path


@pytest.fixture
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def tiny_run_config():
  """A factory of run configs that train in seconds: natural_patches, width 4."""
  return _tiny_run_config


def _tiny_run_config(method='ssim', **run_overrides):
  from qagan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config()
  config.data.dataset = 'natural_patches'
  config.data.patch_size = 32
  config.data.patches_per_epoch = 1024
  config.model.width = 4
  config.loss.method = method
  config.train.batch_size = 8
  config.train.generator_batch_size = 8
  config.train.n_critic = 1
  config.train.num_iters = 6
  config.run.update(dict(log_every=2, checkpoint_every=2, sample_every=3,
                         eval_every=3, eval_samples=64,
                         standing_stats_samples=32, sample_grid=16,
                         progress_bar=False))
  config.run.update(run_overrides)
  return config
