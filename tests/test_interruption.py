"""How a run is told to stop: a lost peer is told from other errors by what the runtime says."""

import jax

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
