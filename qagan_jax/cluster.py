"""The other processes of a multi-host run: jax.distributed, started where JAX finds a cluster.

`initialize(mode)` runs once, from main.py, before JAX touches a device:

  'off'   never: this process runs alone.
  'on'    always: JAX's cluster detection, or a cluster by hand
          (JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID).
  'auto'  when JAX finds a cluster. `jax.distributed.initialize()` without
          arguments looks for every environment JAX supports (a Cloud TPU
          pod slice through its metadata server or GKE's variables, Slurm,
          Open MPI, a Kubernetes indexed Job, JAX_COORDINATOR_ADDRESS), and
          finding none, asks for a coordinator address: that is "no cluster".

Two launches JAX would find are left alone in 'auto': a Slurm or Open MPI
launch of one process (SLURM_NTASKS=1, OMPI_COMM_WORLD_SIZE=1), which JAX
would pin to one GPU (one device per process under those launchers, by
its documented default) with nothing to coordinate. Kubernetes without the
`kubernetes` package, where JAX cannot look for the Job's other pods, is
said in one line (JAX's own warning is a paragraph).

After 'auto' started nothing, a TPU whose runtime sees other hosts
(`jax.process_count() > 1`: a pod slice JAX's detection missed) is
refused at once with what to do: uncoordinated, its processes would not
share a preemption notice nor agree on checkpoints.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping
import warnings

from qagan_jax import errors

log = logging.getLogger(__name__)

MODES = ('auto', 'on', 'off')

# launchers whose one-process jobs JAX's detection would pin to one GPU:
# the variable that holds their process count
_ONE_PROCESS_LAUNCHES = (('SLURM_NTASKS', 'Slurm'),
                         ('OMPI_COMM_WORLD_SIZE', 'Open MPI'))

_REMEDY = ('A multi-host run needs its cluster environment (Cloud TPU, Slurm, '
           'Open MPI, Kubernetes) or JAX_COORDINATOR_ADDRESS, '
           'JAX_NUM_PROCESSES and JAX_PROCESS_ID on every host; '
           '--distributed=off runs this process alone.')


def one_process_launch(environ: Mapping[str, str]) -> str | None:
  """The launcher (Slurm, Open MPI) whose variables say it started this
  process alone; None when none does."""
  for variable, launcher in _ONE_PROCESS_LAUNCHES:
    if environ.get(variable, '').strip() == '1':
      return launcher
  return None


def initialize(mode: str, heartbeat_timeout: int = 100,
               environ: Mapping[str, str] | None = None) -> bool:
  """Starts jax.distributed as `mode` says (above); whether it started.

  Raises errors.ClusterError when it cannot start where it must ('on', or
  a cluster 'auto' found), and when 'auto' started nothing on a TPU whose
  runtime sees other hosts.
  """
  import jax  # pylint: disable=g-import-not-at-top
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise errors.ConfigurationError(
        f'--distributed={mode}: expected one of {", ".join(MODES)}')
  if mode == 'off':
    return False
  if mode == 'auto' and (launcher := one_process_launch(environ)):
    log.info('%s started this process alone: running without '
             'jax.distributed, on every device of this host.', launcher)
    return False
  explicit = {}
  for variable, argument in (('JAX_NUM_PROCESSES', 'num_processes'),
                             ('JAX_PROCESS_ID', 'process_id')):
    if variable in environ:
      try:
        explicit[argument] = int(environ[variable])
      except ValueError:
        raise errors.ConfigurationError(
            f'{variable}={environ[variable]!r}: expected a whole number. '
            f'{_REMEDY}') from None
  if 'JAX_CPU_COLLECTIVES_IMPLEMENTATION' not in environ:
    # collectives between the CPU devices of processes (no effect on
    # accelerators, which have their own)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  failure = None
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout,
                                 **explicit)
    except ValueError as error:
      if not (mode == 'auto' and _no_cluster(error, explicit)):
        failure = error
    except Exception as error:  # pylint: disable=broad-except
      # a cluster JAX found that does not answer: a metadata server, the
      # Kubernetes API, a coordinator that never comes up
      failure = error
  kubernetes = _pass_on(caught)
  if failure is not None:
    raise errors.ClusterError(
        f'jax.distributed.initialize() failed: '
        f'{" ".join(str(failure).split()) or type(failure).__name__}. '
        f'{kubernetes}{_REMEDY}') from failure
  if not jax.distributed.is_initialized():
    if kubernetes:
      log.info('%sRunning this pod alone.', kubernetes)
    refuse_uncoordinated_hosts(jax.default_backend(), jax.process_count())
    return False
  log.info('jax.distributed: process %d of %d, %d devices in all.',
           jax.process_index(), jax.process_count(), jax.device_count())
  return True


def _no_cluster(error: ValueError, explicit) -> bool:
  # JAX's words when it found no environment and was given no address
  return not explicit and 'coordinator_address' in str(error)


def _pass_on(caught) -> str:
  """Shows the warnings JAX gave while it looked for a cluster, but for
  Kubernetes', returned as a sentence ('' when there is none)."""
  kubernetes = ''
  for warning in caught:
    if 'kubernetes' in str(warning.message).lower():
      kubernetes = ('Kubernetes: JAX cannot look for this Job\'s other pods '
                    'without the kubernetes package (pip install '
                    '"jax[k8s]"). ')
    else:
      warnings.showwarning(warning.message, warning.category,
                           warning.filename, warning.lineno)
  return kubernetes


def refuse_uncoordinated_hosts(platform: str, process_count: int) -> None:
  """Raises errors.ClusterError for a TPU whose runtime sees
  `process_count` > 1 hosts while jax.distributed did not start: a pod
  slice that JAX's cluster detection missed."""
  if platform == 'tpu' and process_count > 1:
    raise errors.ClusterError(
        f'this TPU slice has {process_count} hosts, but JAX found no cluster '
        'to coordinate them (its Cloud TPU detection reads the metadata '
        'server, or TPU_WORKER_HOSTNAMES and TPU_WORKER_ID on GKE). Run with '
        '--distributed=on on every host, with JAX_COORDINATOR_ADDRESS (host '
        "0's address and a free port), JAX_NUM_PROCESSES and JAX_PROCESS_ID "
        'where JAX cannot find them; --distributed=off trains each host '
        'uncoordinated.')
