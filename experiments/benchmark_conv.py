"""Times one convolution, forward and backward, with XLA's defaults and the project's options.

    python experiments/benchmark_conv.py [--shape 64 32 32 128] [--kernel 3] [--out 128]

The convolution of the issue that found XLA:CPU's slow kernel gradients: a
3x3, 128 -> 128, 'SAME' convolution of a 64x32x32x128 NHWC float32 batch
(19.3 GFLOP forward). Each of forward, gradient with respect to the input and
gradient with respect to the kernel is compiled on its own, once with XLA's
default options and once with `qagan_jax.compilation.compiler_options`, and
timed (median of 5 after a warm-up); with torch installed, PyTorch's eager
convolution (channels-last) is timed in the same run. Prints a table, the
ratios, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
from jax import lax

from qagan_jax import compilation


def median_seconds(run, repeats=5):
  """Median seconds of `repeats` calls of `run` after one warm-up call."""
  run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_jax(x, kernel, grad, options):
  conv = lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  programs = {
      'forward': (conv, (x, kernel)),
      'input_grad': (lambda k, g: jax.vjp(lambda x_: conv(x_, k), x)[1](g)[0],
                     (kernel, grad)),
      'kernel_grad': (lambda x_, g: jax.vjp(lambda k: conv(x_, k), kernel)[1](
          g)[0], (x, grad)),
  }
  times = {}
  for name, (fun, args) in programs.items():
    compiled = jax.jit(fun, compiler_options=options or None).lower(
        *args).compile()
    times[name] = median_seconds(
        lambda: jax.block_until_ready(compiled(*args)))
  return times


def time_torch(shape, size, out):
  import torch  # pylint: disable=g-import-not-at-top
  n, h, w, c = shape
  layer = torch.nn.Conv2d(c, out, size, padding=size // 2, bias=False)
  layer = layer.to(memory_format=torch.channels_last)
  x = torch.randn(n, c, h, w).to(memory_format=torch.channels_last)
  x.requires_grad_(True)
  forward = lambda: layer(x)
  y = forward()
  grad = torch.randn_like(y)

  def backward():
    layer.zero_grad(set_to_none=True)
    x.grad = None
    forward().backward(grad)

  with torch.no_grad():
    forward_s = median_seconds(forward)
  return {'forward': forward_s, 'forward_and_backward': median_seconds(
      backward), 'torch': torch.__version__}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', type=int, nargs=4, default=[64, 32, 32, 128],
                      metavar=('N', 'H', 'W', 'C'))
  parser.add_argument('--kernel', type=int, default=3)
  parser.add_argument('--out', type=int, default=128)
  args = parser.parse_args()
  shape, size = tuple(args.shape), args.kernel
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], shape)
  kernel = 0.05 * jax.random.normal(keys[1], (size, size, shape[-1],
                                               args.out))
  grad = jax.random.normal(keys[2], shape[:3] + (args.out,))
  platform = jax.devices()[0].platform
  results = {'xla_defaults': time_jax(x, kernel, grad, {}),
             'project': time_jax(x, kernel, grad,
                                 compilation.compiler_options(platform))}
  try:
    results['torch'] = time_torch(shape, size, args.out)
  except ImportError:
    pass
  gflop = 2 * shape[0] * shape[1] * shape[2] * size * size * shape[3] \
      * args.out / 1e9
  print(f'jax {jax.__version__} on {platform}: {size}x{size} convolution '
        f'{shape[3]} -> {args.out} of {shape} ({gflop:.1f} GFLOP forward)')
  print(f'  {"seconds":14s} {"forward":>9s} {"input grad":>11s} '
        f'{"kernel grad":>12s} {"all three":>10s}')
  for name in ('xla_defaults', 'project'):
    t = results[name]
    t['all'] = t['forward'] + t['input_grad'] + t['kernel_grad']
    print(f'  {name:14s} {t["forward"]:9.3f} {t["input_grad"]:11.3f} '
          f'{t["kernel_grad"]:12.3f} {t["all"]:10.3f}')
  defaults, project = results['xla_defaults'], results['project']
  print(f'  XLA defaults / project options: kernel gradient '
        f'{defaults["kernel_grad"] / project["kernel_grad"]:.2f}x, all three '
        f'{defaults["all"] / project["all"]:.2f}x')
  if 'torch' in results:
    t = results['torch']
    print(f'  torch {t["torch"]} eager: forward {t["forward"]:.3f} s, forward '
          f'+ backward {t["forward_and_backward"]:.3f} s; project / torch '
          f'{project["all"] / t["forward_and_backward"]:.2f}x')
  print(json.dumps({'shape': shape, 'kernel': size, 'out': args.out,
                    'gflop': gflop, 'platform': platform, **results}))


if __name__ == '__main__':
  main()
