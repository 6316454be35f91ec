"""jax.distributed started where JAX finds a cluster: each environment JAX detects, simulated on loopback; what it leaves alone; a missed pod slice refused."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import pytest

from qagan_jax import cluster
from qagan_jax import errors

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = REPO_ROOT / 'tests' / 'helpers' / 'cluster_process.py'
# the variables of the launchers JAX reads, cleared around each simulation
LAUNCHER_VARIABLES = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'JAX_COORD',
                      'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'KUBERNETES_',
                      'GCE_METADATA')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def clean_environment() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(LAUNCHER_VARIABLES) and 'proxy' not in k.lower()}
  env['JAX_PLATFORMS'] = 'cpu'
  env['XLA_FLAGS'] = ' '.join(   # one CPU device per process
      f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f)
  return env


@pytest.fixture
def no_launcher(monkeypatch):
  for name in list(os.environ):
    if name.startswith(LAUNCHER_VARIABLES):
      monkeypatch.delenv(name)


def start(tmp_path, kind, index, count, port, mode='auto', env=None):
  log = tmp_path / f'{kind}-{mode}-{index}-of-{count}.log'
  with open(log, 'w') as out:
    process = subprocess.Popen(
        [sys.executable, str(HELPER), kind, str(index), str(count), str(port),
         mode], cwd=REPO_ROOT, env=dict(clean_environment(), **(env or {})),
        stdout=out, stderr=subprocess.STDOUT)
  process.log = log
  return process


def outcome(process) -> tuple[dict | None, str]:
  try:
    process.wait(timeout=120)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
  text = process.log.read_text()
  lines = [l for l in text.splitlines() if l.startswith('{')]
  return (json.loads(lines[-1]) if lines and process.returncode == 0
          else None), text


@pytest.mark.slow
def test_jax_distributed_starts_where_jax_finds_a_cluster(tmp_path):
  """Each cluster JAX detects, two processes on loopback: each pair forms
  one jax.distributed cluster (a collective gathers both indices). And
  what is left alone or refused, a process each. All at once (the cost
  is JAX's import, ~2 s a process)."""
  pairs = {kind: [start(tmp_path, kind, i, 2, port) for i in range(2)]
           for kind in ('slurm', 'openmpi', 'gke_tpu', 'gce_tpu')
           if (port := free_port())}
  alone = {
      # a launch of one process: JAX would pin it to its local id's GPU
      'slurm': start(tmp_path, 'slurm', 0, 1, free_port()),
      'openmpi': start(tmp_path, 'openmpi', 0, 1, free_port()),
      'kubernetes': start(tmp_path, 'kubernetes', 0, 1, free_port()),
      'none': start(tmp_path, 'none', 0, 1, free_port()),
      'missed_tpu': start(tmp_path, 'missed_tpu', 0, 4, free_port()),
      'none_on': start(tmp_path, 'none', 0, 1, free_port(), mode='on'),
  }
  failures = []
  for kind, processes in pairs.items():
    for index, process in enumerate(processes):
      found, text = outcome(process)
      if not found or {k: found.get(k) for k in
                       ('started', 'index', 'count', 'gathered')} != {
                           'started': True, 'index': index, 'count': 2,
                           'gathered': [0, 1]}:
        failures.append(f'{kind} process {index}: {found}\n{text[-2000:]}')
  results = {name: outcome(process) for name, process in alone.items()}
  for name, (found, text) in results.items():
    if not found:
      failures.append(f'{name}: {text[-2000:]}')
  assert not failures, '\n\n'.join(failures)
  said = {name: found['said'] for name, (found, _) in results.items()}
  for name in ('slurm', 'openmpi', 'kubernetes', 'none'):
    assert results[name][0]['started'] is False, name
    assert results[name][0]['error'] is None, name
  assert said['slurm'] == ['Slurm started this process alone: running '
                           'without jax.distributed, on every device of '
                           'this host.']
  assert said['openmpi'][0].startswith('Open MPI started this process alone')
  assert said['none'] == []
  # Kubernetes without its package: JAX's paragraph of a warning said in a
  # line of the run's log
  assert len(said['kubernetes']) == 1, said
  assert 'jax[k8s]' in said['kubernetes'][0]
  assert 'kubernetes' not in results['kubernetes'][1].split('{')[0].lower()
  refused = results['missed_tpu'][0]['error']
  assert refused.startswith('ClusterError: this TPU slice has 4 hosts')
  assert '--distributed=on' in refused
  failed = results['none_on'][0]['error']
  assert failed.startswith('ClusterError: jax.distributed.initialize() '
                           'failed: coordinator_address should be defined')
  assert 'JAX_COORDINATOR_ADDRESS' in failed


def test_one_process_launches_are_recognised():
  assert cluster.one_process_launch({'SLURM_NTASKS': '1'}) == 'Slurm'
  assert cluster.one_process_launch({'OMPI_COMM_WORLD_SIZE': '1'}) == (
      'Open MPI')
  for environ in ({}, {'SLURM_NTASKS': '16'}, {'OMPI_COMM_WORLD_SIZE': '2'}):
    assert cluster.one_process_launch(environ) is None


def test_only_a_tpu_that_sees_other_hosts_is_refused():
  with pytest.raises(errors.ClusterError, match='has 4 hosts'):
    cluster.refuse_uncoordinated_hosts('tpu', 4)
  cluster.refuse_uncoordinated_hosts('tpu', 1)
  # other platforms: a process count above one means a cluster was started
  cluster.refuse_uncoordinated_hosts('gpu', 4)


def test_bad_settings_are_one_clear_error(no_launcher, monkeypatch):
  with pytest.raises(errors.ConfigurationError, match='--distributed=yes'):
    cluster.initialize('yes')
  monkeypatch.setenv('JAX_PROCESS_ID', 'first')
  with pytest.raises(errors.ConfigurationError,
                     match="JAX_PROCESS_ID='first': expected a whole number"):
    cluster.initialize('on')
  assert not jax.distributed.is_initialized()
