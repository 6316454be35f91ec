"""Datasets on the devices: the keyed permutation, the in-step draw against the host pipeline, the placement choice."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from helpers import numerics
from qagan_jax import device_data
from qagan_jax import errors
from qagan_jax import input_pipeline
from qagan_jax import train


@pytest.mark.parametrize('n', [1, 2, 3, 17, 64, 1000, 4097])
def test_permute_is_a_bijection_of_the_range(n):
  values = np.asarray(device_data.permute(jax.random.PRNGKey(n),
                                          jnp.arange(n), n))
  assert sorted(values.tolist()) == list(range(n))


def test_permutations_of_different_keys_differ_and_look_uniform():
  n, trials = 50, 2000
  keys = jax.random.split(jax.random.PRNGKey(0), trials)
  perms = np.asarray(jax.jit(jax.vmap(
      lambda k: device_data.permute(k, jnp.arange(n), n)))(keys))
  assert len({tuple(p) for p in perms}) == trials
  # where position 0 goes: uniform over the n values (chi-square, 49 dof:
  # 99.9% quantile 85.4)
  counts = np.bincount(perms[:, 0], minlength=n)
  expected = trials / n
  assert ((counts - expected) ** 2 / expected).sum() < 85.4
  # no fixed-point excess: a random permutation has one on average
  assert abs((perms == np.arange(n)).sum(axis=1).mean() - 1.0) < 0.15


def test_an_epoch_draws_distinct_records_and_the_next_reshuffles():
  spec = device_data.DrawSpec(num_records=100, per_device=100, n_critic=2,
                              batch_size=8, flip=True)
  assert spec.steps_per_epoch == 6          # 96 of 100 records an epoch
  rng = jax.random.PRNGKey(3)
  indices = jax.jit(lambda s: device_data.batch_indices(rng, s, spec)[0])
  epoch0 = np.concatenate([np.asarray(indices(s)) for s in range(6)])
  epoch1 = np.concatenate([np.asarray(indices(s)) for s in range(6, 12)])
  assert len(set(epoch0.tolist())) == len(epoch0) == 96
  assert len(set(epoch1.tolist())) == 96
  assert not np.array_equal(epoch0, epoch1)
  # a function of the key and the step only
  np.testing.assert_array_equal(indices(7), indices(7))


def _draw_on_one_device(images, spec, steps):
  mesh = train.make_mesh(jax.devices()[:1])
  resident = jax.device_put(images, NamedSharding(mesh, P(train.AXIS)))
  rng = jax.random.PRNGKey(0)
  step_draw = jax.jit(jax.shard_map(
      lambda x, s: device_data.draw(x, rng, s, spec), mesh=mesh,
      in_specs=(P(train.AXIS), P()), out_specs=P(None, train.AXIS),
      check_vma=False))
  return rng, [np.asarray(step_draw(resident, jnp.int32(s))) for s in steps]


def test_draw_returns_the_indexed_records_flipped_as_drawn():
  rng_np = np.random.default_rng(0)
  images = rng_np.integers(0, 256, (40, 6, 6, 3), np.uint8)   # odd bytes
  spec = device_data.DrawSpec(num_records=40, per_device=40, n_critic=2,
                              batch_size=4, flip=True)
  steps = range(6)     # all of epoch 0 (5 steps: every record), and one more
  rng, drawn = _draw_on_one_device(images, spec, steps)
  seen = set()
  for step, batch in zip(steps, drawn):
    indices, flips = map(np.asarray, device_data.batch_indices(
        rng, jnp.int32(step), spec))
    seen |= set(indices.tolist())
    expected = images[indices]
    expected[flips] = expected[flips][:, :, ::-1]
    batch_images = batch.reshape(-1, 6, 6, 3)
    np.testing.assert_array_equal(input_pipeline.to_uint8(batch_images),
                                  expected)
    # values of magnitude 1, where a fused multiply-add rounds once less
    np.testing.assert_allclose(batch_images,
                               input_pipeline.to_unit_range(expected),
                               rtol=0, atol=numerics.ulps(2))
    assert batch.shape == (2, 4, 6, 6, 3) and batch.dtype == np.float32
  assert seen == set(range(40))     # the first and the last record too


def test_flips_are_fair_coins_and_off_when_disabled():
  # 2000 steps x 8 images: binomial(16000, 0.5), sd 0.004 of the rate; each
  # of the 8 positions of a step: binomial(2000, 0.5), sd 0.011
  rng = jax.random.PRNGKey(3)
  steps = jnp.arange(2000, dtype=jnp.int32)
  for flip in (True, False):
    spec = device_data.DrawSpec(num_records=40, per_device=40, n_critic=2,
                                batch_size=4, flip=flip)
    flips = np.asarray(jax.vmap(
        lambda s, spec=spec: device_data.batch_indices(rng, s, spec)[1])(
            steps))
    assert flips.shape == (2000, 8)
    if not flip:
      assert not flips.any()
      continue
    assert abs(flips.mean() - 0.5) < 4 * 0.004
    assert np.all(np.abs(flips.mean(axis=0) - 0.5) < 4 * 0.0112)
    # independent of the record drawn: as often on even as on odd records
    indices = np.asarray(jax.vmap(
        lambda s: device_data.batch_indices(rng, s, spec)[0])(steps))
    even = flips[indices % 2 == 0]
    assert abs(even.mean() - 0.5) < 4 * np.sqrt(0.25 / even.size)


@pytest.mark.slow
def test_four_devices_draw_the_batches_of_one(four_devices):
  """Each device serves the records it holds, its first and last included,
  and the batches do not depend on the device count: the same global
  indices, the same images, bit for bit (62 records on 4 devices: the last
  holds two rows of padding)."""
  records = four_devices['draw/records']
  one, four = (four_devices[f'draw/{n}/batches'] for n in (1, 4))
  np.testing.assert_array_equal(four_devices['draw/4/indices'],
                                four_devices['draw/1/indices'])
  np.testing.assert_array_equal(four, one)
  indices = four_devices['draw/4/indices']      # [steps, n_critic * batch]
  flips = four_devices['draw/4/flips']
  expected = records[indices]
  expected[flips] = expected[flips][:, :, ::-1]
  steps, n_critic, batch = four.shape[:3]
  drawn = input_pipeline.to_uint8(four.reshape((steps, n_critic * batch) +
                                               four.shape[3:]))
  np.testing.assert_array_equal(drawn, expected)
  # every device's first record (0, 16, 32, 48) was drawn
  assert {0, 16, 32, 48} <= set(indices.ravel().tolist())


def test_device_and_host_placements_draw_batches_alike():
  config = input_pipeline.default_config()
  config.patch_size = 16
  config.patches_per_epoch = 2048
  records = input_pipeline.load_images(config, 0, 2048)
  assert records.shape == (2048, 16, 16, 3) and records.dtype == np.uint8
  data_mean = input_pipeline.to_unit_range(records).mean(axis=(0, 1, 2))
  spec = device_data.DrawSpec(num_records=2048, per_device=2048, n_critic=2,
                              batch_size=32, flip=True)
  _, drawn = _draw_on_one_device(records, spec, range(16))
  device = np.concatenate(drawn).reshape(-1, 16, 16, 3)
  loader = input_pipeline.create_loader(config, 64, seed=0, device_count=1)
  iterator = iter(loader)
  host = np.concatenate([next(iterator) for _ in range(16)])
  assert host.dtype == np.uint8    # the step converts host batches itself
  host = input_pipeline.to_unit_range(host)
  assert device.shape == host.shape == (1024, 16, 16, 3)
  assert device.dtype == host.dtype == np.float32
  for batches in (device, host):
    assert batches.min() >= -1.0 and batches.max() <= 1.0
    # per-channel means within 4 standard errors of the dataset's (images
    # as the unit: pixels of one image are correlated)
    per_image = batches.mean(axis=(1, 2))
    error = per_image.std(axis=0) / np.sqrt(len(per_image))
    assert np.all(np.abs(per_image.mean(axis=0) - data_mean) < 4 * error)
    # flipped about half the time: the mean image is nearly symmetric
    mean_image = batches.mean(axis=0)
    assert np.abs(mean_image - mean_image[:, ::-1]).mean() < 0.05


def test_auto_placement_follows_the_budget():
  mesh = train.make_mesh(jax.devices()[:1])
  choose = functools.partial(device_data.choose_placement,
                             num_records=60_000, resolution=32, mesh=mesh)
  assert choose('auto', 0.25)[0] == 'device'      # 176 MiB of this RAM
  placement, why = choose('auto', 1e-6)
  assert placement == 'host' and 'does not fit' in why
  assert choose('host', 0.25)[0] == 'host'
  assert choose('device', 1e-6)[0] == 'device'    # insisted on, and it fits
  with pytest.raises(errors.ResourceError, match="data.placement = 'host'"):
    device_data.choose_placement('device', 0.25, 10**9, 96, mesh)
  with pytest.raises(ValueError, match='must be one of'):
    choose('gpu', 0.25)


def test_worker_count_from_the_platform():
  assert input_pipeline.default_worker_count('cpu', 64) == 0
  assert input_pipeline.default_worker_count('gpu', 16) == 8
  assert input_pipeline.default_worker_count('tpu', 2) == 1
  assert input_pipeline.default_worker_count('gpu', 96) == 16


def test_a_dataset_smaller_than_one_step_is_refused():
  mesh = train.make_mesh(jax.devices()[:1])
  with pytest.raises(ValueError, match='10 records, fewer than one step'):
    device_data.DrawSpec.for_mesh(10, mesh, n_critic=2, batch_size=8,
                                  flip=False)
  spec = device_data.DrawSpec.for_mesh(16, mesh, n_critic=2, batch_size=8,
                                       flip=False)
  assert (spec.per_device, spec.steps_per_epoch, spec.axis_name) == (
      16, 1, train.AXIS)
