"""WGAN-GP, QAGAN-SSIM and QAGAN-NIQE on natural_patches, same seeds and budget, on a CPU.

    python experiments/compare_offline.py [--seeds 0 1] [--iters 480]
        [--num_samples 2048] [--protocols paper gp10] [--root runs/compare]

Each method trains the demo config (configs/demo.py: width 16, batch 16,
2 critic steps, Adam 2e-3 decayed linearly) with only `loss.method`
changed, for every seed, under both protocols: the authors' penalty
weights (lambda_1 = 1, drift 1e-5) and the strong WGAN-GP baseline's
(lambda_1 = 10, no drift; configs/*_gp10.py); then its EMA generator is evaluated on
`num_samples` samples against as many patches of the held-out photographs
with the offline metrics: SWD (x10^3, lower is better), the NIQE-feature
distance (lower is better), precision, recall, density and coverage on
standardised NIQE features (k = 5; higher is better, density ~1 for the
data itself) and the mean SSIM of random sample pairs (diversity; closer
to real patches' own value is better). Real patches of
the training photographs, measured the same way, show the floor a
generator can reach. Runs resume, so the script can be stopped and started
again. Prints a markdown table (mean ± std over seeds, and the training
time) and writes <root>/results.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from qagan_jax import config as config_lib
from qagan_jax import input_pipeline
from qagan_jax import loop
from qagan_jax import modes
from qagan_jax.evaluation import evaluator as evaluator_lib

METHODS = ('wgangp', 'ssim', 'niqe')
# 'paper': the demo's settings (lambda_1 = 1 and drift 1e-5, the authors');
# 'gp10': the same with the strong WGAN-GP baseline's lambda_1 = 10, no drift
PROTOCOLS = ('paper', 'gp10')
LABELS = {'wgangp': 'WGAN-GP', 'ssim': 'QAGAN-SSIM', 'niqe': 'QAGAN-NIQE'}
COLUMNS = (('swd/mean', 'SWD ×10³ ↓'), ('niqe_distance', 'NIQE distance ↓'),
           ('prdc_niqe/precision', 'precision ↑'),
           ('prdc_niqe/recall', 'recall ↑'),
           ('prdc_niqe/density', 'density'),
           ('prdc_niqe/coverage', 'coverage ↑'),
           ('diversity/ssim_pairs', 'pairwise SSIM'))


def run_one(method: str, protocol: str, seed: int, iters: int,
            num_samples: int, root: pathlib.Path) -> dict:
  """Trains and evaluates one run; a finished run's result is read back."""
  config = config_lib.with_protocol(config_lib.demo_config(), protocol)
  config.loss.method = method
  config.seed = seed
  config.train.num_iters = iters
  config.run.progress_bar = False
  config_lib.validate(config)
  suffix = '' if protocol == 'paper' else f'_{protocol}'
  workdir = root / f'{method}{suffix}_seed{seed}'
  done = workdir / f'compare_{iters}_{num_samples}.json'
  if done.is_file():
    return json.loads(done.read_text())
  start = time.perf_counter()
  loop.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  path = modes.evaluate_run(config, workdir, num_samples=num_samples)
  result = json.loads(path.read_text())
  result['train_seconds'] = seconds
  done.write_text(json.dumps(result, indent=1))
  return result


def real_rows(num_samples: int) -> dict:
  """The metrics of real patches, the floor a generator can reach: patches
  of the training photographs, and of the held-out ones (another draw)."""
  config = config_lib.demo_config()
  evaluator = evaluator_lib.Evaluator(config, config.eval.metrics,
                                      num_samples)
  train = input_pipeline.split_images(config.data, 'train', num_samples,
                                      seed=5)
  held_out = input_pipeline.held_out_images(config.data, num_samples, seed=6)
  return {'real training patches': evaluator(train),
          'held-out patches, another draw': evaluator(held_out)}


def table(results: dict, reals: dict) -> str:
  lines = ['| method | ' + ' | '.join(t for _, t in COLUMNS)
           + ' | train time |',
           '|---|' + '---|' * (len(COLUMNS) + 1)]
  for (method, protocol), runs in results.items():
    cells = []
    for key, _ in COLUMNS:
      values = np.array([r['metrics'][key] for r in runs])
      cells.append(f'{values.mean():.3f} ± {values.std():.3f}'
                   if len(values) > 1 else f'{values[0]:.3f}')
    minutes = np.mean([r['train_seconds'] for r in runs]) / 60
    label = LABELS[method] + (', λ₁ = 10' if protocol == 'gp10' else '')
    lines.append(f'| {label} | ' + ' | '.join(cells)
                 + f' | {minutes:.1f} min |')
  for name, values in reals.items():
    lines.append(f'| {name} | ' + ' | '.join(f'{values[k]:.3f}'
                                             for k, _ in COLUMNS) + ' | |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
  parser.add_argument('--iters', type=int, default=480)
  parser.add_argument('--num_samples', type=int, default=2048)
  parser.add_argument('--methods', nargs='+', default=list(METHODS),
                      choices=METHODS)
  parser.add_argument('--protocols', nargs='+', default=list(PROTOCOLS),
                      choices=PROTOCOLS)
  parser.add_argument('--root', type=pathlib.Path,
                      default=pathlib.Path('runs/compare'))
  args = parser.parse_args(argv)
  results = {(m, p): [run_one(m, p, s, args.iters, args.num_samples,
                              args.root) for s in args.seeds]
             for p in args.protocols for m in args.methods}
  reals = real_rows(args.num_samples)
  args.root.mkdir(parents=True, exist_ok=True)
  (args.root / 'results.json').write_text(json.dumps(
      {'runs': {f'{m}_{p}': r for (m, p), r in results.items()},
       'real': reals}, indent=1))
  print(f'{len(args.seeds)} seeds, {args.iters} iterations, '
        f'{args.num_samples} samples against as many held-out patches:\n')
  print(table(results, reals))


if __name__ == '__main__':
  main()
