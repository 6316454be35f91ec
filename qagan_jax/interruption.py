"""How a training run is asked to stop: signals, and a preemption shared by every process.

`StopRequests` turns SIGINT and SIGTERM (a preempted TPU VM, a scheduler's
notice) into a request that the loop sees between steps, so that it saves
a checkpoint and stops cleanly; in a multi-process run, every process at
the same step. `PeerLostError` is what a process reports when another
process of its run has gone.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

from qagan_jax import errors

log = logging.getLogger(__name__)


class PeerLostError(errors.ClusterError, RuntimeError):
  """A collective with the other processes of a multi-process run failed."""


# How the runtime reports a collective whose peer has gone: XLA's errors
# (JaxRuntimeError) and, from the CPU collectives' transport, a ValueError
# ("UNKNOWN: Gloo AllGather failed: ... Connection closed by peer").
_COLLECTIVE_FAILURES = ('Gloo', 'Connection closed by peer',
                        'Connection reset by peer', 'heartbeat', 'UNAVAILABLE')


def collective_failed(error: BaseException) -> bool:
  """Whether `error`, raised in a multi-process run, is a collective that
  failed because another process stopped."""
  if isinstance(error, jax.errors.JaxRuntimeError):
    return True
  text = str(error)
  return any(marker in text for marker in _COLLECTIVE_FAILURES)


def peer_lost(error: BaseException, checkpoints=None) -> PeerLostError | None:
  """The PeerLostError that `error` means when this process is one of
  several and a collective failed because another process stopped (at
  start-up, in training, in an evaluation); None otherwise. `checkpoints`:
  the folder to resume from, named in the message."""
  if not (isinstance(error, (jax.errors.JaxRuntimeError, ValueError))
          and jax.process_count() > 1 and collective_failed(error)):
    return None
  where = f' from the newest checkpoint in {checkpoints}' if checkpoints else ''
  return PeerLostError(
      f'process {jax.process_index()} of {jax.process_count()}: an operation '
      'with the other processes failed '
      f'({str(error).splitlines()[0][:300]}). Another process has most '
      'likely stopped; this one stops too. Run the same command on every '
      f'host to resume{where}.')


class StopRequests:
  """Turns SIGINT / SIGTERM into a request to save and stop.

  One process: the request is this process's own, at the step it arrives.
  Several processes (jax.distributed): SIGTERM is left to the coordination
  service's preemption notifier, which tells every process, and
  `should_stop(step)` turns true on all of them at the same step (jax's
  preemption sync point), so that they save one checkpoint together; SIGINT
  is passed on to that notifier as a SIGTERM. A second signal stops at once.
  """

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    self._shared = (jax.process_count() > 1 and
                    jax.config.jax_enable_preemption_service)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if self._shared else (signal.SIGINT,
                                                         signal.SIGTERM)
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:     # a second signal: stop at once
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signal_name = signal.Signals(signum).name
    # said at once: the step, a compilation or an evaluation under way may
    # take a while to end
    log.warning(
        '%s: saving a checkpoint and stopping after the work under way; '
        '%s again stops at once.', self.signal_name,
        'Ctrl-C' if signum == signal.SIGINT else self.signal_name)
    if self._shared:                     # to the preemption notifier
      signal.raise_signal(signal.SIGTERM)

  def before_training(self) -> str | None:
    """A request that arrived before the first step (during the start-up,
    while the step compiled or the first evaluation ran), in a one-process
    run; None in a multi-process run, whose processes stop together at a
    step."""
    return None if self._shared else self.signal_name

  def should_stop(self, step: int) -> str | None:
    """The reason to stop after `step` (a signal's name), or None. Called
    at every step, by every process with the same steps."""
    if self._shared:
      if multihost_utils.reached_preemption_sync_point(step):
        return self.signal_name or 'SIGTERM'
      return None
    return self.signal_name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
