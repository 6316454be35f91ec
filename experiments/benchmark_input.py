"""Images per second of each input pipeline on this machine.

    python experiments/benchmark_input.py [--batch 64] [--batches 50] [--workers 0 2]

natural_patches reads the real photographs. cifar10, stl10 and celeb_a read
in-memory records of the real shapes through tfds's data_source code path
(`tfds.testing.mock_data`), so their figures cover sampling, preprocessing
(crops, bicubic resizes, flips) and batching, but not reading and decoding
the stored array_record files. Compare them with the
train step's consumption rate (experiments/benchmark_train.py prints
images_per_sec). Prints one JSON line per pipeline last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np
import tensorflow_datasets as tfds

from qagan_jax import input_pipeline

SHAPES = {'cifar10': (32, 32, 3), 'stl10': (96, 96, 3),
          'celeb_a': input_pipeline.CELEBA_SIZE + (3,)}


def measure(dataset: str, batch: int, batches: int, workers: int,
            threads: int) -> float:
  config = input_pipeline.default_config()
  config.dataset = dataset
  config.worker_count = workers
  config.read_threads = threads
  if dataset == 'natural_patches':
    mock = contextlib.nullcontext()
  else:
    rng = np.random.default_rng(0)
    records = [{'image': rng.integers(0, 256, SHAPES[dataset], np.uint8)}
               for _ in range(2 * batch * (batches + 1))]
    mock = tfds.testing.mock_data(num_examples=len(records),
                                  as_data_source_fn=lambda *a, **k: records)
  with mock:
    iterator = iter(input_pipeline.create_loader(config, batch, seed=0,
                                                 device_count=1))
    next(iterator)   # start-up (and worker processes)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    return batch * batches / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--batches', type=int, default=50)
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  parser.add_argument('--threads', type=int, nargs='+', default=[0],
                      help='reader threads per process')
  args = parser.parse_args()
  rows = []
  for dataset in input_pipeline.DATASETS:
    for workers in args.workers:
      for threads in args.threads:
        rate = measure(dataset, args.batch, args.batches, workers, threads)
        source = 'real' if dataset == 'natural_patches' else 'in-memory'
        print(f'  {dataset:16s} workers {workers} threads {threads:2d}: '
              f'{rate:9.0f} images/s ({source} records)')
        rows.append({'pipeline': dataset, 'workers': workers,
                     'read_threads': threads, 'images_per_sec': rate,
                     'records': source, 'batch': args.batch})
  print()
  for row in rows:
    print(json.dumps(row))


if __name__ == '__main__':
  main()
