"""experiments/colab_tpu.ipynb: valid notebook JSON whose code runs top to bottom on a CPU."""

import json
import logging
import pathlib
import re

from helpers import runs
from qagan_jax import config as config_lib

NOTEBOOK = (pathlib.Path(__file__).resolve().parents[2] / 'experiments'
            / 'colab_tpu.ipynb')


def test_colab_notebook_is_valid_and_runs_on_cpu(tmp_path, monkeypatch,
                                                 trained_run, capsys):
  """Top to bottom with STOP_AFTER (a session-sized piece: the samples and
  curves of the run so far, its evaluation), then the training and
  samples cells again without it: the run continues to its end."""
  del trained_run   # asked for so that its programs are compiled by now
  notebook = json.loads(NOTEBOOK.read_text())
  assert notebook['nbformat'] == 4
  cells = notebook['cells']
  assert all(c['cell_type'] in ('code', 'markdown') and
             isinstance(c['source'], list) for c in cells)
  assert all(c['outputs'] == [] for c in cells if c['cell_type'] == 'code')
  code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
  source = '\n'.join(code)
  # As papermill would: the parameters cell, with the suite's tiny run in
  # place of the demo's network and batches (the demo config itself is
  # checked in tests/test_loop.py).
  workdir = tmp_path / 'run'
  monkeypatch.setattr(config_lib, 'demo_config',
                      runs.tiny_config().copy_and_resolve_references)
  for name, value in (('NUM_ITERS', str(runs.NUM_ITERS)), ('STOP_AFTER', '3'),
                      ('WORKDIR', repr(str(workdir))), ('EVAL_SAMPLES', '64')):
    source, count = re.subn(rf'^{name} = .*$', f'{name} = {value}', source,
                            flags=re.M)
    assert count == 1, name
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  log = logging.getLogger('qagan_jax')
  handlers, propagate = list(log.handlers), log.propagate
  namespace = {'__name__': '__main__'}
  try:
    exec(compile(source, str(NOTEBOOK), 'exec'), namespace)  # pylint: disable=exec-used
    assert int(namespace['state'].step) == 3
    assert namespace['path'].is_file()
    assert namespace['report'].is_file()
    assert (workdir / 'loss_curves.png').is_file()     # the curves so far
    shown = capsys.readouterr()
    assert 'projected run of' in shown.out             # the check cell
    assert 'swd/mean' in json.loads(namespace['report'].read_text())['metrics']
    # the next session: the same cells with the whole run
    namespace['STOP_AFTER'] = 0
    for cell in code:
      if 'loop.train_and_evaluate' in cell or "glob('step_*.png')" in cell:
        exec(compile(cell, str(NOTEBOOK), 'exec'), namespace)  # pylint: disable=exec-used
    assert int(namespace['state'].step) == runs.NUM_ITERS
    assert 'Resuming from the checkpoint of step 3' in capsys.readouterr().err
  finally:
    for handler in log.handlers[len(handlers):]:
      log.removeHandler(handler)
    log.propagate = propagate
