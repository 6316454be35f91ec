"""Shared fixtures: the reference data in tests/data, a shared compilation cache, trained runs."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# One BLAS thread a process: the suite runs two test processes (and the
# multi-process tests more) on as many cores, and OpenBLAS's threads, which
# spin while they wait, then contend for them: numpy's eigh of FID's
# 2048x2048 covariance took 15.7 s instead of 1.1 s in each of two
# processes evaluating at once. Set before numpy loads OpenBLAS; the test
# processes and the subprocesses tests start inherit it.
for _variable in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_variable, '1')

import filelock  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from helpers import runs  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# One persistent compilation cache for the session, in this process and in
# the subprocesses tests start: a run and its resume, or two command-line
# runs of one config, compile the same programs.
# With pytest-xdist the workers inherit the controller's directory.
_CACHE = os.environ.get('QAGAN_TEST_CACHE') or tempfile.mkdtemp(
    prefix='qagan-jax-test-cache-')
os.environ['QAGAN_TEST_CACHE'] = _CACHE
# the reference statistics' cache of the package (a user's is in ~/.cache):
# the session's own
os.environ['QAGAN_JAX_CACHE'] = os.path.join(_CACHE, 'qagan_jax')
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
# The suite is compile-bound: its programs have tiny shapes and run a few
# times each. XLA:CPU's classic LLVM emitters for fused elementwise code, at
# -O0 without LLVM's expensive passes, compile them about 3x faster than
# the defaults (the tiny train step: 7.3 s -> 2.2 s); XLA's own (HLO)
# optimisations, which decide what the programs compute and in what order,
# are untouched, and every comparison of the suite allows for float32
# rounding (tests/helpers/numerics.py). Set before any backend starts;
# subprocesses inherit it. The benchmarks (experiments/) and users' runs
# compile with the defaults.
_FAST_COMPILE = ('--xla_backend_optimization_level=0 '
                 '--xla_llvm_disable_expensive_passes=true '
                 '--xla_cpu_use_fusion_emitters=false')
if _FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, (os.environ.get('XLA_FLAGS'), _FAST_COMPILE)))


@pytest.fixture(scope='session')
def niqe_reference_dir() -> pathlib.Path:
  """tests/data/niqe: NIQE scores of the MATLAB release (tests/data/README.md)."""
  return REPO_ROOT / 'tests' / 'data' / 'niqe'


@pytest.fixture
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def tiny_run_config():
  """A factory of run configs that train in seconds (tests/helpers/runs.py)."""
  return runs.tiny_config


def _session_dir(tmp_path_factory) -> pathlib.Path:
  """A folder of this session that every pytest-xdist worker sees."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def _shared_run(tmp_path_factory, name, stop_after=None) -> pathlib.Path:
  """The workdir of the tiny run (stopped after `stop_after`), trained once
  per session by whichever test process asks first; read-only for tests
  (`copy_run` gives a test its own copy)."""
  from qagan_jax import loop  # pylint: disable=g-import-not-at-top
  root = _session_dir(tmp_path_factory)
  workdir, done = root / name, root / f'{name}.complete'
  with filelock.FileLock(root / f'{name}.lock'):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)   # a failed attempt's
      loop.train_and_evaluate(runs.tiny_config(), workdir,
                              stop_after=stop_after)
      done.touch()
  return workdir


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory) -> pathlib.Path:
  """The tiny run trained to its end (step 6: checkpoints 2, 4, 6,
  evaluations at 0, 3, 6); do not write into it."""
  return _shared_run(tmp_path_factory, 'trained_run')


@pytest.fixture(scope='session')
def stopped_run(tmp_path_factory) -> pathlib.Path:
  """The tiny run stopped after step 3 (checkpoints 2, 3), data on the
  devices; do not write into it."""
  return _shared_run(tmp_path_factory, 'stopped_run', stop_after=3)


@pytest.fixture(scope='session')
def four_devices(tmp_path_factory) -> dict:
  """What tests/helpers/sharded_step.py computes on 1 and on 4 CPU devices
  (train steps, batch draws), run once per session in a subprocess: the
  device count is fixed when jax starts."""
  root = _session_dir(tmp_path_factory)
  out = root / 'four_devices.npz'
  with filelock.FileLock(root / 'four_devices.lock'):
    if not out.exists():
      env = dict(os.environ)
      env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                          ' --xla_force_host_platform_device_count=4')
      partial = root / 'four_devices.partial.npz'
      subprocess.run([sys.executable,
                      str(REPO_ROOT / 'tests' / 'helpers' / 'sharded_step.py'),
                      str(partial)], check=True, env=env, timeout=600)
      partial.rename(out)
  return dict(np.load(out))


@pytest.fixture
def copy_run(tmp_path):
  """`copy_run(workdir) -> a copy of it in this test's tmp_path`."""

  def copy(workdir: pathlib.Path) -> pathlib.Path:
    target = tmp_path / workdir.name
    shutil.copytree(workdir, target)
    return target

  return copy


def pytest_collection_modifyitems(config, items):
  """The slow tests first (each file's order kept otherwise): pytest-xdist
  then starts the long ones early and fills in with the short ones, and its
  two processes finish together."""
  del config
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
