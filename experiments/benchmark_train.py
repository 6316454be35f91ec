"""Times one training iteration (n_critic critic steps + 1 generator step) per variant.

    python experiments/benchmark_train.py [--iters 10] [--width 128] [--batch 64]
        [--resolution 32] [--variants wgangp ssim niqe] [--dtype float32]

WGAN-GP, QAGAN-SSIM and QAGAN-NIQE (pristine model from the critic's
gradient maps, the default) are compiled first, then timed round-robin, one
iteration of each in turn, so that the machine's noise hits all of them
alike. Random real batches; all local devices. Prints a table, the ratios to
WGAN-GP, and last one JSON line per variant with the keys variant,
sec_per_iter (median), sec_per_iter_mean, images_per_sec (critic images
consumed per second), compile_s, params_G, params_D, devices, so that it
can be run side by side with other implementations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from qagan_jax import models
from qagan_jax import train


def build_variant(method, args, mesh):
  config = train.default_config()
  config.model.resolution = args.resolution
  config.model.width = args.width
  config.model.dtype = args.dtype
  config.loss.method = method
  config.train.batch_size = args.batch
  config.train.generator_batch_size = 2 * args.batch
  setup = train.build(config)
  state = train.create_train_state(setup, jax.random.PRNGKey(0))
  state = jax.device_put(state, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  step = train.make_train_step(setup, mesh, batch_size=args.batch,
                               generator_batch_size=2 * args.batch)
  real = np.random.default_rng(0).uniform(
      -1, 1, (config.train.n_critic, args.batch, args.resolution,
              args.resolution, 3)).astype(np.float32)
  real = jax.device_put(real, train.batch_sharding(mesh))
  start = time.perf_counter()
  compiled = step.lower(state, real).compile()
  compile_s = time.perf_counter() - start
  return {
      'compiled': compiled, 'state': state, 'real': real,
      'compile_s': compile_s, 'n_critic': config.train.n_critic,
      'params_G': models.count_params(state.gen_params),
      'params_D': models.count_params(state.critic_params),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--dtype', default='float32',
                      choices=sorted(train.DTYPES))
  parser.add_argument('--variants', nargs='+', default=['wgangp', 'ssim',
                                                        'niqe'],
                      choices=['wgangp', 'ssim', 'niqe'])
  args = parser.parse_args()
  mesh = train.make_mesh()
  devices = mesh.devices.size
  print(f'jax {jax.__version__}, {devices} {jax.devices()[0].platform} '
        f'device(s); batch {args.batch}, {args.resolution}x{args.resolution}, '
        f'width {args.width}, {args.dtype}')
  variants = {}
  for method in args.variants:
    variants[method] = build_variant(method, args, mesh)
    print(f'  compiled {method:7s} in {variants[method]["compile_s"]:.1f} s')
  times = {method: [] for method in variants}
  for method, v in variants.items():   # one warm-up iteration each
    v['state'], _ = v['compiled'](v['state'], v['real'])
    jax.block_until_ready(v['state'])
  for _ in range(args.iters):
    for method, v in variants.items():
      start = time.perf_counter()
      v['state'], metrics = v['compiled'](v['state'], v['real'])
      jax.block_until_ready((v['state'], metrics))
      times[method].append(time.perf_counter() - start)
  rows = []
  base = statistics.median(times['wgangp']) if 'wgangp' in times else None
  print(f'\n  {"variant":8s} {"s/iter":>8s} {"ratio":>7s} {"img/s":>8s} '
        f'{"compile":>8s}')
  for method, v in variants.items():
    median = statistics.median(times[method])
    images = v['n_critic'] * args.batch / median
    ratio = median / base if base else float('nan')
    print(f'  {method:8s} {median:8.3f} {ratio:7.2f} {images:8.1f} '
          f'{v["compile_s"]:7.1f}s')
    rows.append({
        'variant': method, 'sec_per_iter': median,
        'sec_per_iter_mean': statistics.mean(times[method]),
        'ratio_to_wgangp': ratio, 'images_per_sec': images,
        'compile_s': v['compile_s'], 'params_G': v['params_G'],
        'params_D': v['params_D'], 'devices': devices,
        'batch': args.batch, 'width': args.width,
        'resolution': args.resolution, 'dtype': args.dtype,
        'platform': jax.devices()[0].platform,
    })
  print()
  for row in rows:
    print(json.dumps(row))


if __name__ == '__main__':
  main()
