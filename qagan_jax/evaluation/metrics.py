"""FID, Inception Score and KID from Inception outputs; Gaussian statistics of features.

The feature and logit extraction runs on the devices (`InceptionExtractor`);
the statistics are computed on the host in float64, where a 2048x2048
covariance and its square root are cheap and exact.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from qagan_jax import compilation
from qagan_jax.evaluation import inception


# --- Inception on the devices ---------------------------------------------------------


class InceptionExtractor:
  """Pool features and logits of image batches, data-parallel over local devices."""

  def __init__(self, variables, batch_size: int = 200):
    devices = jax.local_devices()
    # a multiple of the device count, so that every device gets a share
    n = len(devices)
    self.batch_size = max(n, batch_size // n * n)
    mesh = jax.sharding.Mesh(np.array(devices), ('data',))
    self._sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec('data'))
    self._apply = _inception_apply(devices[0].platform)
    self._replicated = jax.device_put(
        variables, jax.sharding.NamedSharding(mesh,
                                              jax.sharding.PartitionSpec()))

  def planned_bytes(self, resolution: int) -> int | None:
    """Device memory the network's program needs for a batch of
    `resolution`-pixel images, as XLA planned it
    (`compilation.program_bytes`)."""
    x = jax.ShapeDtypeStruct((self.batch_size, resolution, resolution, 3),
                             jnp.float32, sharding=self._sharding)
    return compilation.program_bytes(
        self._apply.lower(self._replicated, x).compile())

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`images [N, H, W, 3]` uint8 -> (features `[N, 2048]`, logits `[N, 1008]`)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise TypeError(f'expected uint8 images, got {images.dtype}; see '
                      'input_pipeline.to_uint8 for generator outputs in [-1, 1]')
    features, logits = [], []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)   # one compiled shape
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                              np.uint8)])
      x = jax.device_put(chunk.astype(np.float32) / 255.0, self._sharding)
      f, l = jax.device_get(self._apply(self._replicated, x))
      features.append(f[:len(f) - pad])
      logits.append(l[:len(l) - pad])
    return np.concatenate(features), np.concatenate(logits)


@functools.cache
def _inception_apply(platform: str):
  """The jitted network `(variables, images) -> (features, logits)`: one
  function a process, so that every extractor shares its compilations."""
  model = inception.FIDInceptionV3()
  return compilation.jit(lambda v, x: model.apply(v, x), platform=platform)


# --- statistics --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GaussianStats:
  """Mean `[D]` and covariance `[D, D]` (float64) of a feature set of `count` rows."""
  mean: np.ndarray
  cov: np.ndarray
  count: int

  @classmethod
  def of(cls, features, chunk: int = 4096) -> GaussianStats:
    """Unbiased statistics, accumulated in float64 chunk by chunk."""
    features = np.asarray(features)
    n, d = features.shape
    if n < 2:
      raise ValueError(f'need at least 2 feature rows, got {n}')
    mean = features.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((d, d))
    for start in range(0, n, chunk):
      centred = features[start:start + chunk].astype(np.float64) - mean
      scatter += centred.T @ centred
    return cls(mean, scatter / (n - 1), n)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
  """||μ1 - μ2||² + tr Σ1 + tr Σ2 - 2 tr (Σ1 Σ2)^½, in float64.

  tr (Σ1 Σ2)^½ is computed as tr (Σ1^½ Σ2 Σ1^½)^½, whose argument is
  symmetric positive semi-definite: two symmetric eigendecompositions with
  eigenvalues clipped at 0, no complex parts and no iterative square root
  that may fail to converge for singular covariances (fewer samples than
  dimensions).
  """
  mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  if mean1.shape != mean2.shape or cov1.shape != cov2.shape:
    raise ValueError(f'shapes differ: {mean1.shape}/{cov1.shape} and '
                     f'{mean2.shape}/{cov2.shape}')
  root1 = _psd_sqrt(cov1)
  inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
  trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
  diff = mean1 - mean2
  return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2)
                   - 2 * trace_sqrt, 0.0))


def fid(stats1: GaussianStats, stats2: GaussianStats) -> float:
  """FID between two feature sets' Gaussian statistics."""
  return frechet_distance(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` splits of exp E_x KL(p(y|x) || p(y)).

  As Salimans et al. (2016) and the paper: softmax over all 1008 logits, the
  samples cut into 10 consecutive splits.
  """
  logits = np.asarray(logits, np.float64)
  if len(logits) < splits:
    raise ValueError(f'need at least {splits} samples for {splits} splits')
  probs = scipy.special.softmax(logits, axis=1)
  scores = []
  for part in np.array_split(probs, splits):
    marginal = part.mean(axis=0, keepdims=True)
    # rel_entr is 0 where p(y|x) is 0, also where p(y) is 0 with it
    kl = scipy.special.rel_entr(part, marginal).sum(axis=1).mean()
    scores.append(np.exp(kl))
  return float(np.mean(scores)), float(np.std(scores))


def _polynomial_mmd2(x, y) -> float:
  """Unbiased MMD² with k(a, b) = (a·b / d + 1)³."""
  m, d = len(x), x.shape[1]
  kxx = (x @ x.T / d + 1) ** 3
  kyy = (y @ y.T / d + 1) ** 3
  kxy = (x @ y.T / d + 1) ** 3
  return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())


def kid(features1, features2, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict[str, float]:
  """Kernel Inception Distance (Bińkowski et al., 2018).

  The unbiased MMD² with the cubic polynomial kernel, averaged over
  `subsets` random subsets of `subset_size` rows of each set (drawn without
  replacement within a subset). Returns `kid` (the mean), `kid_std` (the
  spread over subsets, as the KID paper and torch-fidelity report) and
  `kid_stderr` (kid_std / sqrt(subsets), the standard error of the mean).
  """
  x = np.asarray(features1, np.float64)
  y = np.asarray(features2, np.float64)
  size = min(subset_size, len(x), len(y))
  if size < 2:
    raise ValueError('KID needs at least 2 rows in each set')
  rng = np.random.default_rng(seed)
  values = np.array([
      _polynomial_mmd2(x[rng.choice(len(x), size, replace=False)],
                       y[rng.choice(len(y), size, replace=False)])
      for _ in range(subsets)])
  return {'kid': float(values.mean()), 'kid_std': float(values.std()),
          'kid_stderr': float(values.std() / np.sqrt(subsets))}

