"""Every speed and memory figure of the project on one machine, in one run: a JSON file and a Markdown table.

    python experiments/accelerator_report.py --out=DIR [--small]
        [--sections configs critic_loop dtype evaluation torch]

Meant for one call on a GPU or TPU (about 8 minutes at full size; see
docs/speed.md for running it on a lent GPU or a Colab TPU); `--small` runs
every section at tiny widths, batches and counts, on a CPU in a minute (the
test suite does, so that it keeps working). Sections:

  configs      the nine paper configs (cifar10, stl10, celeba x wgangp, ssim,
               niqe): the step's compile time, step time and the device
               memory of its program (XLA's analysis), and the training
               loop's end-to-end time with device-resident and with
               host-fed data (experiments/benchmark_e2e.py, on synthetic
               tfds records of the real shapes), with the step/loop ratio.
               Also the QAGAN-SSIM and QAGAN-NIQE overheads: their step
               time over WGAN-GP's, per dataset.
  critic_loop  the QAGAN-NIQE 32x32 step with its critic steps unrolled and
               scanned (train.critic_loop): compile and step time, and which
               one 'auto' takes on this platform.
  dtype        the WGAN-GP 32x32 step in float32 and bfloat16 at two batch
               sizes (64 and 256).
  evaluation   10,000 samples of a 32x32 generator against as many real
               images (natural_patches), Inception with random weights:
               generation, the per-sample features (Inception, NIQE), the
               reference statistics, and each metric's scoring (FID, IS,
               KID, PRDC, SWD, NIQE distance).
  torch        the PyTorch eager reference step (experiments/torch_reference.py)
               beside the JAX WGAN-GP step of the same sizes, when torch is
               importable.

Writes DIR/accelerator_report.json and DIR/accelerator_report.md, section
by section as each finishes (a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import types

import jax

import benchmark_conv     # experiments/ is on sys.path when this runs
import benchmark_e2e
import benchmark_train

from qagan_jax import config as config_lib
from qagan_jax import sampling
from qagan_jax import train
from qagan_jax import train_state
from qagan_jax.evaluation import evaluator as evaluator_lib
from qagan_jax.evaluation import inception

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ('configs', 'critic_loop', 'dtype', 'evaluation', 'torch')
DATASETS = {'cifar10': 'cifar10', 'stl10': 'stl10', 'celeba': 'celeb_a'}
METHODS = ('wgangp', 'ssim', 'niqe')
CONFIGS = tuple(f'{d}_{m}' for d in DATASETS for m in METHODS)
EVAL_METRICS = ('fid', 'is', 'kid', 'prdc', 'swd', 'niqe')

# Full: the paper's sizes. Small: every code path at sizes a CPU runs in
# seconds (width 4, batch 2, one critic step, one batch size for dtypes).
SIZES = {
    'full': dict(width=None, batch=None, n_critic=None, iters=20, warmup=3,
                 window=5, records=4096, step_width=128, batches=(64, 256),
                 eval_samples=10_000, eval_batch=500, step_iters=10),
    'small': dict(width=4, batch=2, n_critic=1, iters=2, warmup=1, window=1,
                  records=16, step_width=4, batches=(2,), eval_samples=24,
                  eval_batch=12, step_iters=2),
}


# --- a step variant -----------------------------------------------------------------


def _step_variant(method, size, *, batch=None, dtype='float32',
                  critic_loop='auto'):
  """benchmark_train's compiled 32x32 step of `method`, and its figures."""
  args = types.SimpleNamespace(width=size['step_width'],
                               batch=batch or size['batches'][0],
                               resolution=32, dtype=dtype)
  variant = benchmark_train.build_variant(method, args, train.make_mesh(),
                                          critic_loop=critic_loop,
                                          n_critic=size['n_critic'])
  seconds = benchmark_conv.median_seconds(
      lambda: benchmark_train.run_jax(variant), size['step_iters'])
  return {'method': method, 'width': args.width, 'batch': args.batch,
          'n_critic': variant['n_critic'],
          'dtype': dtype, 'critic_loop': critic_loop,
          'compile_s': round(variant['compile_s'], 2),
          'sec_per_iter': round(seconds, 5),
          'images_per_sec': round(variant['n_critic'] * args.batch / seconds, 1),
          'program_bytes': variant['program_bytes']}


