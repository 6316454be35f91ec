"""Metrics that need no download, so that every run, the demo included, is measured.

Images are `[N, H, W, 3]` in [-1, 1], as the generator makes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qagan_jax import quality


@jax.jit
def _to_gray_255(images):
  return (quality.rgb_to_grayscale(images) + 1.0) * 127.5


def niqe_mvg(images, patch_size: int | None = None, batch: int = 500):
  """Mean and covariance of the NIQE features of a set of images.

  Images go to grayscale (BT.601) in [0, 255]; every image gives its
  non-overlapping `patch_size` patches (default: the whole image, one patch),
  and the features of all patches are fitted with one multivariate Gaussian.

  Returns:
    (mean `[36]`, cov `[36, 36]`) as float64 numpy arrays.
  """
  images = np.asarray(images, np.float32)
  patch_size = patch_size or images.shape[1]
  features, valid = [], []
  for start in range(0, len(images), batch):
    found = quality.niqe_features(_to_gray_255(images[start:start + batch]),
                                  patch_size)
    features.append(np.asarray(found.features).reshape(-1, 36))
    valid.append(np.asarray(found.valid).reshape(-1, 36))
  model = quality.PristineModel.fit_features(np.concatenate(features),
                                             np.concatenate(valid))
  return model.mean, model.cov


def niqe_set_distance(images, reference) -> float:
  """NIQE distance between the feature MVGs of `images` and `reference`.

  `reference` is a (mean, cov) pair from `niqe_mvg` of real images (e.g.
  held-out patches); 0 when the two sets have the same NSS statistics.
  """
  mean, cov = niqe_mvg(images)
  with jax.enable_x64(True):
    return float(quality.mvg_distance(jnp.asarray(reference[0]),
                                      jnp.asarray(reference[1]),
                                      jnp.asarray(mean), jnp.asarray(cov)))
