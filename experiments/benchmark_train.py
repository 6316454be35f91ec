"""Times one training iteration (n_critic critic steps + 1 generator step) per variant.

    python experiments/benchmark_train.py [--iters 10] [--width 128] [--batch 64]
        [--resolution 32] [--variants wgangp ssim niqe] [--dtype float32]
        [--xla-defaults] [--torch]

WGAN-GP, QAGAN-SSIM and QAGAN-NIQE (pristine model from the critic's
gradient maps, the default) are compiled first, then timed round-robin, one
iteration of each in turn, so that the machine's noise hits all of them
alike. Random real batches; all local devices. Prints a table, the ratios to
WGAN-GP, and last one JSON line per variant with the keys variant,
sec_per_iter (median), sec_per_iter_mean, images_per_sec (critic images
consumed per second), compile_s, params_G, params_D, devices, so that it
can be run side by side with other implementations.

--xla-defaults adds WGAN-GP compiled with XLA's default options (on CPUs,
YNNPACK convolutions: see qagan_jax/compilation.py), as the variant
'wgangp_xla_defaults'. --torch adds the PyTorch eager step of
experiments/torch_reference.py (same architecture, 32x32 only), timed in the
same round-robin, as 'torch_wgangp' (needs torch installed).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import numpy as np

from qagan_jax import compilation
from qagan_jax import models
from qagan_jax import train
from qagan_jax import train_state


def build_variant(method, args, mesh, compiler_options=None,
                  critic_loop='auto', n_critic=None):
  """A compiled step of `method` at `args`' sizes, with its state and
  random real batches (`run_jax` runs it once), the compile time, the
  parameter counts and the device memory of its program."""
  config = train_state.default_config()
  config.train.critic_loop = critic_loop
  config.train.n_critic = n_critic or config.train.n_critic
  config.model.resolution = args.resolution
  config.model.width = args.width
  config.model.dtype = args.dtype
  config.loss.method = method
  config.train.batch_size = args.batch
  config.train.generator_batch_size = 2 * args.batch
  setup = train_state.build(config)
  state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
  state = jax.device_put(state, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  step = train.make_train_step(setup, mesh, batch_size=args.batch,
                               generator_batch_size=2 * args.batch,
                               compiler_options=compiler_options)
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
      'program_bytes': compilation.program_bytes(compiled),
      'params_G': models.count_params(state.gen_params),
      'params_D': models.count_params(state.critic_params),
  }


def run_jax(v):
  v['state'], metrics = v['compiled'](v['state'], v['real'])
  jax.block_until_ready((v['state'], metrics))


def torch_variant(args):
  """The PyTorch eager reference step, in this process, on this machine."""
  import torch  # pylint: disable=g-import-not-at-top
  # experiments/ is on sys.path when this script runs
  import torch_reference  # pylint: disable=g-import-not-at-top
  if args.resolution != 32:
    raise SystemExit('--torch: the PyTorch reference is 32x32 only.')
  torch.manual_seed(0)
  generator, critic = torch_reference.build(args.width)
  step = torch_reference.make_step(generator, critic, batch=args.batch)
  real = torch.rand(5, args.batch, 3, 32, 32) * 2 - 1
  count = lambda m: sum(p.numel() for p in m.parameters())
  return {'run': lambda: step(real), 'compile_s': 0.0, 'n_critic': 5,
          'params_G': count(generator), 'params_D': count(critic)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--dtype', default='float32',
                      choices=sorted(train_state.DTYPES))
  parser.add_argument('--variants', nargs='+', default=['wgangp', 'ssim',
                                                        'niqe'],
                      choices=['wgangp', 'ssim', 'niqe'])
  parser.add_argument('--critic-loop', default='auto',
                      choices=train_state.CRITIC_LOOPS,
                      help='train.critic_loop of the timed steps (auto: '
                      "the platform's default)")
  parser.add_argument('--xla-defaults', action='store_true',
                      help="also time WGAN-GP with XLA's default options")
  parser.add_argument('--torch', action='store_true',
                      help='also time the PyTorch eager reference step')
  args = parser.parse_args()
  mesh = train.make_mesh()
  devices = mesh.devices.size
  platform = jax.devices()[0].platform
  loop = 'unrolled' if train.critic_steps_unrolled(args.critic_loop,
                                                   platform) else 'scan'
  print(f'jax {jax.__version__}, {devices} {platform} '
        f'device(s); batch {args.batch}, {args.resolution}x{args.resolution}, '
        f'width {args.width}, {args.dtype}, critic steps {loop}')
  variants = {}
  for method in args.variants:
    variants[method] = build_variant(method, args, mesh,
                                     critic_loop=args.critic_loop)
    print(f'  compiled {method:7s} in {variants[method]["compile_s"]:.1f} s')
  if args.xla_defaults:
    v = variants['wgangp_xla_defaults'] = build_variant(
        'wgangp', args, mesh, compiler_options={},
        critic_loop=args.critic_loop)
    print(f'  compiled wgangp with XLA defaults in {v["compile_s"]:.1f} s')
  for v in variants.values():
    v['run'] = functools.partial(run_jax, v)
  if args.torch:
    variants['torch_wgangp'] = torch_variant(args)
  times = {method: [] for method in variants}
  for v in variants.values():   # one warm-up iteration each
    v['run']()
  for _ in range(args.iters):
    for method, v in variants.items():
      start = time.perf_counter()
      v['run']()
      times[method].append(time.perf_counter() - start)
  rows = []
  base = statistics.median(times['wgangp']) if 'wgangp' in times else None
  print(f'\n  {"variant":20s} {"s/iter":>8s} {"ratio":>7s} {"img/s":>8s} '
        f'{"compile":>8s}')
  for method, v in variants.items():
    median = statistics.median(times[method])
    images = v['n_critic'] * args.batch / median
    ratio = median / base if base else float('nan')
    print(f'  {method:20s} {median:8.3f} {ratio:7.2f} {images:8.1f} '
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
