"""Training data: tensorflow-datasets sources batched with grain, and the embedded natural_patches.

Every dataset is a random-access source (`tfds.data_source` for CIFAR-10,
STL-10 and CelebA; `NaturalPatches` for the embedded default) read by a
`grain.DataLoader`: an endless, per-epoch reshuffled, per-process shard of
the global batch, as uint8 NHWC images (the train step takes them to [-1, 1]
on the devices, `unit_range_on_device`). Reading needs no
TensorFlow; preparing a tfds dataset once does (`python -m
qagan_jax.prepare_data`).

The loader's iterator state (`get_state`/`set_state`, or grain's orbax
handlers) is small and exact: a restored iterator yields the batches an
uninterrupted one would have.

Preprocessing, as the QAGAN authors did (docs/method.md):
  cifar10: 32x32 as stored (train split, or train + test);
  stl10: the 'unlabelled' split, 96x96 downscaled to 48x48 with an
    antialiased bicubic filter (or kept at 96);
  celeb_a: centre crop 108x108 at (55, 35) of the 218x178 images, bicubic
    resize to 64x64, random horizontal flip;
  natural_patches: random crops of natural colour photographs bundled with
    scikit-image, random horizontal flip (see NaturalPatches).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
from typing import Iterator

from absl import flags
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from qagan_jax import errors
from qagan_jax import storage

DATASETS = ('cifar10', 'stl10', 'celeb_a', 'natural_patches')
# CelebA's aligned images are 218x178; the authors' centre crop.
CELEBA_SIZE = (218, 178)
CELEBA_CROP = 108
CELEBA_OFFSET = ((218 - 108) // 2, (178 - 108) // 2)   # (55, 35)
# scikit-image's natural colour photographs, split by whole photograph. The
# stereo pair shows one scene, so both halves are on the same side.
TRAIN_PHOTOGRAPHS = ('astronaut', 'rocket', 'motorcycle_left',
                     'motorcycle_right')
HELD_OUT_PHOTOGRAPHS = ('chelsea', 'coffee')


def default_config() -> ml_collections.ConfigDict:
  """The data part of a config; `dataset` picks one of DATASETS."""
  return ml_collections.ConfigDict(dict(
      dataset='natural_patches',
      data_dir='',                 # tfds data_dir; '' = tfds's default
      cifar10_train_and_test=False,  # the authors trained on both splits
      stl10_resolution=48,         # 48 (paper) or 96 (native)
      celeba_flip=True,
      patch_size=32,               # natural_patches crop side
      patches_per_epoch=65536,     # natural_patches records per epoch
      # grain worker processes for the host placement; 0 reads in the
      # training process, -1 picks from the platform and CPU count
      # (default_worker_count)
      worker_count=-1,
      # Reader threads per process. 0 is fastest on local data (threads only
      # contend for the GIL, as grain advises; measured 1.5-2x slower with
      # 8); raise it for slow remote storage. Scale with worker_count.
      read_threads=0,
      # 'device': the preprocessed dataset lives on the accelerators as uint8
      # and the step draws its batches (qagan_jax.device_data); 'host': grain
      # reads them; 'auto': 'device' when the dataset's share of each device
      # fits within device_budget of its memory.
      placement='auto',
      device_budget=0.25,
  ))


def resolution(data_config) -> int:
  """Side of the images the dataset yields."""
  return {'cifar10': 32, 'stl10': data_config.stl10_resolution,
          'celeb_a': 64,
          'natural_patches': data_config.patch_size}[data_config.dataset]


# --- natural_patches -----------------------------------------------------------------


def load_photographs(names) -> dict[str, np.ndarray]:
  """scikit-image's bundled photographs as uint8 RGB arrays (no download)."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  photos = {}
  for name in names:
    if name.startswith('motorcycle_'):
      left, right, _ = data.stereo_motorcycle()
      photos[name] = left if name.endswith('left') else right
    else:
      photos[name] = getattr(data, name)()
  return photos


