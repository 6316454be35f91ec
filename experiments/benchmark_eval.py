"""Times the evaluation metrics: Inception throughput, FID statistics, SWD, NIQE distance, diversity.

    python experiments/benchmark_eval.py [--num 2048] [--side 32] [--inception_images 200]

The Inception network runs with random weights of the right shapes (the cost
does not depend on the values, and the real weights cannot be downloaded
here). Prints seconds per metric for `num` samples of side `side` against as
many reference images, and the Inception images/s on the local devices.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from qagan_jax import input_pipeline
from qagan_jax.evaluation import inception
from qagan_jax.evaluation import metrics
from qagan_jax.evaluation import offline


def timed(name, fn, results):
  start = time.perf_counter()
  value = fn()
  results[name] = time.perf_counter() - start
  return value


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num', type=int, default=2048)
  parser.add_argument('--side', type=int, default=32)
  parser.add_argument('--inception_images', type=int, default=200)
  parser.add_argument('--batch', type=int, default=100)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  shape = (args.num, args.side, args.side, 3)
  samples = rng.uniform(-1, 1, shape).astype(np.float32)
  reference = rng.uniform(-1, 1, shape).astype(np.float32)
  results = {}
  extractor = metrics.InceptionExtractor(inception.random_variables(),
                                         args.batch)
  images = input_pipeline.to_uint8(samples[:args.inception_images])
  timed('inception compile + first batch',
        lambda: extractor(images[:extractor.batch_size]), results)
  timed('inception', lambda: extractor(images), results)
  features = rng.standard_normal((args.num, 2048)).astype(np.float32)
  stats = timed('fid statistics (2048-d)',
                lambda: metrics.GaussianStats.of(features), results)
  timed('fid from statistics', lambda: metrics.fid(stats, stats), results)
  timed('kid (100 subsets)', lambda: metrics.kid(features, features), results)
  timed('swd', lambda: offline.sliced_wasserstein(samples, reference), results)
  mvg = timed('niqe reference', lambda: offline.niqe_mvg(reference), results)
  timed('niqe distance', lambda: offline.niqe_set_distance(samples, mvg),
        results)
  timed('diversity (1000 pairs)', lambda: offline.pairwise_ssim(samples),
        results)
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s); '
        f'{args.num} samples of {args.side}x{args.side}')
  for name, seconds in results.items():
    print(f'{name:34s} {seconds:8.2f} s')
  print(f'Inception: {args.inception_images / results["inception"]:.1f} '
        'images/s')


if __name__ == '__main__':
  main()
