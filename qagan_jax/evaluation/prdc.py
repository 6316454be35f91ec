"""Precision, recall, density and coverage of generated samples in a feature space.

Fidelity and diversity measured apart, where FID mixes them:

  * precision (Kynkäänniemi et al. 2019): the share of fake samples that fall
    inside the real manifold, the union of balls around every real sample
    whose radius is the distance to its k-th nearest real neighbour;
  * recall: the share of real samples inside the fake manifold (likewise);
  * density (Naeem et al. 2020): how many real balls contain each fake
    sample, divided by k and averaged; ~1 when the two sets have the same
    distribution, above 1 where fakes crowd into dense real regions, and
    robust to real outliers where precision is not;
  * coverage: the share of real samples whose ball holds at least one fake.

As the authors' reference package `prdc` (0.2): Euclidean distances, the
radius of a point is its (k+1)-th smallest distance to its own set (itself
included at 0), and comparisons are strict. Distances are computed in
chunks of rows, so 50,000 x 50,000 of them are never held at once, on the
default device (the accelerator when there is one).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_K = 5
DEFAULT_CHUNK = 1024


def _squared_distances(a, b):
  """`[n, m]` squared Euclidean distances of rows `a` `[n, D]`, `b` `[m, D]`."""
  cross = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  squared = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
             - 2 * cross)
  return jnp.maximum(squared, 0)


@functools.partial(jax.jit, static_argnames='k')
def _chunk_radii(chunk, features, k):
  """(k+1)-th smallest squared distance of each `chunk` row to `features`."""
  smallest, _ = jax.lax.top_k(-_squared_distances(chunk, features), k + 1)
  return -smallest[:, -1]


@jax.jit
def _chunk_counts(fake, real, real_radii, fake_radii, fake_valid):
  """One chunk of fakes against all reals.

  Returns per fake: how many real balls hold it; per real: whether a (valid)
  fake ball holds it, and its smallest squared distance to a valid fake.
  """
  d = _squared_distances(fake, real)                      # [c, n_real]
  inside_real = d < real_radii[None, :]
  in_balls = jnp.sum(inside_real, axis=1)
  inside_fake = (d < fake_radii[:, None]) & fake_valid[:, None]
  nearest = jnp.min(jnp.where(fake_valid[:, None], d, jnp.inf), axis=0)
  return in_balls, jnp.any(inside_fake, axis=0), nearest


def _chunks(features, chunk):
  """Yields (padded `[chunk, D]` rows, number of real rows) over `features`."""
  for start in range(0, len(features), chunk):
    rows = features[start:start + chunk]
    n = len(rows)
    if n < chunk:   # one shape, one compilation
      rows = np.concatenate([rows, np.zeros((chunk - n,) + rows.shape[1:],
                                            rows.dtype)])
    yield rows, n


def nearest_neighbour_radii(features, k: int = DEFAULT_K,
                            chunk: int = DEFAULT_CHUNK) -> np.ndarray:
  """Distance of each row of `features` `[N, D]` to its k-th nearest other row.

  Returns `[N]` squared distances (the (k+1)-th smallest, the row itself
  counting as the first), computed `chunk` rows at a time.
  """
  features = jnp.asarray(features)
  radii = [np.asarray(_chunk_radii(rows, features, k))[:n]
           for rows, n in _chunks(np.asarray(features), min(chunk,
                                                            len(features)))]
  return np.concatenate(radii)


def _checked(name, features):
  features = np.asarray(features)
  if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
    raise ValueError(f'{name} must be a float array [N, D] of feature rows, '
                     f'got {features.dtype} of shape {features.shape}.')
  if not np.all(np.isfinite(features)):
    bad = int(np.sum(~np.all(np.isfinite(features), axis=1)))
    raise ValueError(f'{name}: {bad} of {len(features)} feature rows are not '
                     'finite (NaN or inf); precision/recall are undefined.')
  return features


def prdc(real_features, fake_features, k: int = DEFAULT_K,
         chunk: int = DEFAULT_CHUNK) -> dict[str, float]:
  """Precision, recall, density and coverage of fakes against reals.

  Args:
    real_features: `[N, D]` features of real images.
    fake_features: `[M, D]` features of generated images (same D).
    k: the neighbour that sets each ball's radius (5 in Naeem et al.).
    chunk: rows of distances computed at once (memory: chunk x max(N, M)).

  Returns:
    {'precision', 'recall', 'density', 'coverage'} as floats.
  """
  real = _checked('real_features', real_features)
  fake = _checked('fake_features', fake_features)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f'real and fake features differ in size: {real.shape[1]} '
                     f'and {fake.shape[1]}.')
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f'k must be an integer >= 1, got {k!r}.')
  if k >= min(len(real), len(fake)):
    raise ValueError(f'k = {k} needs more than k rows in each set, got '
                     f'{len(real)} real and {len(fake)} fake.')
  dtype = np.result_type(real.dtype, fake.dtype)
  real, fake = real.astype(dtype), fake.astype(dtype)
  real_radii = jnp.asarray(nearest_neighbour_radii(real, k, chunk))
  fake_radii = nearest_neighbour_radii(fake, k, chunk)
  real_device = jnp.asarray(real)
  chunk = min(chunk, len(fake))
  in_balls = []
  recalled = np.zeros(len(real), bool)
  nearest = np.full(len(real), np.inf, dtype)
  for (rows, n), start in zip(_chunks(fake, chunk), range(0, len(fake), chunk)):
    radii = np.zeros(chunk, dtype)
    radii[:n] = fake_radii[start:start + n]
    valid = np.arange(chunk) < n
    counts, inside, near = jax.device_get(_chunk_counts(
        rows, real_device, real_radii, radii, valid))
    in_balls.append(counts[:n])
    recalled |= inside
    nearest = np.minimum(nearest, near)
  in_balls = np.concatenate(in_balls)
  return {
      'precision': float(np.mean(in_balls > 0)),
      'recall': float(np.mean(recalled)),
      'density': float(np.mean(in_balls) / k),
      'coverage': float(np.mean(nearest < np.asarray(real_radii))),
  }