class NaturalPatches:
  """Random-access source of random crops of natural colour photographs.

  Record i is a `patch_size` crop at a random position of a photograph
  chosen with probability proportional to its number of crop positions; the
  positions of all records are drawn once from `seed`, so the source is
  deterministic and grain can shuffle, shard and checkpoint it like a
  stored dataset. The 'train' split
  crops astronaut, rocket and the stereo motorcycle pair (about 1.5 million
  pixels); 'held_out' crops chelsea and coffee, whole photographs the model
  never sees, for evaluation. All ship inside the scikit-image wheel, so
  nothing is downloaded.
  """

  def __init__(self, split: str = 'train', patch_size: int = 32,
               num_records: int = 65536, seed: int = 0):
    if split not in ('train', 'held_out'):
      raise ValueError("natural_patches has splits 'train' and 'held_out', "
                       f'not {split!r}.')
    self.names = (TRAIN_PHOTOGRAPHS if split == 'train'
                  else HELD_OUT_PHOTOGRAPHS)
    self.photographs = list(load_photographs(self.names).values())
    smallest = min(min(p.shape[:2]) for p in self.photographs)
    if not 8 <= patch_size <= smallest:
      raise ValueError(f'patch_size must be between 8 and {smallest}, got '
                       f'{patch_size}.')
    self.patch_size = patch_size
    self.num_records = num_records
    self.seed = seed
    positions = np.array([(p.shape[0] - patch_size + 1) *
                          (p.shape[1] - patch_size + 1)
                          for p in self.photographs], np.float64)
    self._weights = positions / positions.sum()
    rng = np.random.default_rng(seed)
    which = rng.choice(len(self.photographs), size=num_records,
                       p=self._weights)
    rows = np.array([p.shape[0] for p in self.photographs])[which]
    cols = np.array([p.shape[1] for p in self.photographs])[which]
    self._locations = np.stack([
        which, rng.integers(rows - patch_size + 1),
        rng.integers(cols - patch_size + 1)], axis=1)

  def __len__(self) -> int:
    return self.num_records

  def locate(self, index: int) -> tuple[int, int, int]:
    """(photograph, top, left) of record `index`."""
    which, top, left = self._locations[index]
    return int(which), int(top), int(left)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    which, top, left = self.locate(index)
    return {'image': self.photographs[which][top:top + self.patch_size,
                                             left:left + self.patch_size]}

  def __repr__(self):
    return (f'NaturalPatches(patch_size={self.patch_size}, '
            f'num_records={self.num_records}, seed={self.seed})')


# --- tfds sources ---------------------------------------------------------------------


class DatasetNotPreparedError(errors.DataError, FileNotFoundError):
  """A tfds dataset that is not in its data_dir and cannot be downloaded."""


def data_dir_problem(data_dir: str) -> str | None:
  """Why a tfds data_dir is refused, and how to stage it, or None: one on
  remote storage (gs://...), as training reads a dataset's array_record
  files by random access, which tfds' data source does not do through a
  URL (reading one record from a gs:// data_dir hung on a Cloud Storage
  API here)."""
  if not storage.is_url(str(data_dir)):
    return None
  url = str(data_dir).rstrip('/')
  return (f'data.data_dir = {data_dir!r}: training reads tfds datasets from '
          'a local disk, by random access to their array_record files, not '
          'from a URL. Copy the prepared dataset to the disk of each host '
          f'once, e.g. `gcloud storage cp -r {url}/NAME ~/tensorflow_datasets/` '
          '(NAME: cifar10, stl10 or celeb_a; on every worker of a TPU pod: '
          "`gcloud compute tpus tpu-vm ssh TPU --worker=all --command='...'`), "
          "and set data.data_dir to that folder (or leave it '' for "
          "tfds's default, ~/tensorflow_datasets).")


def prepare_command(name: str, data_dir: str) -> str:
  """The one command that downloads and prepares a tfds dataset."""
  return (f'{errors.install_command("prepare")} && python -m '
          f'qagan_jax.prepare_data {name} --data_dir={data_dir}')


