"""End-to-end speed of the training loop against its compiled step alone.

    python experiments/benchmark_e2e.py --config=configs/demo.py \
        --placement device host --iters 30
    python experiments/benchmark_e2e.py --config=configs/cifar10_ssim.py \
        --synthetic --iters 20 [--set model.width=32 ...]

Runs the real loop (`loop.train_and_evaluate`: input, step, logging and
checkpoints as configured; no evaluation, no sample grids) for `--iters`
iterations after `--warmup`, then times the compiled step alone in the same
process on data already on the devices. Both are medians over windows of
`--window` iterations, each ended by waiting for the devices. Prints one
JSON line per placement: dataset, placement, e2e_sec_per_iter,
step_sec_per_iter, their ratio (1.0: the input costs nothing), the step's
compile time and the device memory of its program (XLA's analysis).

`--synthetic` writes a dataset of random smooth images in tfds's on-disk
format (array_record, PNG-encoded, the real dataset's features and shapes:
cifar10 32x32, stl10 96x96 'unlabelled', celeb_a 218x178) to a temporary
data_dir and trains on it, so the host path reads, decodes and resizes
real files; the real datasets cannot be downloaded here. Needs
importlib_resources (the test extra has it) to prepare it.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import pathlib
import statistics
import sys
import tempfile
import time
import zlib

import jax
import numpy as np

from qagan_jax import compilation
from qagan_jax import config as config_lib
from qagan_jax import input_pipeline
from qagan_jax import loop
from qagan_jax import run as run_lib

SHAPES = {'cifar10': (32, 32), 'stl10': (96, 96), 'celeb_a': (218, 178)}


def _smooth_images(count: int, shape, seed: int):
  """uint8 images of random colour blobs: photo-like PNG sizes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for _ in range(count):
    small = rng.integers(0, 256, (max(shape[0] // 8, 2),
                                  max(shape[1] // 8, 2), 3), np.uint8)
    yield np.asarray(Image.fromarray(small).resize(shape[::-1],
                                                   Image.Resampling.BICUBIC))


def _png(image) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = io.BytesIO()
  Image.fromarray(image).save(out, format='PNG')
  return out.getvalue()


def write_synthetic_dataset(name: str, data_dir, count: int) -> None:
  """`count` random images as tfds dataset `name` in `data_dir`, on disk.

  The real builder's features and file format, with its download replaced
  by generated examples; needs no TensorFlow (images go in PNG-encoded).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=str(data_dir),
                         file_format='array_record')
  shape = SHAPES[name]
  features = builder.info.features

  def examples(split, n):
    for i, image in enumerate(_smooth_images(n, shape, zlib.crc32(
        split.encode()))):
      example = {'image': _png(image)}
      for key, feature in features.items():
        if key == 'image':
          continue
        if isinstance(feature, tfds.features.ClassLabel):
          example[key] = 0
        elif isinstance(feature, tfds.features.Text) or key == 'id':
          example[key] = f'{split}_{i}'
        elif isinstance(feature, tfds.features.FeaturesDict):
          example[key] = {k: np.zeros(f.shape, f.np_dtype) if hasattr(
              f, 'shape') else 0 for k, f in feature.items()}
        else:
          example[key] = np.zeros(feature.shape, feature.np_dtype)
      yield f'{split}_{i}', example

  splits = {'cifar10': {'train': count, 'test': 16},
            'stl10': {'unlabelled': count, 'train': 16, 'test': 16},
            'celeb_a': {'train': count, 'validation': 16, 'test': 16}}[name]
  cls = type(builder)
  original = cls._split_generators  # pylint: disable=protected-access
  cls._split_generators = lambda self, dl: {  # pylint: disable=protected-access
      split: examples(split, n) for split, n in splits.items()}
  try:
    builder.download_and_prepare()
  finally:
    cls._split_generators = original  # pylint: disable=protected-access


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _set(config, assignment: str):
  path, value = assignment.split('=', 1)
  *parents, name = path.split('.')
  node = config
  for part in parents:
    node = node[part]
  node[name] = type(node[name])(json.loads(value)) if not isinstance(
      node[name], str) else value


def _per_iteration(times, window):
  """Median seconds per iteration of windows ended at `times`."""
  return statistics.median(np.diff(times)) / window


def measure(config, placement: str, iters: int, warmup: int, window: int,
            workdir) -> dict:
  config = config.copy_and_resolve_references()
  config.data.placement = placement
  config.train.num_iters = warmup + iters + 1   # +1: the final checkpoint
  config.run.sample_grid = 0
  config.eval.train_metrics = ()
  config.run.eval_every = config.run.sample_every = 10**9
  config.run.progress_bar = False
  config_lib.validate(config)

  # the step alone: the loop's program, inputs already on the devices; it
  # is compiled here (timed), and the loop below loads it from the
  # persistent compilation cache (main() sets one)
  run = run_lib.build_run(config, pathlib.Path(workdir) / 'step-only')
  state, data = run.state, run.step_input()
  run.close()
  began = time.perf_counter()
  compiled = run.step_fn.lower(state, data).compile()
  compile_s = time.perf_counter() - began
  memory = compilation.program_bytes(compiled)

  times = []

  def on_step(step, state):
    if warmup <= step <= warmup + iters and (step - warmup) % window == 0:
      jax.block_until_ready(state)
      times.append(time.perf_counter())

  began = time.perf_counter()
  loop.train_and_evaluate(config, workdir, on_step=on_step)
  total = time.perf_counter() - began
  e2e = _per_iteration(times, window)

  state, _ = compiled(state, data)
  step_times = [time.perf_counter()]
  for i in range(iters):
    state, _ = compiled(state, data)
    if (i + 1) % window == 0:
      jax.block_until_ready(state)
      step_times.append(time.perf_counter())
  step = _per_iteration(step_times, window)
  return {'dataset': config.data.dataset, 'placement': run.placement,
          'e2e_sec_per_iter': round(e2e, 5), 'step_sec_per_iter': round(step, 5),
          'e2e_over_step': round(e2e / step, 3), 'iters': iters,
          'compile_s': round(compile_s, 2), 'step_memory_bytes': memory,
          'batch_size': config.train.batch_size,
          'n_critic': config.train.n_critic, 'width': config.model.width,
          'loop_seconds': round(total, 1),
          'device': jax.devices()[0].device_kind,
          'worker_count': (config.data.worker_count
                           if config.data.worker_count >= 0 else
                           input_pipeline.default_worker_count(
                               jax.devices()[0].platform))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--iters', type=int, default=30)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--window', type=int, default=5)
  parser.add_argument('--placement', nargs='+', default=['device', 'host'],
                      choices=['auto', 'device', 'host'])
  parser.add_argument('--synthetic', action='store_true',
                      help='train on a synthetic tfds dataset on disk')
  parser.add_argument('--records', type=int, default=4096,
                      help='--synthetic: training records')
  parser.add_argument('--set', nargs='*', default=[],
                      help='config overrides, e.g. model.width=32')
  args = parser.parse_args()
  config = load_config(args.config)
  for assignment in args.set:
    _set(config, assignment)
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='qagan-e2e-'))
  # the step-only measurement compiles the loop's step again: from here
  jax.config.update('jax_compilation_cache_dir', str(scratch / 'cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  if args.synthetic:
    if config.data.dataset not in SHAPES:
      sys.exit(f'--synthetic needs a tfds dataset config, not '
               f'{config.data.dataset}')
    config.data.data_dir = str(scratch / 'tfds')
    began = time.perf_counter()
    write_synthetic_dataset(config.data.dataset, config.data.data_dir,
                            args.records)
    print(f'# wrote {args.records} synthetic {config.data.dataset} records '
          f'in {time.perf_counter() - began:.1f} s', file=sys.stderr)
  for placement in args.placement:
    print(json.dumps(measure(config, placement, args.iters, args.warmup,
                             args.window, scratch / placement)), flush=True)


if __name__ == '__main__':
  main()
