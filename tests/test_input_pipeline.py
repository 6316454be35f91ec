"""Input pipelines: geometry on mock tfds data, natural_patches, shards, resume, errors."""

import socket

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from qagan_jax import input_pipeline
from qagan_jax import quality


def data_config(**overrides):
  config = input_pipeline.default_config()
  config.update(overrides)
  return config


@pytest.fixture
def no_network(monkeypatch):
  """Any attempt to open a network connection fails the test."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


def take(loader, n):
  iterator = iter(loader)
  return [next(iterator) for _ in range(n)]


# --- natural_patches -------------------------------------------------------------------


def test_natural_patches_batches_are_deterministic_per_seed(no_network):
  config = data_config(patch_size=32)
  first = take(input_pipeline.create_loader(config, 16, seed=3,
                                            device_count=1), 3)
  again = take(input_pipeline.create_loader(config, 16, seed=3,
                                            device_count=1), 3)
  other = take(input_pipeline.create_loader(config, 16, seed=4,
                                            device_count=1), 1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])
  batch = first[0]
  assert batch.shape == (16, 32, 32, 3) and batch.dtype == np.uint8
  assert batch.std() > 10           # photographs, not constant


def test_natural_patches_train_and_held_out_photographs_are_disjoint(
    no_network):
  train = input_pipeline.NaturalPatches('train', 32, 512)
  held_out = input_pipeline.NaturalPatches('held_out', 32, 512)
  assert not set(train.names) & set(held_out.names)
  for a in train.photographs:
    assert a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8
    assert all(a.shape != b.shape or not np.array_equal(a, b)
               for b in held_out.photographs)
  # Every photograph is sampled, in proportion to its crop positions.
  which = np.array([train.locate(i)[0] for i in range(512)])
  counts = np.bincount(which, minlength=len(train.photographs)) / 512
  np.testing.assert_allclose(counts, train._weights, atol=0.07)
  # A record is the crop at its location.
  photo, top, left = train.locate(7)
  np.testing.assert_array_equal(
      train[7]['image'], train.photographs[photo][top:top + 32, left:left + 32])
  held = input_pipeline.held_out_images(data_config(), 8)
  assert held.shape == (8, 32, 32, 3) and held.dtype == np.float32


def test_natural_patches_are_flipped_half_the_time(no_network):
  source = input_pipeline.NaturalPatches('train', 16, 2000)
  preprocess = input_pipeline._preprocess(data_config(patch_size=16))
  rng = np.random.default_rng(0)
  flipped = 0
  for i in range(400):
    out = preprocess.random_map(source[i], rng)
    plain = source[i]['image']
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    if not np.array_equal(out, plain):
      np.testing.assert_array_equal(out, plain[:, ::-1])   # a mirror image
      flipped += 1
  assert 160 < flipped < 240    # binomial(400, 0.5): 4 standard deviations


def test_bytes_convert_on_the_device_as_on_the_host():
  every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  host = input_pipeline.to_unit_range(every)
  device = np.asarray(jax.jit(input_pipeline.unit_range_on_device)(every))
  assert device.dtype == np.float32
  # equal to an ulp of 1 (a fused multiply-add rounds once, not twice);
  # the ends exactly
  np.testing.assert_allclose(device, host, rtol=0, atol=np.finfo(
      np.float32).eps)
  assert device.min() == -1.0 and device.max() == 1.0


# --- tfds datasets on mock data ----------------------------------------------------------


@pytest.mark.parametrize('dataset,side', [('cifar10', 32), ('stl10', 48),
                                          ('celeb_a', 64)])
def test_tfds_datasets_shapes_dtype_range(dataset, side):
  with tfds.testing.mock_data(num_examples=20):
    loader = input_pipeline.create_loader(data_config(dataset=dataset), 8,
                                          seed=0, device_count=1)
    batch = take(loader, 1)[0]
  assert batch.shape == (8, side, side, 3) and batch.dtype == np.uint8
  assert batch.min() < 64 and batch.max() > 192    # the mock's random pixels


def test_stl10_native_resolution_and_cifar10_train_and_test():
  with tfds.testing.mock_data(num_examples=12):
    stl = input_pipeline.create_loader(
        data_config(dataset='stl10', stl10_resolution=96), 4, seed=0,
        device_count=1)
    assert take(stl, 1)[0].shape == (4, 96, 96, 3)
    both = input_pipeline.data_source(
        data_config(dataset='cifar10', cifar10_train_and_test=True))
    assert len(both) == 24


def test_stl10_downscale_is_antialiased_bicubic():
  # The same image through MATLAB's imresize(0.5) (qagan_jax.quality), an
  # independent antialiased bicubic, away from the borders, where the two
  # treat edges differently. Pillow rounds to uint8 after each of its two
  # passes: |error| <= 0.5 * sum|w| + 0.5 = 0.5 * 1.09 + 0.5 < 1.05.
  rng = np.random.default_rng(0)
  image = np.clip(rng.normal(128, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
  ours = input_pipeline.resize_bicubic(image, 48).astype(np.float64)
  matlab = np.asarray(quality.downscale_half(image[None].astype(np.float32)))[0]
  np.testing.assert_allclose(ours[3:-3, 3:-3], matlab[3:-3, 3:-3], atol=1.05)
  assert np.abs(ours[3:-3, 3:-3] - matlab[3:-3, 3:-3]).mean() < 0.3


def celeba_marked(num, rng):
  """CelebA-sized images: white inside the authors' crop window, black outside,
  left half of the window brighter than the right."""
  images = []
  top, left = input_pipeline.CELEBA_OFFSET
  for _ in range(num):
    image = np.zeros(input_pipeline.CELEBA_SIZE + (3,), np.uint8)
    image[top:top + 108, left:left + 54] = 255
    image[top:top + 108, left + 54:left + 108] = 200
    images.append({'image': image, 'index': rng.integers(1 << 30)})
  return images


def test_celeba_crop_window_resize_and_flips():
  rng = np.random.default_rng(1)
  records = celeba_marked(200, rng)
  with tfds.testing.mock_data(num_examples=200,
                              as_data_source_fn=lambda *a, **k: records):
    loader = input_pipeline.create_loader(data_config(dataset='celeb_a'), 50,
                                          seed=0, device_count=1)
    images = np.concatenate(take(loader, 4))
  assert images.shape == (200, 64, 64, 3)
  # Exactly the window: a crop one pixel off would bring black (0) into
  # the border rows or columns after resizing.
  assert images.min() > 191
  left_brighter = images[:, :, :8].mean(axis=(1, 2, 3)) > images[:, :, -8:].mean(
      axis=(1, 2, 3))
  assert 70 < left_brighter.sum() < 130     # flipped half the time (4 sd)
  crop = input_pipeline.celeba_crop(records[0]['image'])
  assert crop.shape == (108, 108, 3) and crop.min() == 200


# --- sharding, resume, errors ----------------------------------------------------------


class IndexedSource:
  """Records whose image encodes the record index (flip invariant)."""

  def __init__(self, n, side=8):
    self.n, self.side = n, side

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    image = np.zeros((self.side, self.side, 3), np.uint8)
    image[..., 0], image[..., 1] = i // 256, i % 256
    return {'image': image}


def record_ids(batch):
  pixels = batch[:, 0, 0, :2].astype(int)
  return pixels[:, 0] * 256 + pixels[:, 1]


def test_two_processes_read_disjoint_shards_covering_an_epoch():
  config = data_config(patch_size=8)
  seen = []
  for process in range(2):
    loader = input_pipeline.create_loader(
        config, 8, seed=5, process_index=process, process_count=2,
        device_count=2, source=IndexedSource(64))
    ids = np.concatenate([record_ids(b) for b in take(loader, 8)])  # 32 each
    assert len(set(ids)) == 32
    seen.append(set(ids))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(64))


def test_epochs_are_reshuffled():
  loader = input_pipeline.create_loader(data_config(patch_size=8), 16, seed=0,
                                        device_count=1,
                                        source=IndexedSource(64))
  ids = np.concatenate([record_ids(b) for b in take(loader, 8)])
  first, second = ids[:64], ids[64:]
  assert set(first) == set(second) == set(range(64))
  assert not np.array_equal(first, second)


def test_restored_iterator_continues_with_the_same_batches():
  config = data_config(patch_size=16)
  loader = input_pipeline.create_loader(config, 8, seed=2, device_count=1)
  iterator = iter(loader)
  for _ in range(5):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  fresh = iter(input_pipeline.create_loader(config, 8, seed=2, device_count=1))
  fresh.set_state(state)
  for batch in expected:
    np.testing.assert_array_equal(next(fresh), batch)


def test_missing_dataset_names_dataset_data_dir_and_command(tmp_path):
  config = data_config(dataset='cifar10', data_dir=str(tmp_path))
  with pytest.raises(input_pipeline.DatasetNotPreparedError) as error:
    input_pipeline.create_loader(config, 8, seed=0, device_count=1)
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert f'qagan_jax.prepare_data cifar10 --data_dir={tmp_path}' in message


def test_bad_batch_and_dataset_are_refused():
  with pytest.raises(ValueError, match='not divisible by the 3 devices'):
    input_pipeline.create_loader(data_config(), 16, seed=0, device_count=3)
  with pytest.raises(ValueError, match='data.dataset must be one of'):
    input_pipeline.data_source(data_config(dataset='imagenet'))
  with pytest.raises(ValueError, match='patch_size must be between'):
    input_pipeline.NaturalPatches('train', 4)
