"""experiments/colab_tpu.ipynb: valid notebook JSON whose code runs top to bottom on a CPU."""

import json
import pathlib
import re

from helpers import runs
from qagan_jax import config as config_lib

NOTEBOOK = (pathlib.Path(__file__).resolve().parents[2] / 'experiments'
            / 'colab_tpu.ipynb')


def test_colab_notebook_is_valid_and_runs_on_cpu(tmp_path, monkeypatch,
                                                 trained_run):
  del trained_run   # asked for so that its programs are compiled by now
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook['nbformat'] == 4
  cells = notebook['cells']
  assert all(c['cell_type'] in ('code', 'markdown') and
             isinstance(c['source'], list) for c in cells)
  assert all(c['outputs'] == [] for c in cells if c['cell_type'] == 'code')
  source = '\n'.join(''.join(c['source']) for c in cells
                     if c['cell_type'] == 'code')
  # As papermill would: the parameters cell, with the suite's tiny run in
  # place of the demo's network and batches (the demo config itself is
  # checked in tests/test_loop.py).
  workdir = tmp_path / 'run'
  monkeypatch.setattr(config_lib, 'demo_config',
                      runs.tiny_config().copy_and_resolve_references)
  for name, value in (('NUM_ITERS', str(runs.NUM_ITERS)),
                      ('WORKDIR', repr(str(workdir)))):
    source, count = re.subn(rf'^{name} = .*$', f'{name} = {value}', source,
                            flags=re.M)
    assert count == 1, name
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  namespace = {'__name__': '__main__'}
  exec(compile(source, str(NOTEBOOK), 'exec'), namespace)  # pylint: disable=exec-used
  assert int(namespace['state'].step) == runs.NUM_ITERS
  assert namespace['path'].is_file()
  assert (workdir / 'loss_curves.png').is_file()