def _tfds_source(name: str, split: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False, try_gcs=False)
  except Exception as error:  # tfds raises several types; ask the builder
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
      if 'file format' in str(error).lower():
        raise DatasetNotPreparedError(
            f"The tfds dataset '{name}' in data_dir {data_dir!r} is prepared "
            'in a format without random access; training reads array_record. '
            f'Prepare it again:\n\n  {prepare_command(name, data_dir)}'
            ) from error
      raise
    raise DatasetNotPreparedError(
        f"The tfds dataset '{name}' (split '{split}') is not prepared in "
        f'data_dir {data_dir!r}, and training does not download it. Prepare '
        f'it once (this downloads it):\n\n  {prepare_command(name, data_dir)}'
        f'\n\nor point data.data_dir at the folder that holds it.'
        ) from error


class _Concat:
  """Concatenation of random-access sources."""

  def __init__(self, sources):
    self.sources = list(sources)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self):
    return int(self.offsets[-1])

  def __getitem__(self, index):
    which = int(np.searchsorted(self.offsets, index, side='right')) - 1
    return self.sources[which][index - self.offsets[which]]

  def __repr__(self):
    return f'Concat({self.sources})'


def data_source(data_config, split: str = 'train'):
  """The random-access source of a dataset (before preprocessing)."""
  name = data_config.dataset
  if name not in DATASETS:
    raise ValueError(f'data.dataset must be one of {DATASETS}, got {name!r}.')
  if name == 'natural_patches':
    return NaturalPatches(split, data_config.patch_size,
                          data_config.patches_per_epoch)
  if name == 'cifar10':
    if split == 'train' and data_config.cifar10_train_and_test:
      return _Concat([_tfds_source(name, s, data_config.data_dir)
                      for s in ('train', 'test')])
    return _tfds_source(name, split, data_config.data_dir)
  if name == 'stl10':
    return _tfds_source(name, 'unlabelled' if split == 'train' else split,
                        data_config.data_dir)
  return _tfds_source(name, split, data_config.data_dir)


# --- preprocessing ----------------------------------------------------------------------


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return image.astype(np.float32) * (2.0 / 255.0) - 1.0


def unit_range_on_device(images: jax.Array) -> jax.Array:
  """`to_unit_range` inside a jitted program: uint8 `[..., 3]` -> float32
  in [-1, 1]. Clipped: XLA's fused multiply-add takes 255 to 1 + 1 ulp."""
  return jnp.clip(images.astype(jnp.float32) * (2.0 / 255.0) - 1.0, -1.0, 1.0)


def to_uint8(images) -> np.ndarray:
  """float [-1, 1] -> uint8 [0, 255], rounded and clipped as saved images."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0,
                 255).astype(np.uint8)


def resize_bicubic(image: np.ndarray, size: int) -> np.ndarray:
  """Antialiased bicubic resize of a uint8 image (Pillow, a = -0.5)."""
  return np.asarray(Image.fromarray(image).resize((size, size),
                                                  Image.Resampling.BICUBIC))


def celeba_crop(image: np.ndarray) -> np.ndarray:
  """The authors' 108x108 centre crop of a 218x178 CelebA image."""
  if image.shape[:2] != CELEBA_SIZE:
    raise ValueError(f'CelebA images are {CELEBA_SIZE}, got {image.shape}.')
  top, left = CELEBA_OFFSET
  return image[top:top + CELEBA_CROP, left:left + CELEBA_CROP]


def fit_geometry(image: np.ndarray, dataset: str, size: int) -> np.ndarray:
  """A record's uint8 image with the dataset's geometry, `[size, size, 3]`
  uint8: CelebA's crop and resize, STL-10's resize; no random flip."""
  image = np.asarray(image)
  if dataset == 'celeb_a':
    return resize_bicubic(celeba_crop(image), size)
  if image.shape[0] != size:
    return resize_bicubic(image, size)
  return image


def random_flip(data_config) -> bool:
  """Whether the dataset's augmentation flips half the images horizontally."""
  return {'celeb_a': data_config.celeba_flip,
          'natural_patches': True}.get(data_config.dataset, False)


