"""Measuring a generator: every metric of a config against its reference images.

`Evaluator` computes the metrics named in a config (`eval.metrics` for the
evaluate mode, `eval.train_metrics` during training) on generated samples,
against real images of `eval.reference_split`; its reference statistics
(Inception features, NIQE features) are computed once and cached where
every run of the same data finds them (`reference_cache_dir`: the user
cache by default; written whole, so two runs computing them at once cannot
leave a partial file). `modes.evaluate_run` (the evaluate mode) and the
training loop use it through `sampling.evaluate_samples`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import jax
import numpy as np
from etils import epath

from qagan_jax import errors
from qagan_jax import input_pipeline
from qagan_jax import storage
from qagan_jax.evaluation import inception
from qagan_jax.evaluation import metrics as metrics_lib
from qagan_jax.evaluation import offline
from qagan_jax.evaluation import prdc as prdc_lib
from qagan_jax.evaluation import shares

log = logging.getLogger(__name__)

# 'prdc': precision, recall, density and coverage on Inception features;
# 'prdc_niqe': the same on the NIQE features of each image (offline).
INCEPTION_METRICS = ('fid', 'is', 'kid', 'prdc')
OFFLINE_METRICS = ('swd', 'niqe', 'diversity', 'prdc_niqe')
METRICS = INCEPTION_METRICS + OFFLINE_METRICS
REFERENCE_SPLITS = ('train', 'held_out')
KID_REFERENCE_ROWS = 10_000   # reference features kept for KID and PRDC
PRDC_MAX_ROWS = 10_000        # per set, as Naeem et al. (2020)
SEED = 2024                   # latents of the evaluation samples


def check_metrics(names, field: str = 'eval.metrics') -> list[str]:
  """Errors for unknown metric names (used by config validation)."""
  import difflib  # pylint: disable=g-import-not-at-top
  errors = []
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    return [f"{field} must be a tuple of metric names such as "
            f"('fid', 'swd'), got {names!r}"]
  for name in names:
    if name not in METRICS:
      close = difflib.get_close_matches(name, METRICS, n=1)
      errors.append(f'{field}: unknown metric {name!r}'
                    + (f"; did you mean '{close[0]}'?" if close else '')
                    + f' (known: {", ".join(METRICS)})')
  return errors


def reference_cache_dir(eval_config) -> epath.Path | None:
  """Where reference statistics are cached (`eval.reference_cache`): one
  folder for every run, so that the statistics of a dataset are computed
  once; None for 'none'."""
  setting = eval_config.get('reference_cache', '')
  if setting == 'none':
    return None
  if not setting:
    setting = os.path.join(storage.user_cache_dir(), 'reference')
  return storage.workdir_path(setting)


def _held_out_split(data_config) -> str:
  return 'held_out' if data_config.dataset == 'natural_patches' else 'test'


def reference_images(data_config, split: str, count: int) -> np.ndarray:
  """Real images `[n, R, R, 3]` in [-1, 1] of 'train' or 'held_out'."""
  if split == 'held_out':
    return input_pipeline.held_out_images(data_config, count)
  return input_pipeline.split_images(data_config, 'train', count)


class NonFiniteSamplesError(errors.CheckpointError, ValueError):
  """Samples with NaN or inf: a diverged generator, not a measurement."""

  def __init__(self, bad: int, total: int):
    super().__init__(
        f'{bad} of {total} samples hold NaN or inf values: the generator has '
        'diverged and its metrics would mean nothing. Evaluate an earlier '
        'checkpoint (--checkpoint_step), or lower train.learning_rate or the '
        'penalty weights and retrain.')


def count_non_finite(samples) -> int:
  """How many images of `samples` `[N, ...]` hold a NaN or an inf."""
  samples = np.asarray(samples)
  if not np.issubdtype(samples.dtype, np.floating):
    return 0
  return int(np.sum(~np.all(np.isfinite(samples.reshape(len(samples), -1)),
                            axis=1)))


class Evaluator:
  """`evaluator(samples)` -> {metric name: value} for samples in [-1, 1].

  Args:
    config: the run's config (data, eval fields).
    metrics: names from METRICS.
    num_samples: how many samples it will be given (sizes the offline
      references: SWD compares sets of equal size).
    cache_dir: where reference statistics are cached (None: not cached).
  """

  def __init__(self, config, metrics, num_samples: int, cache_dir=None):
    errors = check_metrics(metrics)
    if errors:
      raise ValueError('; '.join(errors))
    self.config = config
    self.metrics = tuple(metrics)
    self.num_samples = num_samples
    self.cache_dir = storage.workdir_path(cache_dir) if cache_dir else None
    self.extractor = None
    self._weights_digest = None
    if set(self.metrics) & set(INCEPTION_METRICS):
      # Fails here, before any sampling, when the weights are missing.
      variables = inception.load_weights(config.eval.inception_weights or None)
      self.extractor = metrics_lib.InceptionExtractor(
          variables, config.eval.batch_size)
      # cached reference features belong to these weights
      self._weights_digest = hashlib.sha1(
          np.asarray(variables['params']['fc']['kernel']).tobytes()
          + np.asarray(variables['params']['Conv2d_1a_3x3']['conv']['kernel']
                       ).tobytes()).hexdigest()[:10]
    self._offline_reference = None
    self._inception_reference = None

  # -- references, computed once ------------------------------------------------------

  def _cache_path(self, kind: str, count: int) -> epath.Path | None:
    """The cache file of one kind of statistics ('inception', 'niqe') of
    `count` reference images: named by what decides them (the dataset, its
    split and preprocessing, the count, the Inception weights)."""
    if self.cache_dir is None:
      return None
    data = self.config.data
    # what decides the reference images; loader settings and paths do not
    images = {k: v for k, v in data.to_dict().items()
              if k not in ('data_dir', 'worker_count', 'read_threads',
                           'placement', 'device_budget')}
    weights = self._weights_digest if kind == 'inception' else None
    key = json.dumps([images, self.config.eval.reference_split, kind, count,
                      weights], sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return self.cache_dir / (f'{data.dataset}_{self.config.eval.reference_split}'
                             f'_{kind}_{count}_{digest}.npz')

  def references(self) -> list[tuple[str, int, epath.Path | None]]:
    """The reference statistics this evaluator's metrics need, each as
    (kind, real images it is computed on, its cache file or None when not
    cached): 'inception' on eval.reference_samples images (at most the
    split's), 'niqe' on min(num_samples, eval.swd_images). A file that
    exists is read instead of computed."""
    found = []
    if self.extractor is not None:
      count = self.config.eval.reference_samples
      found.append(('inception', min(count, len(self._inception_source())),
                    self._cache_path('inception', count)))
    if {'niqe', 'prdc_niqe'} & set(self.metrics):
      count = min(self.num_samples, self.config.eval.swd_images)
      found.append(('niqe', count, self._cache_path('niqe', count)))
    return found

  def offline_reference(self):
    """(images for SWD, NIQE feature rows, NIQE MVG, pairwise SSIM) of the
    real images; entries a metric does not need are None."""
    if self._offline_reference is None:
      count = min(self.num_samples, self.config.eval.swd_images)
      images = reference_images(self.config.data,
                                self.config.eval.reference_split, count)
      rows = mvg = None
      if {'niqe', 'prdc_niqe'} & set(self.metrics):
        rows = self._niqe_reference_rows(images)
        mvg = offline.mvg_of_rows(*rows)
      ssim = (offline.pairwise_ssim(images, self.config.eval.diversity_pairs)
              if 'diversity' in self.metrics else None)
      self._offline_reference = (images, rows, mvg, ssim)
    return self._offline_reference

  def _read_cache(self, path, names) -> dict | None:
    """The arrays `names` of the cache file at `path`; None when there is
    none, or when it cannot be read (a damaged or partial file: computed
    again, with one warning naming it)."""
    if path is None or not path.is_file():
      return None
    try:
      stored = storage.load_npz(path)
      return {name: stored[name] for name in names}
    except Exception as error:  # pylint: disable=broad-except
      # a damaged file raises zip, pickle, key, value or I/O errors
      log.warning('The cached reference statistics %s cannot be read (%s: '
                  '%s); computing them again.', path, type(error).__name__,
                  (str(error).splitlines() or [''])[0][:160])
      return None

  def _write_cache(self, path, **arrays) -> bool:
    """Writes a cache file (process 0); whether it was written. The cache
    only saves time: one that cannot be written is skipped, with one
    warning naming the setting."""
    if path is None or jax.process_index() != 0:
      return False
    try:
      storage.save_npz(path, compress=False, **arrays)
    except Exception as error:  # pylint: disable=broad-except
      # permissions, a read-only or full disk, an unreachable bucket
      log.warning('Could not write the reference statistics to %s (%s); '
                  'they will be computed again next time. Point '
                  'eval.reference_cache (or $QAGAN_JAX_CACHE) to a writable '
                  "folder, or set eval.reference_cache='none'.", path,
                  (str(error).splitlines() or [''])[0][:160])
      return False
    return True

  def _niqe_reference_rows(self, images):
    """NIQE feature rows of the reference images, from the cache if there."""
    path = self._cache_path('niqe', len(images))
    stored = self._read_cache(path, ('features', 'valid'))
    if stored is not None:
      log.info('Reference NIQE features from %s.', path)
      return stored['features'], stored['valid']
    rows = offline.niqe_feature_rows(images)
    cached = self._write_cache(path, features=rows[0], valid=rows[1])
    log.info('Reference NIQE features of %d images%s.', len(images),
             f', cached in {path}' if cached else '')
    return rows

  def _niqe_prdc(self, rows, reference_rows, reference_mvg):
    """PRDC on standardised NIQE feature rows (one row per 32x32 image)."""
    mean = reference_mvg[0]
    std = np.sqrt(np.diag(reference_mvg[1]))
    real, fake = (offline.standardised_rows(*r, mean, std)[:PRDC_MAX_ROWS]
                  for r in (reference_rows, rows))
    found = prdc_lib.prdc(real, fake, k=self.config.eval.prdc_k)
    return {f'prdc_niqe/{name}': value for name, value in found.items()}

  def _inception_split(self) -> str:
    return ('train' if self.config.eval.reference_split == 'train'
            else _held_out_split(self.config.data))

  def _inception_source(self):
    return input_pipeline.data_source(self.config.data,
                                      self._inception_split())

  def use_inception_reference(self, stats: metrics_lib.GaussianStats,
                              kid_features: np.ndarray) -> None:
    """Scores against these statistics of the real images' Inception
    features (and these rows for KID and PRDC) instead of reading or
    computing them: stand-ins of the real sizes for the preflight's
    timing."""
    self._inception_reference = (stats, kid_features)

  def inception_reference(self):
    """(GaussianStats, KID features) of the real images' Inception features."""
    if self._inception_reference is not None:
      return self._inception_reference
    count = self.config.eval.reference_samples
    path = self._cache_path('inception', count)
    stored = self._read_cache(path, ('mean', 'cov', 'count', 'kid_features'))
    if stored is not None:
      self._inception_reference = (
          metrics_lib.GaussianStats(stored['mean'], stored['cov'],
                                    int(stored['count'])),
          stored['kid_features'])
      log.info('Reference Inception statistics from %s.', path)
      return self._inception_reference
    start = time.perf_counter()
    split = self._inception_split()
    # every process its share of the images, chunk by chunk (50,000 float
    # images are GBs); all of them read, as the random crops and flips of
    # each image depend on those before it
    count = min(count, len(self._inception_source()))
    first, stop = shares.share(count)
    mine, offset = [], 0
    for chunk in input_pipeline.iter_split_images(self.config.data, split,
                                                  count):
      lo, hi = max(first, offset), min(stop, offset + len(chunk))
      if lo < hi:
        mine.append(self.extractor(input_pipeline.to_uint8(
            chunk[lo - offset:hi - offset]))[0])
      offset += len(chunk)
    features = shares.gather({'features': shares.padded(
        np.concatenate(mine) if mine else np.zeros((0, 2048), np.float32),
        shares.share_size(count))}, count)['features']
    stats = metrics_lib.GaussianStats.of(features)
    kid_features = features[:KID_REFERENCE_ROWS]
    cached = self._write_cache(path, mean=stats.mean, cov=stats.cov,
                               count=stats.count, kid_features=kid_features)
    log.info('Reference Inception statistics of %d images in %.0f s%s.',
             len(features), time.perf_counter() - start,
             f', cached in {path}' if cached else '')
    self._inception_reference = (stats, kid_features)
    return self._inception_reference

  # -- measuring ---------------------------------------------------------------------

  def extract(self, samples) -> dict[str, np.ndarray]:
    """What the metrics need of each sample, one row per sample: Inception
    features and logits, NIQE feature rows, the uint8 images themselves
    (SWD, diversity). Samples `[N, R, R, 3]`: float in [-1, 1] or uint8."""
    samples = np.asarray(samples)
    bad = count_non_finite(samples)
    if bad:
      raise NonFiniteSamplesError(bad, len(samples))
    uint8 = (samples if samples.dtype == np.uint8
             else input_pipeline.to_uint8(samples))
    parts = {}
    if self.extractor is not None:
      parts['features'], parts['logits'] = self.extractor(uint8)
    if {'niqe', 'prdc_niqe'} & set(self.metrics):
      parts['niqe_rows'], parts['niqe_valid'] = offline.niqe_feature_rows(
          samples, batch=self.config.eval.batch_size)
    if {'swd', 'diversity'} & set(self.metrics):
      parts['samples'] = samples
    return parts

  def score(self, parts: dict[str, np.ndarray]) -> dict[str, float]:
    """The metrics of the samples whose `extract` parts are given (of one
    process, or of all of them gathered with `shares.gather`)."""
    results = {}
    if self.extractor is not None:
      features, logits = parts['features'], parts['logits']
      stats, kid_features = self.inception_reference()
      if 'fid' in self.metrics:
        results['fid'] = metrics_lib.fid(metrics_lib.GaussianStats.of(features),
                                         stats)
      if 'is' in self.metrics:
        results['is'], results['is_std'] = metrics_lib.inception_score(logits)
      if 'kid' in self.metrics:
        results.update(metrics_lib.kid(features, kid_features))
      if 'prdc' in self.metrics:
        results.update(prdc_lib.prdc(kid_features[:PRDC_MAX_ROWS],
                                     features[:PRDC_MAX_ROWS],
                                     k=self.config.eval.prdc_k))
    if set(self.metrics) & set(OFFLINE_METRICS):
      images, reference_rows, mvg, real_ssim = self.offline_reference()
      if 'swd' in self.metrics:
        samples = parts['samples']
        n = min(len(samples), len(images))
        results.update(offline.sliced_wasserstein(
            offline.as_unit_range(samples[:n]), images[:n]))
      if {'niqe', 'prdc_niqe'} & set(self.metrics):
        rows = parts['niqe_rows'], parts['niqe_valid']
        if 'niqe' in self.metrics:
          results['niqe_distance'] = offline.mvg_set_distance(
              offline.mvg_of_rows(*rows), mvg)
        if 'prdc_niqe' in self.metrics:
          results.update(self._niqe_prdc(rows, reference_rows, mvg))
      if 'diversity' in self.metrics:
        results['diversity/ssim_pairs'] = offline.pairwise_ssim(
            parts['samples'], self.config.eval.diversity_pairs)
        # named by the real images it is computed on (eval.reference_split)
        split = self.config.eval.reference_split
        results[f'diversity/ssim_pairs_real_{split}'] = real_ssim
    return results

  def __call__(self, samples) -> dict[str, float]:
    """The metrics of `samples` `[N, R, R, 3]`: float in [-1, 1] or uint8
    (as saved), all on this process."""
    return self.score(self.extract(samples))
