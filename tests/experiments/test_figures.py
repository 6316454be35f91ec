"""experiments/figures.py draws every figure from a run's workdir."""

import importlib.util
import pathlib

import pytest

SCRIPT = (pathlib.Path(__file__).resolve().parents[2] / 'experiments'
          / 'figures.py')


@pytest.fixture(scope='module')
def figures():
  spec = importlib.util.spec_from_file_location('figures', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def runs(trained_run, copy_run):
  workdir = copy_run(trained_run)   # the figures go into it
  # the figures that compare runs take the same one twice
  return [workdir, workdir]


@pytest.mark.parametrize('figure', ['curves', 'mscn', 'weights', 'grids'])
def test_every_figure_is_drawn_from_workdirs(figures, runs, figure, capsys):
  dirs = runs[:1] if figure == 'mscn' else runs
  figures.main([figure, *map(str, dirs), '--num', '16'] if figure in (
      'mscn', 'grids') else [figure, *map(str, dirs)])
  out = runs[0] / 'figures' / f'{figure}.png'
  assert out.is_file() and out.stat().st_size > 5000
  assert str(out) in capsys.readouterr().out


def test_a_folder_that_is_not_a_run_is_refused(figures, tmp_path):
  with pytest.raises(SystemExit, match='not a qagan_jax run'):
    figures.main(['curves', str(tmp_path)])