# --- sections -----------------------------------------------------------------------


def section_configs(size, scratch: pathlib.Path, names=CONFIGS) -> dict:
  rows = []
  data_dir = scratch / 'tfds'
  for dataset, tfds_name in DATASETS.items():
    mine = [name for name in names if name.startswith(dataset + '_')]
    if mine:
      benchmark_e2e.write_synthetic_dataset(tfds_name, data_dir,
                                            size['records'])
    for name in mine:
      config = benchmark_e2e.load_config(str(ROOT / 'configs' / f'{name}.py'))
      config.data.data_dir = str(data_dir)
      if size['width']:
        config.model.width = size['width']
        config.train.batch_size = size['batch'] * jax.device_count()
        config.train.generator_batch_size = config.train.batch_size
        config.train.n_critic = size['n_critic']
      row = {'config': name, 'width': config.model.width,
             'batch_size': config.train.batch_size,
             'n_critic': config.train.n_critic,
             'resolution': config.model.resolution}
      for placement in ('device', 'host'):
        found = benchmark_e2e.measure(config, placement, size['iters'],
                                      size['warmup'], size['window'],
                                      scratch / 'runs' / name / placement)
        row[placement] = {key: found[key] for key in (
            'placement', 'compile_s', 'step_sec_per_iter', 'e2e_sec_per_iter',
            'e2e_over_step', 'step_memory_bytes', 'loop_seconds',
            'worker_count')}
      rows.append(row)
      print(f'# {name}: {json.dumps(row)}', file=sys.stderr, flush=True)
  return {'rows': rows, 'overheads': overheads(rows)}


def overheads(rows) -> dict:
  """{dataset: {'ssim_over_wgangp': r, 'niqe_over_wgangp': r}}: the
  penalties' step time over WGAN-GP's (device placement), for the datasets
  whose WGAN-GP config was measured, and the methods measured beside it."""
  found = {}
  for dataset in DATASETS:
    step = {r['config'].split('_', 1)[1]: r['device']['step_sec_per_iter']
            for r in rows if r['config'].startswith(dataset + '_')}
    if 'wgangp' in step:
      found[dataset] = {f'{m}_over_wgangp': round(step[m] / step['wgangp'], 3)
                        for m in ('ssim', 'niqe') if m in step}
  return found


def section_critic_loop(size, scratch) -> dict:
  del scratch
  rows = [_step_variant('niqe', size, critic_loop=critic_loop)
          for critic_loop in ('unrolled', 'scan')]
  platform = jax.devices()[0].platform
  return {'rows': rows, 'platform': platform,
          'auto': 'unrolled' if train.critic_steps_unrolled(
              'auto', platform) else 'scan',
          'scan_over_unrolled': round(rows[1]['sec_per_iter']
                                      / rows[0]['sec_per_iter'], 3)}


def section_dtype(size, scratch) -> dict:
  del scratch
  rows = [_step_variant('wgangp', size, batch=batch, dtype=dtype)
          for batch in size['batches'] for dtype in ('float32', 'bfloat16')]
  speedup = {str(batch): round(
      next(r['sec_per_iter'] for r in rows
           if r['batch'] == batch and r['dtype'] == 'float32')
      / next(r['sec_per_iter'] for r in rows
             if r['batch'] == batch and r['dtype'] == 'bfloat16'), 3)
             for batch in size['batches']}
  return {'rows': rows, 'bfloat16_speedup_by_batch': speedup}


