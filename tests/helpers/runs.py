"""The tiny training run of the suite, in process and on the command line.

One config for every short run (the demo config with a width-4 network on
batches of 8, `num_iters` = 6): the learning-rate schedule's length is part
of the compiled step, so runs that stop earlier do it with `stop_after`, and
every run, in this process, another test process or a command line, then
compiles the same programs once per session (the persistent compilation
cache of tests/conftest.py serves the rest).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = str(REPO_ROOT / 'configs' / 'demo.py')

NUM_ITERS = 6
TINY = {
    'model.width': 4,
    'train.batch_size': 8,
    'train.generator_batch_size': 8,
    'train.n_critic': 1,
    'train.num_iters': NUM_ITERS,
    'data.patches_per_epoch': 1024,
    'run.log_every': 2,
    'run.checkpoint_every': 2,
    'run.sample_every': 3,
    'run.eval_every': 3,
    'run.eval_samples': 64,
    'run.standing_stats_samples': 32,
    'run.sample_grid': 16,
    'run.progress_bar': False,
}


def _set(config, path, value):
  node = config
  *sections, name = path.split('.')
  for section in sections:
    node = node[section]
  node[name] = value


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """The demo config with TINY, then `overrides` (dotted paths with '.'
  written as '__': `run__sample_grid=0`), validated."""
  from qagan_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.demo_config()
  for path, value in (TINY | {k.replace('__', '.'): v
                              for k, v in overrides.items()}).items():
    _set(config, path, value)
  config_lib.validate(config)
  return config


def tiny_flags(**overrides) -> list[str]:
  """The command-line flags of `tiny_config(**overrides)` on configs/demo.py."""
  settings = TINY | {k.replace('__', '.'): v for k, v in overrides.items()}
  return [f'--config.{path}={value}' for path, value in settings.items()]


def command_lines(cases, tmp_path) -> list:
  """[(exit status, stdout, stderr)] of each case ({'argv', 'cwd', 'env'})
  through the real main, in one process that forks a child per command
  line (tests/helpers/command_lines.py): the imports are paid once."""
  cases_file, results_file = tmp_path / 'cases.json', tmp_path / 'results.json'
  cases_file.write_text(json.dumps(cases))
  subprocess.run([sys.executable, str(REPO_ROOT / 'tests' / 'helpers' /
                                      'command_lines.py'), str(cases_file),
                  str(results_file)], cwd=REPO_ROOT, check=True, timeout=600)
  return json.loads(results_file.read_text())
