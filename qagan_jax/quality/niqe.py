"""NIQE: multivariate-Gaussian models of NSS features and the distance between them.

`niqe_score` is the no-reference quality score of Mittal, Soundararajan &
Bovik (2013), agreeing with the MATLAB release (lower is better). The same
pieces, `mvg_fit` and `mvg_distance`, are differentiable and make the
QAGAN-NIQE penalty on critic gradient maps.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qagan_jax.quality import _checks
from qagan_jax.quality import nss

# MATLAB's rgb2gray weights (rgb2ycbcr's luma row, normalised).
MATLAB_RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121,
                           0.114020904255103)
# Pristine models shipped with the package (qagan_jax/quality/data/).
STANDARD_MODEL = 'niqe_standard.npz'
SKIMAGE_MODEL = 'niqe_skimage.npz'


# --- multivariate Gaussian fit and distance -------------------------------------------


def mvg_fit(features: jax.Array, valid: jax.Array | None = None):
  """Mean and covariance of feature vectors, skipping missing values.

  As MATLAB's nanmean (per feature, over the rows where it is present) and
  nancov (over complete rows only, normalised by count - 1). Differentiable
  in `features`; every output is finite.

  Args:
    features: `[..., N, D]` feature vectors (N rows of D features).
    valid: `[..., N, D]` bool, False for missing values; None means all
      present except NaN entries.

  Returns:
    (mean `[..., D]`, cov `[..., D, D]`).
  """
  features = jnp.asarray(features)
  if valid is None:
    valid = ~jnp.isnan(features)
  valid = jnp.asarray(valid, bool)
  values = jnp.where(valid, features, 0)
  counts = jnp.sum(valid, axis=-2)
  mean = jnp.sum(values, axis=-2) / jnp.maximum(counts, 1)
  complete = jnp.all(valid, axis=-1, keepdims=True)                # [..., N, 1]
  n_complete = jnp.sum(complete, axis=-2)                          # [..., 1]
  complete_mean = (jnp.sum(jnp.where(complete, values, 0), axis=-2)
                   / jnp.maximum(n_complete, 1))
  centred = jnp.where(complete, values - complete_mean[..., None, :], 0)
  cov = jnp.einsum('...ni,...nj->...ij', centred, centred,
                   precision=jax.lax.Precision.HIGHEST)
  cov = cov / jnp.maximum(n_complete - 1, 1)[..., None]
  return mean, cov


def _psd_solve(matrix, rhs):
  """matrix^+ rhs for symmetric PSD `matrix` `[..., D, D]`, `rhs` `[..., D]`.

  Cholesky when the matrix is clearly positive definite (accurate in
  float32 even at condition numbers ~1e6, where a float32 eigendecomposition
  is not), else a pseudo-inverse that drops eigenvalues below eps * max.
  One matrix (the training penalty's case) computes the eigendecomposition
  only when the factorisation fails (`lax.cond`; an outer vmap turns it into
  a select of both, as batched matrices compute both here).
  """
  chol, definite = _cholesky_if_definite(matrix)
  if matrix.ndim == 2 and rhs.ndim == 1:
    return jax.lax.cond(definite,
                        lambda: _cholesky_solve(chol, rhs),
                        lambda: _pinv_solve(matrix, rhs))
  return jnp.where(definite[..., None], _cholesky_solve(chol, rhs),
                   _pinv_solve(matrix, rhs))


def _cholesky_if_definite(matrix):
  """(Cholesky factor, or the identity where it is not usable; whether the
  matrix is clearly positive definite: finite pivots above eps * max)."""
  eps = jnp.finfo(matrix.dtype).eps
  chol = jnp.linalg.cholesky(matrix)
  pivots = jnp.diagonal(chol, axis1=-2, axis2=-1)**2
  largest = jnp.max(jnp.diagonal(matrix, axis1=-2, axis2=-1), axis=-1)
  definite = (jnp.all(jnp.isfinite(chol), axis=(-2, -1))
              & (jnp.min(pivots, axis=-1) > eps * largest))
  safe = jnp.where(definite[..., None, None], chol,
                   jnp.eye(matrix.shape[-1], dtype=matrix.dtype))
  return safe, definite


def _cholesky_solve(chol, rhs):
  return jax.scipy.linalg.cho_solve((chol, True), rhs[..., None])[..., 0]


def _pinv_solve(matrix, rhs):
  eps = jnp.finfo(matrix.dtype).eps
  eigvals, eigvecs = jnp.linalg.eigh(matrix)
  keep = eigvals > eps * jnp.max(eigvals, axis=-1, keepdims=True)
  inverse = jnp.where(keep, 1 / jnp.where(keep, eigvals, 1), 0)
  projected = jnp.einsum('...ji,...j->...i', eigvecs, rhs)
  return jnp.einsum('...ij,...j->...i', eigvecs, inverse * projected)


@jax.custom_vjp
def _mahalanobis_squared(delta, matrix):
  return jnp.sum(delta * _psd_solve(matrix, delta), axis=-1)


def _mahalanobis_fwd(delta, matrix):
  solution = _psd_solve(matrix, delta)
  return jnp.sum(delta * solution, axis=-1), solution


def _mahalanobis_bwd(solution, cotangent):
  # d(d^T S^-1 d) = 2 v.dd - v^T dS v with v = S^-1 d: no eigenvalue gaps,
  # so the gradient stays finite for repeated eigenvalues.
  g = cotangent[..., None]
  return (2 * g * solution,
          -g[..., None] * solution[..., :, None] * solution[..., None, :])


_mahalanobis_squared.defvjp(_mahalanobis_fwd, _mahalanobis_bwd)


def mvg_distance(mean_p: jax.Array, cov_p: jax.Array, mean_t: jax.Array,
                 cov_t: jax.Array) -> jax.Array:
  """NIQE distance between two multivariate Gaussians.

  sqrt((mu_p - mu_t)^T ((Sigma_p + Sigma_t) / 2)^+ (mu_p - mu_t)), with the
  pseudo-inverse of MATLAB's NIQE. Finite for singular or zero Sigma_t (and
  even Sigma_p), with finite gradients, including where the distance is 0.

  Args:
    mean_p, cov_p: pristine model, `[..., D]` and `[..., D, D]`.
    mean_t, cov_t: test model, same shapes (broadcasting over leading dims).

  Returns:
    `[...]` distances.
  """
  mean_p, cov_p, mean_t, cov_t = (jnp.asarray(a) for a in (mean_p, cov_p,
                                                           mean_t, cov_t))
  if mean_p.shape[-1:] != mean_t.shape[-1:] or cov_p.shape[-2:] != cov_t.shape[
      -2:] or cov_p.shape[-1] != mean_p.shape[-1]:
    raise ValueError(
        'mvg_distance needs means [..., D] and covariances [..., D, D] of the '
        f'same D, got {mean_p.shape}, {cov_p.shape}, {mean_t.shape}, '
        f'{cov_t.shape}.')
  dtype = jnp.result_type(mean_p, cov_p, mean_t, cov_t, jnp.float32)
  delta = (mean_p - mean_t).astype(dtype)
  matrix = (0.5 * (cov_p + cov_t)).astype(dtype)
  delta, matrix = jnp.broadcast_arrays(delta[..., None, :], matrix)
  squared = _mahalanobis_squared(delta[..., 0, :], matrix)
  positive = squared > 0
  # NaN parameters give NaN, not the 0 of "not > 0"
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)),
                   jnp.where(jnp.isnan(squared), squared, 0))


# --- pristine models ------------------------------------------------------------------


class PristineModel(NamedTuple):
  """A multivariate Gaussian of pristine NSS features (an immutable pytree).

  Attributes:
    mean: `[36]` mean feature vector (MATLAB's mu_prisparam).
    cov: `[36, 36]` covariance (MATLAB's cov_prisparam).
  """
  mean: jax.Array
  cov: jax.Array

  @classmethod
  def fit_features(cls, features, valid=None) -> 'PristineModel':
    """Fits the model to `[N, D]` features (NaN or `valid=False` = missing)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
      raise ValueError('fit_features needs a [N, D] array with N >= 2 rows, '
                       f'got shape {features.shape}.')
    with jax.enable_x64(True):
      mean, cov = mvg_fit(features, valid)
      return cls(np.asarray(mean), np.asarray(cov))

  @classmethod
  def fit_images(cls, images, *, patch_size: int = 96,
                 sharpness_threshold: float = 0.75,
                 constant: float = 1.0) -> 'PristineModel':
    """Fits the model to the sharp patches of pristine images.

    As MATLAB's estimatemodelparam: per image, the patches whose mean local
    sigma exceeds `sharpness_threshold` times the image's largest, pooled
    over all images, then nan-robust mean and covariance.

    Args:
      images: an iterable of `[H, W, C]` images (C = 1 or 3; sizes may
        differ), values in [0, 255] for the standard constant.
      patch_size, constant: as in `niqe_features`.
      sharpness_threshold: fraction of each image's sharpest patch.
    """
    rows, masks = [], []
    for image in images:
      # MATLAB's steps in float64, as `niqe_score`'s MATLAB mode
      gray = _matlab_grayscale(image)
      with jax.enable_x64(True):
        found = nss.niqe_features(jnp.asarray(gray), patch_size,
                                  constant=constant, shape_estimate='grid')
        sharp = np.asarray(found.sharpness)
        keep = sharp > sharpness_threshold * sharp.max()
        rows.append(np.asarray(found.features, np.float64)[keep])
        masks.append(np.asarray(found.valid)[keep])
    if not rows:
      raise ValueError('fit_images needs at least one image.')
    return cls.fit_features(np.concatenate(rows), np.concatenate(masks))

  def save(self, path: str | os.PathLike) -> None:
    """Writes the model to a `.npz` file (float64 arrays mean, cov)."""
    np.savez(path, mean=np.asarray(self.mean, np.float64),
             cov=np.asarray(self.cov, np.float64))

  @classmethod
  def load(cls, path: str | os.PathLike) -> 'PristineModel':
    """Reads a model from the project's `.npz` or a MATLAB `.mat` file.

    A `.mat` file must hold `mu_prisparam` `[1, D]` and `cov_prisparam`
    `[D, D]`, as NIQE's modelparameters.mat.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'no pristine model file at {path!r}.')
    if path.endswith('.mat'):
      import scipy.io  # pylint: disable=g-import-not-at-top
      try:
        contents = scipy.io.loadmat(path)
      except Exception as error:  # scipy raises several types for bad files
        raise ValueError(f'{path!r} is not a readable MATLAB .mat file: '
                         f'{error}') from error
      keys = ('mu_prisparam', 'cov_prisparam')
    else:
      try:
        contents = dict(np.load(path, allow_pickle=False))
      except Exception as error:
        raise ValueError(f'{path!r} is not a readable .npz file: {error}'
                         ) from error
      keys = ('mean', 'cov')
    missing = [k for k in keys if k not in contents]
    if missing:
      found = sorted(k for k in contents if not k.startswith('__'))
      raise ValueError(f'{path!r} has no {" / ".join(missing)}: a pristine '
                       f'model needs {keys[0]} and {keys[1]}; found {found}.')
    mean = np.asarray(contents[keys[0]], np.float64).ravel()
    cov = np.asarray(contents[keys[1]], np.float64)
    if cov.shape != (mean.size, mean.size):
      raise ValueError(f'{path!r}: covariance of shape {cov.shape} does not '
                       f'match a mean of {mean.size} features.')
    return cls(mean, cov)

  @classmethod
  def standard(cls) -> 'PristineModel':
    """The standard NIQE model (Mittal et al. 2013, 96x96 patches)."""
    return _packaged_model(STANDARD_MODEL)

  @classmethod
  def skimage_photographs(cls) -> 'PristineModel':
    """The model fitted to scikit-image's photographs (see experiments/)."""
    return _packaged_model(SKIMAGE_MODEL)


@functools.lru_cache(maxsize=None)
def _packaged_model(name: str) -> PristineModel:
  resource = importlib.resources.files('qagan_jax.quality') / 'data' / name
  with importlib.resources.as_file(resource) as path:
    return PristineModel.load(path)


# --- the score ------------------------------------------------------------------------


def to_matlab_grayscale(images) -> jax.Array:
  """Grayscale as NIQE's MATLAB code sees it: `[..., H, W, 1]` float.

  RGB goes through MATLAB's rgb2gray; for integer (uint8) input the result
  is rounded to integers as rgb2gray on uint8 does. Grayscale passes through.
  """
  is_integer = np.issubdtype(np.dtype(getattr(images, 'dtype', np.float32)),
                             np.integer)
  images = _checks.as_float_images('images', images)
  if images.shape[-1] == 1:
    return images
  if images.shape[-1] != 3:
    raise ValueError('images must be grayscale [..., H, W, 1] or RGB '
                     f'[..., H, W, 3], got shape {images.shape}.')
  weights = jnp.asarray(MATLAB_RGB2GRAY_WEIGHTS, images.dtype)
  gray = jnp.tensordot(images, weights, axes=([-1], [0]),
                       precision=jax.lax.Precision.HIGHEST)[..., None]
  # uint8 rounding in MATLAB is half away from zero; values are >= 0 here.
  return jnp.floor(gray + 0.5) if is_integer else gray


def niqe_score(images, model: PristineModel | None = None, *,
               patch_size: int = 96, matlab: bool | None = None) -> jax.Array:
  """The NIQE score of images (lower is more natural), as MATLAB's NIQE.

  Features of all non-overlapping `patch_size` patches of an image are
  fitted with a multivariate Gaussian and compared with the pristine model by
  `mvg_distance`, as MATLAB's computequality(im, 96, 96, 0, 0, mu, cov).

  Two ways to compute it:

  * MATLAB's (`matlab=True`, and the default for concrete images): the
    release's steps in float64 on the host's CPU: rgb2gray, MSCN, the shape
    alpha of each fit from MATLAB's grid 0.2:0.001:10
    (`nss.shape_from_ratio_grid`), imresize(im, 0.5), nanmean/nancov and
    the pseudo-inverse. It gives MATLAB's score to ~1e-6 (relative) on every
    reference image without exactly flat 7x7 windows; where windows are
    exactly flat (saturated or posterised areas) MATLAB's own result
    depends on the rounding of its filters, and scores differ by up to
    0.6% (docs/quality.md).
  * The differentiable one (`matlab=False`, and what runs under jit, grad
    or vmap): float32 on the images' devices, alpha the root of
    rho(alpha) = R (`nss.shape_from_ratio`), the distance through a
    float32 pseudo-inverse; within ~0.1% of MATLAB on photographs.

  Args:
    images: `[..., H, W, C]`, C = 1 or 3, values in [0, 255] as MATLAB's
      double(imread(...)); uint8 is accepted. Colour goes through MATLAB's
      rgb2gray. Each image needs at least 2 patches.
    model: the pristine model; None means the standard NIQE model.
    patch_size: patch side (96 in NIQE).
    matlab: MATLAB's steps in float64 (True) or the differentiable float32
      path (False); None: MATLAB's for concrete images, float32 for traced
      ones. True under a trace is refused.

  Returns:
    `[...]` scores; NaN for an image holding a NaN or an inf (the other
    images of the batch keep their exact scores).

  Warns once per process when given concrete images whose maximum is at
  most 1: NIQE's model expects [0, 255], and [0, 1] images give a
  meaningless score. Traced images (under jit) are not checked.
  """
  model = PristineModel.standard() if model is None else model
  patch_size = _checks.positive_int('patch_size', patch_size)
  if matlab not in (None, True, False):
    raise TypeError(f'matlab must be None, True or False, got {matlab!r}.')
  traced = _checks.is_traced(images)
  if matlab and traced:
    raise ValueError('niqe_score(matlab=True) computes in float64 on the host '
                     'and needs concrete images; under jit, grad or vmap '
                     'leave matlab to its default (the float32 path).')
  gray = to_matlab_grayscale(images)       # also checks the images
  _check_patch_count(gray.shape, patch_size)
  _warn_if_unit_range(images)
  if matlab or (matlab is None and not traced):
    return jnp.asarray(_matlab_score(images, model, patch_size))
  found = nss.niqe_features(gray, patch_size)
  return _score_features(found.features, found.valid,
                         jnp.asarray(model.mean, found.features.dtype),
                         jnp.asarray(model.cov, found.features.dtype))


def _check_patch_count(shape, patch_size: int) -> None:
  h, w = shape[-3], shape[-2]
  if h < patch_size or w < patch_size:
    raise ValueError(f'images of {h}x{w} pixels are smaller than one '
                     f'{patch_size}x{patch_size} patch.')
  if h >= patch_size and w >= patch_size and (h // patch_size) * (
      w // patch_size) < 2:
    raise ValueError(
        f'NIQE needs at least 2 patches of {patch_size}x{patch_size} per '
        f'image; images of {h}x{w} hold 1.')


def _matlab_grayscale(images) -> np.ndarray:
  """`to_matlab_grayscale` in float64 with NumPy, as MATLAB's double
  arithmetic rounds rgb2gray on uint8."""
  integer = _checks.is_integer_input(images)
  values = np.asarray(images).astype(np.float64)
  if values.shape[-1] == 1:
    return values
  gray = values @ np.asarray(MATLAB_RGB2GRAY_WEIGHTS)
  return (np.floor(gray + 0.5) if integer else gray)[..., None]


def _matlab_score(images, model: PristineModel, patch_size: int) -> np.ndarray:
  """The MATLAB-mode score `[...]` of concrete images (see `niqe_score`)."""
  gray = _matlab_grayscale(images)
  with jax.enable_x64(True):
    found = nss.niqe_features(jnp.asarray(gray), patch_size,
                              shape_estimate='grid')
    features, valid = np.asarray(found.features), np.asarray(found.valid)
  return _score_features_float64(features, valid, model.mean, model.cov)


def _score_features_float64(features, valid, mean_p, cov_p) -> np.ndarray:
  """`_score_features` in float64 with numpy: features, valid `[..., N, D]`
  -> `[...]` scores (NaN where an image's features hold NaN)."""
  features = np.asarray(features, np.float64)
  lead, (n, d) = features.shape[:-2], features.shape[-2:]
  flat_features = features.reshape(-1, n, d)
  flat_valid = np.asarray(valid, bool).reshape(-1, n, d)
  mean_p, cov_p = np.asarray(mean_p, np.float64), np.asarray(cov_p, np.float64)
  scores = np.empty(len(flat_features))
  for i, (rows, present) in enumerate(zip(flat_features, flat_valid)):
    if np.isnan(rows).any():
      scores[i] = np.nan
      continue
    # as mvg_fit: nanmean per feature, nancov over the complete rows
    values = np.where(present, rows, 0.0)
    mean_t = values.sum(0) / np.maximum(present.sum(0), 1)
    complete = values[present.all(axis=1)]
    centred = complete - complete.mean(0) if len(complete) else complete
    cov_t = centred.T @ centred / max(len(complete) - 1, 1)
    # MATLAB's pinv: eigenvalues below D * eps * the largest count as zero
    eigenvalues, vectors = np.linalg.eigh(0.5 * (cov_p + cov_t))
    keep = eigenvalues > d * np.finfo(np.float64).eps * np.abs(
        eigenvalues).max(initial=0.0)
    projected = vectors.T @ (mean_p - mean_t)
    scores[i] = np.sqrt(max(float(np.sum(projected[keep] ** 2
                                         / eigenvalues[keep])), 0.0))
  return scores.reshape(lead)


_warned_unit_range = False


def _warn_if_unit_range(images) -> None:
  """The commonest NIQE mistake, [0, 1] images, flagged once (never traced)."""
  global _warned_unit_range
  if _warned_unit_range or isinstance(images, jax.core.Tracer):
    return
  values = np.asarray(images)
  if not np.issubdtype(values.dtype, np.floating):
    return
  largest = np.max(values, initial=-np.inf, where=np.isfinite(values))
  if np.isfinite(largest) and largest <= 1:
    _warned_unit_range = True
    warnings.warn(
        f'niqe_score: the images\' maximum is {largest:.3g}, but '
        'NIQE expects values in [0, 255] (as MATLAB\'s double(imread(...))); '
        'scale [0, 1] images by 255 first.', UserWarning, stacklevel=3)


@jax.jit
def _score_features(features, valid, mean_p, cov_p):
  # mvg_fit reads NaN features as missing values; an image with any NaN
  # feature (niqe_features gives those only for non-finite images) is NaN.
  bad = jnp.any(jnp.isnan(features), axis=(-2, -1))
  mean_t, cov_t = mvg_fit(features, valid)
  return jnp.where(bad, jnp.nan, mvg_distance(mean_p, cov_p, mean_t, cov_t))