def section_evaluation(size, scratch: pathlib.Path) -> dict:
  count = size['eval_samples']
  config = config_lib.base_config()        # natural_patches, 32x32
  config.eval.reference_split = 'train'
  config.eval.reference_samples = config.eval.swd_images = count
  config.eval.batch_size = size['eval_batch']
  config.eval.reference_cache = 'none'
  if size['width']:
    config.model.width = size['step_width']
  weights = scratch / 'inception_random.npz'
  inception.save_weights(inception.random_variables(0), weights)
  config.eval.inception_weights = str(weights)
  figures = {'samples': count, 'reference_images': count,
             'resolution': config.model.resolution, 'width': config.model.width}
  began = time.perf_counter()
  evaluator = evaluator_lib.Evaluator(config, EVAL_METRICS, count)
  setup = train_state.build(config)
  state = train_state.replicate(train_state.create_train_state(
      setup, jax.random.PRNGKey(0)), train.make_mesh())
  sampler = sampling.Sampler(setup, 256)

  def timed(name, fn):
    started = time.perf_counter()
    value = fn()
    figures[name] = round(time.perf_counter() - started, 3)
    return value

  timed('generate_s', lambda: sampling.generate(
      sampler, state, count, evaluator_lib.SEED,
      batch=config.eval.batch_size, as_uint8=True))
  samples = timed('generate_compiled_s', lambda: sampling.generate(
      sampler, state, count, evaluator_lib.SEED,
      batch=config.eval.batch_size, as_uint8=True))
  timed('reference_inception_s', evaluator.inception_reference)
  timed('reference_offline_s', evaluator.offline_reference)
  parts = timed('extract_s', lambda: evaluator.extract(samples))
  for metric in EVAL_METRICS:
    evaluator.metrics = (metric,)
    figures[f'values/{metric}'] = timed(
        f'score_{metric}_s', lambda: evaluator.score(parts))
  figures['total_s'] = round(time.perf_counter() - began, 2)
  figures['samples_per_sec'] = round(count / (
      figures['generate_compiled_s'] + figures['extract_s']), 1)
  return figures


def section_torch(size, scratch) -> dict:
  del scratch
  if importlib.util.find_spec('torch') is None:
    return {'skipped': 'torch is not importable'}
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference  # pylint: disable=g-import-not-at-top
  batch, width = size['batches'][0], size['step_width']
  # on the GPU when there is one (the JAX step runs on jax's default device)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  times, _, _ = torch_reference.time_steps(size['step_iters'], width, batch,
                                           n_critic=size['n_critic'] or 5,
                                           device=device)
  if device == 'cuda':
    device = torch.cuda.get_device_name()
  ours = _step_variant('wgangp', size, batch=batch)
  torch_s = statistics.median(times)
  return {'torch': torch.__version__, 'torch_device': device,
          'torch_sec_per_iter': round(torch_s, 5),
          'jax_sec_per_iter': ours['sec_per_iter'], 'batch': batch,
          'width': width, 'jax_over_torch': round(ours['sec_per_iter']
                                                  / torch_s, 3)}


# --- the report ---------------------------------------------------------------------


def environment(small: bool) -> dict:
  device = jax.devices()[0]
  return {'jax': jax.__version__, 'platform': device.platform,
          'device_kind': device.device_kind, 'devices': jax.device_count(),
          'cpus': os.cpu_count(), 'small': small,
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}


def _mb(value) -> str:
  return '–' if value is None else f'{value / 2**20:,.0f}'


