"""Datasets resident on the accelerators: loaded once as uint8, batches drawn inside the step.

When a preprocessed dataset fits in a share of device memory
(`data.device_budget`), `load` puts it on the devices once, sharded along
the mesh axis (each process reads only the records of its own devices), and
the train step draws its real batches itself with `draw`: no host input
pipeline, no host-to-device copy per step.

How batches are drawn: the run's records are visited in epochs, each a
fresh pseudorandom permutation of the N records (a keyed bijection on
[0, N), computed only at the positions a step needs), cut into steps of
S = n_critic * batch_size images; an epoch is floor(N / S) steps, so fewer
than S records (a different random few each epoch) wait for the next one.
This is sampling without replacement, as the host pipeline's per-epoch
reshuffling, so switching placement does not change the statistics of
training. The images of step s depend only on the train state's RNG and s:
a resumed run draws exactly the batches an uninterrupted one would, on any
number of devices and processes (every device computes the same global
indices; each serves the ones it holds, and a reduce-scatter hands every
device its slice of the global batch). Random flips, where the dataset has
them, are drawn per step the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qagan_jax import errors
from qagan_jax import input_pipeline

log = logging.getLogger(__name__)
PLACEMENTS = ('auto', 'device', 'host')
_DATA_STREAM = 2**31 - 1   # fold_in tag of the data key; steps never reach it
_FEISTEL_ROUNDS = 4        # Luby-Rackoff: 4 rounds of a PRF give a strong PRP


@dataclasses.dataclass(frozen=True)
class DrawSpec:
  """What `draw` needs to know, all static.

  num_records: N, records of the dataset.
  per_device: records each device holds (ceil(N / devices); padding unused).
  n_critic: critic batches per step.
  batch_size: the global critic batch.
  flip: random horizontal flips, half of the images.
  axis_name: the mesh axis the records and batches are split along.
  """
  num_records: int
  per_device: int
  n_critic: int
  batch_size: int
  flip: bool
  axis_name: str = 'data'

  def __post_init__(self):
    if self.num_records < self.per_step:
      raise errors.ConfigurationError(
          f'the dataset has {self.num_records} records, fewer than one step '
          f'draws (train.n_critic x train.batch_size = {self.per_step}).')

  @classmethod
  def for_mesh(cls, num_records: int, mesh: Mesh, **settings) -> 'DrawSpec':
    """The spec of `num_records` split over `mesh`'s devices."""
    return cls(num_records=num_records,
               per_device=math.ceil(num_records / mesh.devices.size),
               axis_name=mesh.axis_names[0], **settings)

  @property
  def per_step(self) -> int:
    return self.n_critic * self.batch_size

  @property
  def steps_per_epoch(self) -> int:
    return self.num_records // self.per_step


# --- where the data live --------------------------------------------------------------


def device_memory(device: jax.Device) -> int:
  """Bytes of memory of `device`: the allocator's limit on accelerators; on
  CPUs, whose devices share the host's memory, its share of physical RAM."""
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  local = sum(d.platform == device.platform for d in jax.local_devices())
  return physical // max(local, 1)


def dataset_bytes(num_records: int, resolution: int, devices: int) -> int:
  """Bytes each device holds for a resident dataset of `num_records`."""
  return math.ceil(num_records / devices) * resolution**2 * 3


def choose_placement(placement: str, budget: float, num_records: int,
                     resolution: int, mesh: Mesh) -> tuple[str, str]:
  """('device' or 'host', why) for `data.placement` on `mesh`'s devices.

  'auto' picks 'device' when the dataset's share of each device fits within
  `budget` (a fraction) of its memory; 'device' insists, unless the data
  would not fit in the memory at all.
  """
  if placement not in PLACEMENTS:
    raise ValueError(f'data.placement must be one of {PLACEMENTS}, got '
                     f'{placement!r}.')
  if placement == 'host':
    return 'host', 'data.placement = host'
  need = dataset_bytes(num_records, resolution, mesh.devices.size)
  memory = device_memory(mesh.local_devices[0])
  sizes = (f'{need / 2**20:.0f} MiB a device of {memory / 2**30:.1f} GiB, '
           f'budget {budget:g}')
  if placement == 'device':
    if need > memory:
      raise errors.ResourceError(
          f'data.placement = device: the dataset needs {need / 2**30:.2f} '
          f'GiB on each device, more than its {memory / 2**30:.2f} GiB; use '
          "data.placement = 'host' (or 'auto'), or more devices.")
    return 'device', f'data.placement = device ({sizes})'
  if need <= budget * memory:
    return 'device', f'fits ({sizes})'
  return 'host', f'does not fit ({sizes})'


