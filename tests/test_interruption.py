"""How a run is told to stop: a lost peer is told from other errors by what the runtime says."""

import logging
import os
import signal
import time

import jax
import pytest

from qagan_jax import interruption


def test_a_failed_collective_is_told_from_other_errors():
  # as JAX's CPU collectives report a peer that died (seen in a two-process
  # run whose other process was killed), and XLA's own errors
  gloo = ValueError('UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/'
                    'transport/tcp/pair.cc:547] Connection closed by peer '
                    '[127.0.0.1]:27290')
  assert interruption.collective_failed(gloo)
  assert interruption.collective_failed(jax.errors.JaxRuntimeError(
      'INTERNAL: a collective failed'))
  # an ordinary error of the run is not a lost peer
  assert not interruption.collective_failed(ValueError(
      'the checkpoint of step 4 is unreadable'))


def test_a_lost_peer_is_one_message_wherever_it_shows(monkeypatch):
  """At start-up too: a process whose peer died while both took the
  workdir's lock got a raw 'Gloo context initialization failed' traceback."""
  startup = jax.errors.JaxRuntimeError(
      'UNKNOWN: Gloo context initialization failed: DEADLINE_EXCEEDED: '
      'GetKeyValue() timed out with key: cpu:gloo/0,2048/0\nmore')
  assert interruption.peer_lost(startup) is None     # one process: a bug
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  lost = interruption.peer_lost(startup)
  assert isinstance(lost, interruption.PeerLostError)
  assert str(lost).startswith('process 0 of 2: an operation with the other '
                              'processes failed (UNKNOWN: Gloo context')
  assert 'more' not in str(lost) and str(lost).endswith('to resume.')
  assert str(interruption.peer_lost(startup, '/w/checkpoints')).endswith(
      'from the newest checkpoint in /w/checkpoints.')
  assert interruption.peer_lost(ValueError('a config error')) is None


def test_a_signal_is_acknowledged_at_once_and_a_second_one_stops(caplog):
  """Ctrl-C while the step compiles or an evaluation runs: said at once,
  seen before the first step; a second Ctrl-C stops without waiting."""
  previous = signal.getsignal(signal.SIGINT)
  with caplog.at_level(logging.WARNING):
    with interruption.StopRequests() as requests:
      assert requests.before_training() is None
      os.kill(os.getpid(), signal.SIGINT)
      assert requests.before_training() == 'SIGINT'
      assert requests.should_stop(1) == 'SIGINT'
      assert 'SIGINT: saving a checkpoint and stopping' in caplog.text
      assert 'Ctrl-C again stops at once' in caplog.text
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)    # the handler runs between bytecodes
  assert signal.getsignal(signal.SIGINT) is previous