def markdown(result: dict) -> str:
  env = result['environment']
  lines = [f"# Accelerator report: {env['devices']} x {env['device_kind']} "
           f"({env['platform']}), jax {env['jax']}"
           + (' (--small: tiny sizes, not figures to quote)'
              if env['small'] else ''), '']
  configs = result.get('configs')
  if configs:
    lines += ['| config | compile s | step s/iter | loop s/iter device | '
              'loop s/iter host | step/loop device | step/loop host | '
              'step program MB |', '|---|---|---|---|---|---|---|---|']
    for row in configs['rows']:
      dev, host = row['device'], row['host']
      lines.append(
          f"| {row['config']} | {dev['compile_s']:.1f} | "
          f"{dev['step_sec_per_iter']:.4f} | {dev['e2e_sec_per_iter']:.4f} | "
          f"{host['e2e_sec_per_iter']:.4f} | {1 / dev['e2e_over_step']:.0%} | "
          f"{1 / host['e2e_over_step']:.0%} | "
          f"{_mb(dev['step_memory_bytes'])} |")
    lines += ['', '| dataset | QAGAN-SSIM / WGAN-GP | QAGAN-NIQE / WGAN-GP |',
              '|---|---|---|']
    for dataset, ratios in configs['overheads'].items():
      lines.append(f'| {dataset} | ' + ' | '.join(
          f"{ratios[key]:.2f}" if key in ratios else '–'
          for key in ('ssim_over_wgangp', 'niqe_over_wgangp')) + ' |')
    lines.append('')
  for name, title in (('critic_loop', 'critic loop (QAGAN-NIQE)'),
                      ('dtype', 'dtype (WGAN-GP)')):
    section = result.get(name)
    if not section:
      continue
    lines += [f'| {title} | batch | compile s | s/iter | images/s | '
              'program MB |', '|---|---|---|---|---|---|']
    for row in section['rows']:
      label = row['critic_loop'] if name == 'critic_loop' else row['dtype']
      lines.append(f"| {label} | {row['batch']} | {row['compile_s']:.1f} | "
                   f"{row['sec_per_iter']:.4f} | {row['images_per_sec']:,.0f} |"
                   f" {_mb(row['program_bytes'])} |")
    if name == 'critic_loop':
      lines.append(f"\n'auto' on {section['platform']}: {section['auto']}; "
                   f"scan / unrolled step time "
                   f"{section['scan_over_unrolled']:.2f}.")
    else:
      lines.append('\nbfloat16 speed-up: ' + ', '.join(
          f'{s:.2f}x at batch {b}'
          for b, s in section['bfloat16_speedup_by_batch'].items()) + '.')
    lines.append('')
  evaluation = result.get('evaluation')
  if evaluation:
    lines += [f"| evaluation, {evaluation['samples']:,} samples | seconds |",
              '|---|---|']
    for key, value in evaluation.items():
      if key.endswith('_s'):
        lines.append(f'| {key[:-2].replace("_", " ")} | {value:.2f} |')
    lines.append('')
  torch = result.get('torch')
  if torch:
    if 'skipped' in torch:
      lines.append(f"PyTorch reference: skipped ({torch['skipped']}).")
    else:
      lines.append(
          f"PyTorch {torch['torch']} eager WGAN-GP step on "
          f"{torch['torch_device']}: {torch['torch_sec_per_iter']:.4f} s/iter; "
          f"JAX {torch['jax_sec_per_iter']:.4f} s/iter "
          f"({torch['jax_over_torch']:.2f}x PyTorch's time), batch "
          f"{torch['batch']}, width {torch['width']}.")
    lines.append('')
  lines.append(f"Device peak memory: {_mb(result.get('device_peak_bytes'))} MB;"
               f" {result.get('seconds', 0):.0f} s in all.")
  return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder of the report')
  parser.add_argument('--small', action='store_true',
                      help='tiny sizes, for a CPU and the test suite')
  parser.add_argument('--sections', nargs='+', default=list(SECTIONS),
                      choices=SECTIONS)
  parser.add_argument('--configs', nargs='+', default=list(CONFIGS),
                      choices=CONFIGS, help='configs of the configs section')
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  size = SIZES['small' if args.small else 'full']
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='qagan-report-'))
  result = {'environment': environment(args.small)}
  began = time.perf_counter()
  functions = {'critic_loop': section_critic_loop,
               'dtype': section_dtype, 'evaluation': section_evaluation,
               'torch': section_torch}
  for name in args.sections:
    started = time.perf_counter()
    if name == 'configs':
      result[name] = section_configs(size, scratch, args.configs)
    else:
      result[name] = functions[name](size, scratch)
    result.setdefault('section_seconds', {})[name] = round(
        time.perf_counter() - started, 1)
    stats = jax.local_devices()[0].memory_stats() or {}
    result['device_peak_bytes'] = stats.get('peak_bytes_in_use')
    result['seconds'] = round(time.perf_counter() - began, 1)
    (out / 'accelerator_report.json').write_text(json.dumps(result, indent=1))
    (out / 'accelerator_report.md').write_text(markdown(result))
    print(f'# {name} done in {result["section_seconds"][name]:.0f} s',
          file=sys.stderr, flush=True)
  print(markdown(result))
  return result


if __name__ == '__main__':
  main()