def load(data_config, mesh: Mesh, spec: DrawSpec, *, source=None) -> jax.Array:
  """The training records on the devices, as `spec` splits them.

  Returns a `[devices * spec.per_device, R, R, 3]` uint8 array split along
  the mesh axis (zero padding after the `spec.num_records` records); each
  process reads only the records of its own devices
  (`input_pipeline.load_images`).
  """
  source = (input_pipeline.data_source(data_config, 'train')
            if source is None else source)
  size = input_pipeline.resolution(data_config)
  shape = (mesh.devices.size * spec.per_device, size, size, 3)

  def shard(index):
    rows = index[0]
    start, stop = rows.start or 0, rows.stop if rows.stop is not None else (
        shape[0])
    images = np.zeros((stop - start, size, size, 3), np.uint8)
    last = min(stop, spec.num_records)
    if last > start:
      images[:last - start] = input_pipeline.load_images(
          data_config, start, last, source=source)
    return images

  sharding = NamedSharding(mesh, P(spec.axis_name))
  return jax.make_array_from_callback(shape, sharding, shard)


# --- drawing batches inside the step ---------------------------------------------------


def _half_bits(n: int) -> int:
  """h such that the Feistel domain 4**h is the smallest one >= n (h >= 1)."""
  return max(1, math.ceil(math.log2(max(n, 2)) / 2))


def permute(key: jax.Array, positions: jax.Array, n: int) -> jax.Array:
  """The images of `positions` under a pseudorandom permutation of [0, n).

  A balanced Feistel network on 2h bits (4**h >= n) with threefry as round
  function is a keyed bijection of [0, 4**h); cycle-walking (applying it
  again while the value is >= n) restricts it to a bijection of [0, n).
  Costs O(len(positions)): no permutation is ever materialised.

  Args:
    key: the permutation's PRNG key.
    positions: int32 array of positions in [0, n).
    n: the domain's size, a static int below 2**30.

  Returns:
    int32 array like `positions`, values in [0, n), distinct for distinct
    positions.
  """
  if not 1 <= n < 2**30:
    raise ValueError(f'permute needs 1 <= n < 2**30, got {n}.')
  half = _half_bits(n)
  mask = jnp.uint32(2**half - 1)
  round_keys = jax.random.split(key, _FEISTEL_ROUNDS)
  hash_of = jax.vmap(lambda k, v: jax.random.bits(jax.random.fold_in(k, v),
                                                  (), jnp.uint32),
                     in_axes=(None, 0))

  def encrypt(x):
    left, right = x >> half, x & mask
    for k in round_keys:
      left, right = right, left ^ (hash_of(k, right.ravel()).reshape(
          right.shape) & mask)
    return (left << half) | right

  x = encrypt(positions.astype(jnp.uint32))
  x = jax.lax.while_loop(lambda x: jnp.any(x >= n),
                         lambda x: jnp.where(x >= n, encrypt(x), x), x)
  return x.astype(jnp.int32)


def batch_indices(rng: jax.Array, step: jax.Array, spec: DrawSpec):
  """The global record indices `[S]` of step `step` and their flips `[S]`
  (S = spec.per_step), a function of the run's RNG and the step only."""
  data_key = jax.random.fold_in(rng, _DATA_STREAM)
  epoch, within = jnp.divmod(step, spec.steps_per_epoch)
  positions = within * spec.per_step + jnp.arange(spec.per_step)
  indices = permute(jax.random.fold_in(jax.random.fold_in(data_key, 0), epoch),
                    positions, spec.num_records)
  flips = jax.random.bernoulli(
      jax.random.fold_in(jax.random.fold_in(data_key, 1), step), 0.5,
      (spec.per_step,)) & spec.flip
  return indices, flips


def draw(images: jax.Array, rng: jax.Array, step: jax.Array,
         spec: DrawSpec) -> jax.Array:
  """This device's real batches of step `step`, inside shard_map.

  Args:
    images: this device's records, `[spec.per_device, R, R, 3]` uint8.
    rng: the train state's PRNG key.
    step: the step (generator iteration), int32 scalar.
    spec: static settings (`DrawSpec`).

  Returns:
    `[n_critic, batch_size / devices, R, R, 3]` float32 in [-1, 1]: device
    d's slice d of each critic batch, as `train.batch_sharding` splits a
    host batch.
  """
  indices, flips = batch_indices(rng, step, spec)
  local = indices - jax.lax.axis_index(spec.axis_name) * spec.per_device
  mine = (local >= 0) & (local < spec.per_device)
  picked = images[jnp.clip(local, 0, spec.per_device - 1)]
  picked = jnp.where(flips[:, None, None, None], picked[:, :, ::-1], picked)
  picked = jnp.where(mine[:, None, None, None], picked, jnp.uint8(0))
  side = images.shape[1]
  # Each image is held by one device and zero elsewhere, so a sum gathers
  # it, exactly; as uint32 words of 4 bytes, which every backend reduces.
  packed = picked.reshape(spec.n_critic, spec.batch_size, -1)
  if packed.shape[-1] % 4:     # odd sides: a word per byte
    words = packed.astype(jnp.uint32)
  else:
    words = jax.lax.bitcast_convert_type(
        packed.reshape(packed.shape[:-1] + (-1, 4)), jnp.uint32)
  words = jax.lax.psum_scatter(words, spec.axis_name, scatter_dimension=1,
                               tiled=True)
  mine_only = (words.astype(jnp.uint8) if packed.shape[-1] % 4 else
               jax.lax.bitcast_convert_type(words, jnp.uint8))
  mine_only = mine_only.reshape(spec.n_critic, -1, side, side, 3)
  return input_pipeline.unit_range_on_device(mine_only)
