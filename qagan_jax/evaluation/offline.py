"""Metrics that need no download, so that every run, the demo included, is measured.

Images are `[N, H, W, 3]`, float in [-1, 1] as the generator makes them, or
uint8 in [0, 255] as saved (converted batch by batch, so that large uint8
sets are never held as float).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qagan_jax import input_pipeline
from qagan_jax import quality


def as_unit_range(images) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]; float images pass through as float32."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return input_pipeline.to_unit_range(images)
  return images.astype(np.float32, copy=False)


@jax.jit
def _to_gray_255(images):
  return (quality.rgb_to_grayscale(images) + 1.0) * 127.5


def niqe_feature_rows(images, patch_size: int | None = None, batch: int = 512):
  """NIQE features of every patch of a set of images, as rows.

  Images go to grayscale (BT.601) in [0, 255]; every image gives its
  non-overlapping `patch_size` patches (default: the whole image, one patch).

  Returns:
    (features `[N * patches, 36]` float32, valid `[N * patches, 36]` bool,
    False where a fit is undefined, as MATLAB's NaN).
  """
  patch_size = patch_size or images.shape[1]
  batch = min(batch, len(images))
  features, valid = [], []
  for start in range(0, len(images), batch):
    chunk = as_unit_range(images[start:start + batch])
    n = len(chunk)
    if n < batch:   # padded: one shape, one compilation (~5 s on a CPU)
      chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:],
                                              chunk.dtype)])
    found = quality.niqe_features(_to_gray_255(chunk), patch_size)
    features.append(np.asarray(found.features)[:n].reshape(-1, 36))
    valid.append(np.asarray(found.valid)[:n].reshape(-1, 36))
  return np.concatenate(features), np.concatenate(valid)


def niqe_mvg(images, patch_size: int | None = None, batch: int = 512):
  """Mean and covariance of the NIQE features of a set of images.

  The features of all patches (`niqe_feature_rows`) are fitted with one
  multivariate Gaussian, skipping undefined values.

  Returns:
    (mean `[36]`, cov `[36, 36]`) as float64 numpy arrays.
  """
  return mvg_of_rows(*niqe_feature_rows(images, patch_size, batch))


def mvg_of_rows(features, valid):
  """(mean, cov) float64 of `niqe_feature_rows` output."""
  model = quality.PristineModel.fit_features(features, valid)
  return model.mean, model.cov


def standardised_rows(features, valid, reference_mean, reference_std):
  """NIQE feature rows on the reference's scale, for nearest neighbours.

  Each feature minus the reference mean, over the reference standard
  deviation (the 36 features have scales from ~0.1 to ~10, and Euclidean
  distances would otherwise see only the largest); undefined values sit at
  the reference mean (0).
  """
  scaled = (features - reference_mean) / np.maximum(reference_std, 1e-12)
  return np.where(valid, scaled, 0.0).astype(np.float32)


def niqe_set_distance(images, reference) -> float:
  """NIQE distance between the feature MVGs of `images` and `reference`.

  `reference` is a (mean, cov) pair from `niqe_mvg` of real images (e.g.
  held-out patches); 0 when the two sets have the same NSS statistics.
  """
  return mvg_set_distance(niqe_mvg(images), reference)


def mvg_set_distance(mvg, reference) -> float:
  """`niqe_set_distance` of a (mean, cov) pair already fitted."""
  with jax.enable_x64(True):
    return float(quality.mvg_distance(jnp.asarray(reference[0]),
                                      jnp.asarray(reference[1]),
                                      jnp.asarray(mvg[0]), jnp.asarray(mvg[1])))


# --- sliced Wasserstein distance on Laplacian pyramids (Karras et al., 2018) ----------

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x):
  """Separable 5-tap binomial filter, reflected borders; x `[N, H, W, C]`."""
  padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
  h, w = x.shape[1], x.shape[2]
  rows = sum(k * padded[:, i:i + h] for i, k in enumerate(_BINOMIAL))
  return sum(k * rows[:, :, i:i + w] for i, k in enumerate(_BINOMIAL))


@jax.jit
def _pyramid_step(x):
  """(Laplacian level, next Gaussian level) of x `[N, H, W, C]`."""
  down = _blur(x)[:, ::2, ::2]
  n, h, w, c = x.shape
  up = jnp.zeros((n, h, w, c), x.dtype).at[:, ::2, ::2].set(down)
  return x - 4.0 * _blur(up), down


def laplacian_pyramid(images, levels: int) -> list[np.ndarray]:
  """`levels` Laplacian levels of `images [N, H, W, C]`, finest first, the
  last one the coarse Gaussian residual (as ProGAN's SWD)."""
  current = jnp.asarray(images, jnp.float32)
  pyramid = []
  for _ in range(levels - 1):
    level, current = _pyramid_step(current)
    pyramid.append(np.asarray(level))
  pyramid.append(np.asarray(current))
  return pyramid


def _descriptors(level, per_image, size, rng):
  """`per_image` random `size`x`size` patches of every image, normalised per
  channel over the whole set, as rows `[N * per_image, size * size * C]`."""
  n, h, w, c = level.shape
  half = size // 2
  ys = rng.integers(half, h - half, size=(n, per_image))
  xs = rng.integers(half, w - half, size=(n, per_image))
  offsets = np.arange(-half, half + 1)
  image = np.arange(n)[:, None, None, None]
  patches = level[image, (ys[..., None, None] + offsets[:, None]),
                  (xs[..., None, None] + offsets[None, :])]
  patches = patches.reshape(-1, size, size, c)
  patches = patches - patches.mean(axis=(0, 1, 2))
  patches = patches / np.maximum(patches.std(axis=(0, 1, 2)), 1e-8)
  return patches.reshape(len(patches), -1)


@jax.jit
def _sliced_distance_on_device(a, b, directions):
  pa = jnp.sort(a @ directions, axis=0)
  pb = jnp.sort(b @ directions, axis=0)
  return jnp.mean(jnp.abs(pa - pb))


def _sliced_distance(a, b, directions):
  if jax.default_backend() != 'cpu':
    return float(_sliced_distance_on_device(a, b, directions))
  # numpy on a CPU: XLA:CPU sorts these columns about 10x slower; rows of
  # the transposed projections sort faster than strided columns
  pa = np.sort(directions.T @ a.T, axis=1)
  pb = np.sort(directions.T @ b.T, axis=1)
  return float(np.mean(np.abs(pa - pb)))


def sliced_wasserstein(images_a, images_b, *, patches_per_image: int = 128,
                       patch_size: int = 7, directions: int = 128,
                       repeats: int = 4, seed: int = 0) -> dict[str, float]:
  """SWD between two image sets on Laplacian-pyramid patches, ×10³, per level.

  As in the progressive-GAN paper (Karras et al., 2018): levels from the
  full resolution down to 16x16, 128 random 7x7 neighbourhoods per image and
  level, each set's descriptors normalised per channel over that set, then
  the mean over `repeats` x `directions` random unit projections of the
  1-D Wasserstein distance between the sorted projections. Images `[N, H, W,
  3]` (any range; uint8 or float), both sets of the same size.

  Returns `swd/<side>` for each level and `swd/mean`.
  """
  a, b = np.asarray(images_a, np.float32), np.asarray(images_b, np.float32)
  if a.shape[1:] != b.shape[1:] or len(a) != len(b):
    raise ValueError(f'SWD compares sets of one shape, got {a.shape} and '
                     f'{b.shape}')
  side = a.shape[1]
  levels = max(1, int(np.log2(side / 16)) + 1)
  rng = np.random.default_rng(seed)
  results = {}
  for level_a, level_b in zip(laplacian_pyramid(a, levels),
                              laplacian_pyramid(b, levels)):
    # the same neighbourhood positions in both sets: a set against itself
    # gives exactly 0, and position sampling adds no noise of its own
    positions = int(rng.integers(2**32))
    da, db = (_descriptors(level, patches_per_image, patch_size,
                           np.random.default_rng(positions))
              for level in (level_a, level_b))
    values = []
    for _ in range(repeats):
      dirs = rng.standard_normal((da.shape[1], directions)).astype(np.float32)
      dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
      values.append(float(_sliced_distance(da, db, dirs)))
    results[f'swd/{level_a.shape[1]}'] = 1e3 * float(np.mean(values))
  results['swd/mean'] = float(np.mean(list(results.values())))
  return results


# --- diversity ---------------------------------------------------------------------------


def pairwise_ssim(images, pairs: int = 1000, seed: int = 0,
                  batch: int = 500) -> float:
  """Mean SSIM between `pairs` random pairs of distinct images of a set.

  A diversity measure (as in Odena et al., 2017, with SSIM in place of
  MS-SSIM, which needs images of at least 161x161): 1 for a collapsed set of
  identical images, lower for more diverse sets; compare it with the same
  number on real images. Images `[N, H, W, 3]` in [-1, 1] or uint8;
  per-channel SSIM with the reference window (11x11, σ 1.5, 'valid').
  """
  n = len(images)
  if n < 2:
    raise ValueError('diversity needs at least 2 images')
  rng = np.random.default_rng(seed)
  first = rng.integers(0, n, pairs)
  second = (first + rng.integers(1, n, pairs)) % n    # never the same image
  values = [np.asarray(_ssim_pairs(as_unit_range(images[first[i:i + batch]]),
                                   as_unit_range(images[second[i:i + batch]])))
            for i in range(0, pairs, batch)]
  return float(np.concatenate(values).mean())


@jax.jit
def _ssim_pairs(x, y):
  return quality.ssim(x, y, data_range=2.0)