@dataclasses.dataclass(frozen=True)
class Preprocess(grain.transforms.RandomMap):
  """Record -> uint8 image with the dataset's geometry and augmentation.

  Batches stay bytes through grain and the host-to-device copy (a quarter
  of float32's); the step converts them (`unit_range_on_device`).
  """
  dataset: str
  size: int
  flip: bool

  def random_map(self, element, rng: np.random.Generator):
    image = fit_geometry(element['image'], self.dataset, self.size)
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return np.ascontiguousarray(image)


def _preprocess(data_config) -> Preprocess:
  return Preprocess(data_config.dataset, resolution(data_config),
                    random_flip(data_config))


def load_images(data_config, start: int, stop: int, *, source=None,
                threads: int | None = None) -> np.ndarray:
  """Records `start:stop` of the training source with the dataset's
  geometry and no flip, `[stop - start, R, R, 3]` uint8, read by `threads`
  threads (default: one per CPU; decoding and resizing release the GIL)."""
  source = data_source(data_config, 'train') if source is None else source
  size = resolution(data_config)
  out = np.empty((max(stop - start, 0), size, size, 3), np.uint8)
  if not len(out):
    return out

  def fill(chunk_start):
    for i in range(chunk_start, min(chunk_start + 256, stop)):
      out[i - start] = fit_geometry(source[i]['image'], data_config.dataset,
                                    size)

  threads = threads or min(32, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    list(pool.map(fill, range(start, stop, 256)))   # re-raises errors
  return out


# --- the loader ---------------------------------------------------------------------


def process_batch_size(global_batch_size: int, *, device_count: int | None = None,
                       process_count: int | None = None) -> int:
  """This process's share of the global batch, after checking it divides."""
  device_count = jax.device_count() if device_count is None else device_count
  process_count = (jax.process_count() if process_count is None
                   else process_count)
  if global_batch_size % device_count:
    raise errors.ConfigurationError(
        f'the global batch size {global_batch_size} is not divisible by the '
        f'{device_count} devices; use a multiple of {device_count}.')
  return global_batch_size // process_count


def create_loader(data_config, global_batch_size: int, *, seed: int,
                  split: str = 'train', process_index: int | None = None,
                  process_count: int | None = None,
                  device_count: int | None = None,
                  source=None) -> grain.DataLoader:
  """An endless grain loader of `[B, R, R, 3]` uint8 batches (the images as
  the dataset's geometry and augmentation leave them; `to_unit_range` or
  the train step's `unit_range_on_device` takes them to [-1, 1]).

  B is this process's share of `global_batch_size`; each process reads a
  disjoint shard of every epoch, reshuffled each epoch with `seed`. Fails
  before any training when a tfds dataset is not prepared.

  Args:
    data_config: the `data` part of a config (`default_config`).
    global_batch_size: images per step over all processes; divisible by the
      device count.
    seed: shuffling and augmentation seed.
    split: 'train' (or 'held_out' for natural_patches, a tfds split else).
    process_index, process_count, device_count: default to jax's; set them
      to simulate other processes.
    source: a random-access source to use instead of the dataset's (records
      `{'image': uint8 [R, R, 3]}`), for tests.
  """
  process_index = (jax.process_index() if process_index is None
                   else process_index)
  process_count = (jax.process_count() if process_count is None
                   else process_count)
  batch = process_batch_size(global_batch_size, device_count=device_count,
                             process_count=process_count)
  source = data_source(data_config, split) if source is None else source
  shard = grain.sharding.ShardOptions(shard_index=process_index,
                                      shard_count=process_count,
                                      drop_remainder=True)
  if len(source) // process_count < batch:
    raise errors.ConfigurationError(
        f'{data_config.dataset} has {len(source)} records, fewer than one '
        f'batch of {batch} per process; lower train.batch_size.')
  workers = data_config.worker_count
  if workers < 0:
    workers = default_worker_count(jax.devices()[0].platform)
  if workers and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags; outside an absl app (tests,
    # notebooks) mark them parsed so the defaults apply.
    flags.FLAGS.mark_as_parsed()
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard, shuffle=True,
      num_epochs=None, seed=seed)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[_preprocess(data_config),
                  grain.transforms.Batch(batch, drop_remainder=True)],
      worker_count=workers,
      read_options=grain.ReadOptions(num_threads=data_config.read_threads,
                                     prefetch_buffer_size=max(2 * batch, 16)))


