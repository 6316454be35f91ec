"""The accelerator report at tiny sizes: every section writes every key, in JSON and Markdown."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip('importlib_resources')   # tfds needs it to prepare

SCRIPT = (pathlib.Path(__file__).resolve().parents[2] / 'experiments' /
          'accelerator_report.py')
PLACEMENT_KEYS = {'placement', 'compile_s', 'step_sec_per_iter',
                  'e2e_sec_per_iter', 'e2e_over_step', 'step_memory_bytes',
                  'loop_seconds', 'worker_count'}
STEP_KEYS = {'method', 'width', 'batch', 'n_critic', 'dtype', 'critic_loop',
             'compile_s', 'sec_per_iter', 'images_per_sec', 'program_bytes'}


def assert_ratio(ratio, numerator, denominator):
  """`ratio` is numerator / denominator, as the report rounds them: times to
  5 decimals (each off by up to 5e-6 s), the ratio to 3 (5e-4)."""
  exact = numerator / denominator
  slack = 5e-4 + exact * (5e-6 / numerator + 5e-6 / denominator)
  assert abs(ratio - exact) <= slack * (1 + 1e-9), (ratio, exact)


def positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_small_report_writes_every_section_and_key(tmp_path):
  # One of the nine configs (a full --small run compiles 18 steps, minutes
  # on a CPU; each goes through the same code): QAGAN-SSIM, whose overhead
  # over WGAN-GP is then not measured (the ratios are computed as
  # `test_overheads_are_each_methods_step_over_wgangps` checks); the NIQE
  # step is compiled by the critic-loop section.
  subprocess.run([sys.executable, str(SCRIPT), '--small', '--out',
                  str(tmp_path), '--configs', 'cifar10_ssim'], check=True,
                 timeout=600, cwd=SCRIPT.parents[1])
  result = json.loads((tmp_path / 'accelerator_report.json').read_text())
  assert set(result) == {'environment', 'configs', 'critic_loop', 'dtype',
                         'evaluation', 'torch', 'device_peak_bytes',
                         'seconds', 'section_seconds'}
  assert result['environment']['small'] is True
  assert set(result['section_seconds']) == {'configs', 'critic_loop', 'dtype',
                                            'evaluation', 'torch'}

  rows = result['configs']['rows']
  assert [row['config'] for row in rows] == ['cifar10_ssim']
  for row in rows:
    assert row['width'] == 4 and row['n_critic'] == 1
    for placement in ('device', 'host'):
      figures = row[placement]
      assert set(figures) == PLACEMENT_KEYS
      assert figures['placement'] == placement
      for key in ('compile_s', 'step_sec_per_iter', 'e2e_sec_per_iter',
                  'step_memory_bytes'):
        assert positive(figures[key]), (row['config'], placement, key)
      # the ratio is of the two times it sits beside
      assert_ratio(figures['e2e_over_step'], figures['e2e_sec_per_iter'],
                   figures['step_sec_per_iter'])
  assert result['configs']['overheads'] == {}    # no WGAN-GP measured

  loops = result['critic_loop']
  assert [r['critic_loop'] for r in loops['rows']] == ['unrolled', 'scan']
  assert loops['auto'] == 'unrolled' and loops['platform'] == 'cpu'
  dtypes = result['dtype']
  assert [(r['batch'], r['dtype']) for r in dtypes['rows']] == [
      (2, 'float32'), (2, 'bfloat16')]
  assert set(dtypes['bfloat16_speedup_by_batch']) == {'2'}
  assert_ratio(dtypes['bfloat16_speedup_by_batch']['2'],
               dtypes['rows'][0]['sec_per_iter'],
               dtypes['rows'][1]['sec_per_iter'])
  for row in loops['rows'] + dtypes['rows']:
    assert set(row) == STEP_KEYS
    assert positive(row['compile_s']) and positive(row['sec_per_iter'])

  evaluation = result['evaluation']
  assert evaluation['samples'] == evaluation['reference_images'] == 24
  for name in ('generate', 'generate_compiled', 'reference_inception',
               'reference_offline', 'extract', 'total'):
    assert positive(evaluation[f'{name}_s']), name
  expected = {'fid': {'fid'}, 'is': {'is', 'is_std'},
              'kid': {'kid', 'kid_std', 'kid_stderr'}, 'swd': None, 'prdc': None,
              'niqe': {'niqe_distance'}}
  for metric, keys in expected.items():
    assert f'score_{metric}_s' in evaluation
    values = evaluation[f'values/{metric}']
    assert values and all(math.isfinite(v) for v in values.values()), metric
    if keys:
      assert set(values) == keys, metric
  torch = result['torch']
  assert set(torch) == {'skipped'} or positive(torch['torch_sec_per_iter'])

  markdown = (tmp_path / 'accelerator_report.md').read_text()
  for text in ('cifar10_ssim', 'QAGAN-NIQE / WGAN-GP',
               'bfloat16 speed-up', 'score fid', "'auto' on cpu: unrolled"):
    assert text in markdown, text


def load_report():
  sys.path.insert(0, str(SCRIPT.parent))     # as the script runs
  try:
    spec = importlib.util.spec_from_file_location('accelerator_report', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(SCRIPT.parent))
  return module


def test_overheads_are_each_methods_step_over_wgangps():
  report = load_report()
  rows = [{'config': name, 'device': {'step_sec_per_iter': seconds}}
          for name, seconds in (('cifar10_wgangp', 0.2), ('cifar10_ssim', 0.25),
                                ('cifar10_niqe', 0.5), ('stl10_ssim', 0.3),
                                ('celeba_wgangp', 0.4), ('celeba_niqe', 0.6))]
  assert report.overheads(rows) == {
      'cifar10': {'ssim_over_wgangp': 1.25, 'niqe_over_wgangp': 2.5},
      'celeba': {'niqe_over_wgangp': 1.5}}    # stl10: no WGAN-GP to divide by
