"""Times the quality functions against reference implementations, in one run.

    python experiments/benchmark_quality.py [--repeats 20] [--only ssim]

SSIM: jitted `qagan_jax.ssim_distance` (and `ssim`) against jitted
`dm_pix.ssim` on the same inputs, forward and with gradient, and against
scikit-image's per-image loop. Ratios > 1 mean qagan_jax is faster.
NIQE: seconds per 512x384 image for `niqe_score`, and the cost of the
differentiable NIQE features plus MVG distance, with their gradient, on 64
gradient maps of 32x32 and 48x48 (the QAGAN-NIQE penalty's shapes). Timings
are medians of interleaved repeats after compilation; these machines are
noisy, so compare ratios from one run rather than absolute times across runs.
Prints one JSON line per measurement last.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import qagan_jax


def _block(tree):
  return jax.tree_util.tree_map(
      lambda a: a.block_until_ready() if hasattr(a, 'block_until_ready') else a,
      tree)


def time_interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds per call of each function, calls interleaved."""
  for fn in fns.values():
    _block(fn())  # compile / warm up
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      _block(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def bench_ssim(repeats: int) -> list[dict]:
  import dm_pix
  from skimage.metrics import structural_similarity

  rows = []
  for shape in [(256, 32, 32, 3), (16, 256, 256, 3)]:
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, shape)
    y = jnp.clip(x + 0.1 * jax.random.normal(ky, shape), 0, 1)
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)

    ours = jax.jit(functools.partial(qagan_jax.ssim_distance, data_range=1.0))
    ours_ssim = jax.jit(functools.partial(qagan_jax.ssim, data_range=1.0))
    pix = jax.jit(functools.partial(dm_pix.ssim, max_val=1.0))
    ours_grad = jax.jit(jax.grad(lambda a, b: qagan_jax.ssim_distance(
        a, b, data_range=1.0).sum(), argnums=1))
    pix_grad = jax.jit(jax.grad(lambda a, b: dm_pix.ssim(
        a, b, max_val=1.0).sum(), argnums=1))

    def skimage_loop():
      return [structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False,
                                    data_range=1.0, channel_axis=-1)
              for a, b in zip(xn, yn)]

    t = time_interleaved({
        'qagan_jax.ssim_distance': lambda: ours(x, y),
        'qagan_jax.ssim': lambda: ours_ssim(x, y),
        'dm_pix.ssim': lambda: pix(x, y),
        'qagan_jax.ssim_distance grad': lambda: ours_grad(x, y),
        'dm_pix.ssim grad': lambda: pix_grad(x, y),
    }, repeats)
    t['skimage loop'] = time_interleaved({'s': skimage_loop},
                                         max(3, repeats // 5))['s']
    shape_s = 'x'.join(map(str, shape))
    print(f'\nSSIM, batch {shape_s} (median s/call; ratio = other / ours)')
    for name, sec in t.items():
      print(f'  {name:32s} {sec * 1e3:9.2f} ms')
    ratios = {
        'dm_pix / ssim_distance': t['dm_pix.ssim'] / t['qagan_jax.ssim_distance'],
        'dm_pix / ssim': t['dm_pix.ssim'] / t['qagan_jax.ssim'],
        'dm_pix grad / ssim_distance grad':
            t['dm_pix.ssim grad'] / t['qagan_jax.ssim_distance grad'],
        'skimage loop / ssim_distance':
            t['skimage loop'] / t['qagan_jax.ssim_distance'],
    }
    for name, ratio in ratios.items():
      print(f'  {name:32s} {ratio:9.2f}x')
    rows.append({'benchmark': 'ssim', 'shape': shape_s,
                 'seconds': t, 'ratios': ratios})
  return rows


def bench_niqe(repeats: int) -> list[dict]:
  from qagan_jax import quality

  rows = []
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(0, 255, (384, 512, 1)), jnp.float32)
  score = jax.jit(quality.niqe_score)
  t = time_interleaved({'niqe_score 512x384': lambda: score(image)}, repeats)
  print('\nNIQE score, one 512x384 grayscale image (jit, after compile)')
  print(f'  {t["niqe_score 512x384"] * 1e3:9.2f} ms per image')
  rows.append({'benchmark': 'niqe_score', 'shape': '384x512x1',
               'seconds_per_image': t['niqe_score 512x384']})
  # MATLAB's steps in float64 (the default for concrete images)
  host = np.asarray(image)
  start = time.perf_counter()
  quality.niqe_score(host, matlab=True)         # its compilation
  first = time.perf_counter() - start
  t = time_interleaved({'matlab': lambda: quality.niqe_score(
      host, matlab=True)}, repeats)
  print(f'  {t["matlab"] * 1e3:9.2f} ms per image with MATLAB\'s steps '
        f'(float64, matlab=True; the first call {first:.1f} s)')
  rows.append({'benchmark': 'niqe_score_matlab', 'shape': '384x512x1',
               'seconds_per_image': t['matlab'], 'first_call_s': first})

  model = quality.PristineModel.standard()
  mean_p = jnp.asarray(model.mean, jnp.float32)
  cov_p = jnp.asarray(model.cov, jnp.float32)

  def penalty(maps, patch):
    found = quality.niqe_features(maps, patch, constant=0.01)
    mean_t, cov_t = quality.mvg_fit(found.features.reshape(-1, 36),
                                    found.valid.reshape(-1, 36))
    return quality.mvg_distance(mean_p, cov_p, mean_t, cov_t)

  print('\nNIQE features + MVG distance of 64 gradient maps (one patch each)')
  for size in (32, 48):
    maps = jnp.asarray(rng.normal(size=(64, size, size, 1)), jnp.float32)
    forward = jax.jit(functools.partial(penalty, patch=size))
    with_grad = jax.jit(jax.value_and_grad(functools.partial(penalty,
                                                             patch=size)))
    start = time.perf_counter()
    with_grad.lower(maps).compile()
    compile_s = time.perf_counter() - start
    t = time_interleaved({'forward': lambda: forward(maps),
                          'value and grad': lambda: with_grad(maps)}, repeats)
    print(f'  64x{size}x{size}: forward {t["forward"] * 1e3:7.2f} ms, value and '
          f'grad {t["value and grad"] * 1e3:7.2f} ms, compile {compile_s:5.1f} s')
    rows.append({'benchmark': 'niqe_penalty', 'shape': f'64x{size}x{size}x1',
                 'seconds': t, 'compile_s': compile_s})
  return rows


BENCHMARKS = {'ssim': bench_ssim, 'niqe': bench_niqe}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--only', choices=sorted(BENCHMARKS), action='append')
  args = parser.parse_args()
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} '
        f'({len(jax.devices())} device(s))')
  rows = []
  for name in args.only or BENCHMARKS:
    rows += BENCHMARKS[name](args.repeats)
  print()
  for row in rows:
    print(json.dumps(row))


if __name__ == '__main__':
  main()