def held_out_images(data_config, count: int, *, seed: int = 1) -> np.ndarray:
  """`count` preprocessed images of the evaluation split, `[count, R, R, 3]`.

  natural_patches: crops of the held-out photographs; tfds datasets: the
  test split (STL-10: its 'test' split).
  """
  split = 'held_out' if data_config.dataset == 'natural_patches' else 'test'
  return split_images(data_config, split, count, seed=seed)


def split_images(data_config, split: str, count: int, *,
                 seed: int = 1) -> np.ndarray:
  """`count` preprocessed images `[count, R, R, 3]` in [-1, 1] of `split`
  ('train' is the training data as the run sees it, e.g. CIFAR-10's train
  and test splits when cifar10_train_and_test), drawn without replacement
  in a random order fixed by `seed`; all of them when `count` exceeds it."""
  return np.concatenate(list(iter_split_images(data_config, split, count,
                                               seed=seed)))


def iter_split_images(data_config, split: str, count: int, *, seed: int = 1,
                      chunk: int = 1000) -> Iterator[np.ndarray]:
  """`split_images` in chunks of at most `chunk` images, for large counts."""
  source = data_source(data_config, split)
  preprocess = _preprocess(data_config)
  rng = np.random.default_rng(seed)
  indices = rng.permutation(len(source))[:count]
  for start in range(0, len(indices), chunk):
    yield to_unit_range(np.stack([preprocess.random_map(source[int(i)], rng)
                                  for i in indices[start:start + chunk]]))


# --- feeding the devices ------------------------------------------------------------


def default_worker_count(platform: str, cpu_count: int | None = None) -> int:
  """grain worker processes for `data.worker_count = -1`: none when the
  step itself runs on the CPUs (workers would take its cores); else half the
  CPUs, at most 16, so that reading keeps up with an accelerator (one
  process reads ~2,000-5,000 images/s; a GPU step eats 10,000-20,000)."""
  if platform == 'cpu':
    return 0
  return max(1, min(16, (cpu_count or os.cpu_count() or 2) // 2))


class _Position:
  """A grain iterator's saved state, as grain's checkpoint handler reads it."""

  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state


class Prefetcher:
  """The step's host batches, prepared ahead in a thread.

  Each item is `n_critic` batches of `iterator`, stacked and put on the
  devices as one `global_shape` array with `sharding` (this process's part of
  the global batch), so that reading, preprocessing and the host-to-device
  copy of the next step overlap the running one. `position()` is the
  iterator's state just after the batches handed out so far (not the ones
  read ahead): what a checkpoint must hold to resume exactly. `shape` is
  an item's `jax.ShapeDtypeStruct` (uint8, `global_shape`, `sharding`).

  Args:
    iterator: a grain DataLoader iterator (positioned: restore it first).
    n_critic: batches per item.
    sharding: the sharding of an item (`train.batch_sharding`).
    global_shape: `[n_critic, global_batch, R, R, 3]`.
    depth: items read ahead.
  """

  def __init__(self, iterator, n_critic: int, sharding, global_shape,
               depth: int = 2):
    self.shape = jax.ShapeDtypeStruct(tuple(global_shape), np.uint8,
                                      sharding=sharding)
    self._iterator = iterator
    self._position = _Position(iterator.get_state())
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(
        target=self._fill, args=(n_critic, sharding, self.shape.shape),
        name='qagan-prefetch', daemon=True)
    self._thread.start()

  def _fill(self, n_critic, sharding, global_shape):
    try:
      while not self._stop.is_set():
        local = np.stack([next(self._iterator) for _ in range(n_critic)])
        batch = jax.make_array_from_process_local_data(sharding, local,
                                                       global_shape)
        self._put((batch, self._iterator.get_state()))
    except Exception as error:  # pylint: disable=broad-except
      self._put(error)          # raised in the consumer

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def __iter__(self):
    return self

  def __next__(self) -> jax.Array:
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    batch, state = item
    self._position = _Position(state)
    return batch

  def position(self) -> _Position:
    """The iterator state after the batches returned so far."""
    return self._position

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=10)
