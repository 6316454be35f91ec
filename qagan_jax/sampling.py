"""Samples of a run's EMA generator: sample grids, evaluation samples shared out over processes.

`Sampler(setup, num_standing)` holds the two compiled programs (standing
BatchNorm statistics, the generator) of one run; `generate` draws any
number of samples of a seed's latents in chunks, on one process or shared
out over several; `evaluate_samples` measures them with an
`evaluation.evaluator.Evaluator`, every process its share.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import compilation
from qagan_jax import input_pipeline
from qagan_jax import train_state
from qagan_jax.evaluation import evaluator as evaluator_lib
from qagan_jax.evaluation import shares

GRID_SEED = 1234         # fixed latents of the sample grids
STANDING_SEED = 4321     # latents for the EMA generator's BatchNorm statistics


class Sampler:
  """The EMA generator of a state, on this process's devices.

  BatchNorm uses standing statistics: the batch statistics of the EMA
  generator itself on `num_standing` fixed latents, so that a sample
  depends only on its own latent (the running averages follow the live
  generator, not its average). `prepare(state)` computes them once (per
  evaluation or grid) and places the generator on this process's devices;
  `images(prepared, z)` then splits the latents over those devices. Every
  process can sample latents of its own (the evaluation's shares): nothing
  here communicates with other processes. Build one per run: it holds the
  run's compiled programs.
  """

  def __init__(self, setup: train_state.Setup, num_standing: int):
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(mesh, P())
    self._split = NamedSharding(mesh, P('data'))
    self._devices = len(devices)
    self.latent_dim = setup.latent_dim
    generator = setup.generator.clone(axis_name=None)
    standing = generator.clone(bn_momentum=0.0)
    self._standing_z = jax.random.normal(jax.random.PRNGKey(STANDING_SEED),
                                         (num_standing, setup.latent_dim))

    @compilation.jit
    def standing_stats(params, batch_stats, z):
      _, stats = standing.apply({'params': params, 'batch_stats': batch_stats},
                                z, train=True, mutable=['batch_stats'])
      return stats['batch_stats']

    @compilation.jit
    def apply(params, stats, z):
      return generator.apply({'params': params, 'batch_stats': stats}, z,
                             train=False)

    self._standing_stats, self._apply = standing_stats, apply

  def prepare(self, state: train_state.TrainState):
    """(params, standing statistics) of `state`'s EMA generator, replicated
    on this process's devices."""
    params, batch_stats = jax.device_put(
        train_state.host_value((state.gen_ema_params, state.gen_batch_stats)),
        self._replicated)
    z = jax.device_put(self._standing_z, self._replicated)
    return params, self._standing_stats(params, batch_stats, z)

  def images(self, prepared, z) -> np.ndarray:
    """Samples `[n, R, R, 3]` in [-1, 1] of latents `z [n, latent_dim]`."""
    z = np.asarray(z)
    n = len(z)
    pad = -n % self._devices        # every device gets an equal share
    if pad:
      z = np.concatenate([z, np.zeros((pad,) + z.shape[1:], z.dtype)])
    out = self._apply(*prepared, jax.device_put(z, self._split))
    return np.asarray(jax.device_get(out))[:n]

  def __call__(self, state, z) -> np.ndarray:
    """Samples of `z` from `state` (standing statistics computed afresh)."""
    return self.images(self.prepare(state), z)


def grid_latents(count: int, latent_dim: int) -> jax.Array:
  """The fixed latents `[count, latent_dim]` of a run's sample grids."""
  return jax.random.normal(jax.random.PRNGKey(GRID_SEED), (count, latent_dim))


def generate(sampler: Sampler, state, num: int, seed: int,
             batch: int = 500, as_uint8: bool = False,
             shared: bool = False, prepared=None) -> np.ndarray:
  """`num` samples `[num, R, R, 3]` from latents of `seed`: float32 in
  [-1, 1], or uint8 in [0, 255] (rounded as saved images) if `as_uint8`.
  With `shared`, only this process's share of them (`shares.share`),
  padded to the same number of rows on every process (`shares.gather`
  puts them together). Raises evaluator.NonFiniteSamplesError, counting
  them, if any holds NaN/inf (on every process, if any process's share
  does, with `shared`). `prepared`: `sampler.prepare(state)`, if already
  made."""
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, sampler.latent_dim))
  start, stop = shares.share(num) if shared else (0, num)
  convert = input_pipeline.to_uint8 if as_uint8 else np.asarray
  if prepared is None:
    prepared = sampler.prepare(state)    # standing statistics: once
  chunks, bad = [], 0
  for i in range(start, stop, batch):
    images = sampler.images(prepared, z[i:min(i + batch, stop)])
    bad += evaluator_lib.count_non_finite(images)   # before uint8 hides NaN
    if not bad:
      chunks.append(convert(images))
  if shared and jax.process_count() > 1:
    bad = int(np.sum(multihost_utils.process_allgather(np.int32(bad))))
  if bad:
    raise evaluator_lib.NonFiniteSamplesError(bad, num)
  if shared:     # rows beyond `num` on the last processes: padding
    if not chunks:     # no share at all (fewer samples than processes)
      chunks.append(convert(sampler.images(prepared, z[:1]))[:0])
    return shares.padded(np.concatenate(chunks), shares.share_size(num))
  return np.concatenate(chunks)


def extract_samples(evaluator: evaluator_lib.Evaluator, sampler: Sampler,
                    state, num: int, prepared=None) -> dict[str, np.ndarray]:
  """What `evaluator`'s metrics need (`Evaluator.extract`) of `num` samples
  of the evaluation latents (evaluator.SEED), shared out: each process
  generates its share on its own devices and extracts it (Inception
  outputs, NIQE features); the parts of every process, gathered. The
  samples are rounded to uint8, as saved images (and 4x smaller), and
  generated in chunks of eval.batch_size, as they are measured: the same
  programs whatever the number of processes. `prepared` as for
  `generate`."""
  mine = generate(sampler, state, num, evaluator_lib.SEED,
                  batch=evaluator.config.eval.batch_size, as_uint8=True,
                  shared=True, prepared=prepared)
  return shares.gather(evaluator.extract(mine), num)


def evaluate_samples(evaluator: evaluator_lib.Evaluator, sampler: Sampler,
                     state, num: int, prepared=None) -> dict[str, float]:
  """`evaluator`'s metrics of `num` samples (`extract_samples`), scored by
  every process together."""
  return evaluator.score(extract_samples(evaluator, sampler, state, num,
                                         prepared))
