"""The command line end to end: train, stop, resume, sample, evaluate; one clear message per bad one."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from helpers import runs

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = str(REPO_ROOT / 'configs' / 'demo.py')


def training_steps(workdir):
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines if 'critic_loss' in line]


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


run_command_lines = runs.command_lines


@pytest.mark.slow
def test_train_then_sample_and_evaluate_on_the_command_line(tmp_path,
                                                            trained_run):
  """Train, resume, sample, evaluate and check, each a command line of its
  own. The suite's tiny run, trained in a test process before
  (`trained_run`), left its programs in the session's persistent
  compilation cache: none of these commands compiles anything."""
  del trained_run   # asked for so that its programs are compiled by now
  workdir = tmp_path / 'run'
  # the suite's tiny run; its evaluations during training are tested in
  # process (tests/test_loop.py), the evaluate mode here; stopping and
  # resuming with several processes in tests/test_distributed.py
  tiny = [f'--config={DEMO}', f'--workdir={workdir}',
          *runs.tiny_flags(eval__train_metrics=())]
  checkdir = tmp_path / 'check'
  names = ('stopped', 'resumed', 'finished', 'sampled', 'evaluated', 'checked',
           'sampled_bare')
  # off a terminal (here a file), a progress line a step
  commands = [tiny + ['--stop_after=3'],
              tiny + ['--config.run.progress_every=0.000001'], tiny,
              # the workdir's own config: the training overrides need not
              # be repeated, and without --config, --workdir is enough
              [f'--config={DEMO}', f'--workdir={workdir}', '--mode=sample',
               '--num_samples=16'],
              tiny + ['--mode=evaluate', '--num_samples=64'],
              # the preflight check, with the evaluations during training
              # and the evaluate mode's (on a count whose programs are
              # compiled: its projection from two probe counts is
              # tests/test_preflight.py's)
              [f'--config={DEMO}', f'--workdir={checkdir}',
               *runs.tiny_flags(), '--config.eval.num_samples=64',
               '--mode=check'],
              [f'--workdir={workdir}', '--mode=sample', '--num_samples=16']]
  results = run_command_lines(
      [{'argv': argv, 'compilations': str(tmp_path / f'{name}.json')}
       for name, argv in zip(names, commands)], tmp_path)
  stopped, resumed, finished, sampled, evaluated, checked, bare = results
  for name, (status, _, stderr) in zip(names, results):
    assert status == 0, (name, stderr[-3000:])
    counts = json.loads((tmp_path / f'{name}.json').read_text())
    assert counts['requests'] == counts['hits'], (name, counts)
  assert re.search(r'^\d\d:\d\d:\d\d stop_after: stopped at step 3',
                   stopped[2], re.M), stopped[2]
  lines = re.findall(r'^\d\d:\d\d:\d\d step ([456])/6 \(\d+\.\d%\): '
                     r'[\d.e+]+ it/s, \d+ images/s(, ETA \d+ s)?',
                     resumed[2], re.M)
  assert [step for step, _ in lines] == ['4', '5', '6'], resumed[2]
  assert lines[0][1] and not lines[-1][1]    # an ETA until the last step
  assert 'Resuming from the checkpoint of step 3' in resumed[2]
  for stderr in (resumed[2], finished[2]):
    assert 'Done: 6 iterations' in stderr
  # a finished run says so without compiling its step (a few small
  # programs read its checkpoint)
  requests = {name: json.loads((tmp_path / f'{name}.json').read_text())[
      'requests'] for name in names}
  assert requests['finished'] < requests['resumed'] / 2, requests
  assert requests['stopped'] > 10        # every program goes through it
  for name in ('config.json', 'metrics.jsonl', 'loss_curves.png'):
    assert (workdir / name).is_file(), name
  assert checkpoint_steps(workdir) == [3, 4, 6]   # the newest 3 kept
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert sorted(p.name for p in (workdir / 'samples').iterdir()
                if p.name.startswith('step_')) == [
                    'step_0000000.png', 'step_0000003.png', 'step_0000006.png']
  assert training_steps(workdir) == [2, 4, 6]
  found = json.loads(checked[1].strip().splitlines()[-1])   # one JSON line
  assert 'projected run of 6 iterations' in checked[1]
  for key in ('compile_seconds', 'seconds_per_iteration', 'images_per_second',
              'sample_grid_seconds', 'startup_seconds'):
    assert found[key] > 0, key
  # training's evaluations at their count; the evaluate mode's after it,
  # projected to eval.num_samples from two probe counts
  assert found['evaluation']['probe_samples'] == 64
  assert 0 < found['evaluation']['seconds'] <= found['evaluation'][
      'first_seconds']
  final = found['final_evaluation']
  assert final['samples'] == 64 and final['seconds'] > 0
  [reference] = final['references']
  assert (reference['kind'], reference['images'], reference['cached']) == (
      'niqe', 64, True)
  assert 'then --mode=evaluate (swd, niqe' in checked[1]
  assert found['placement'] == 'device' and found['devices']['count'] == 1
  assert found['critic_loop'] == 'unrolled'     # 'auto' on a CPU
  assert found['memory']['host_peak_rss_bytes'] > 2**20
  # XLA:CPU plans its programs' memory too: the figure an out-of-memory
  # error in training is told with
  assert found['memory']['step_planned_bytes'] > 2**10
  assert re.search(r'memory: the step needs \d+ MB \(as XLA planned it\)',
                   checked[1]), checked[1]
  assert found['checkpoint']['bytes'] > 10_000
  assert found['checkpoint']['restore_seconds'] > 0
  projection = found['projection']
  assert projection['counts'] == {'iterations': 6, 'evaluations': 3,
                                  'sample_grids': 3, 'checkpoints': 3,
                                  'final_evaluation_samples': 64}
  seconds = projection['seconds']
  assert seconds['training'] == pytest.approx(
      6 * found['seconds_per_iteration'], rel=0.01, abs=0.1)
  # every part and the total are rounded to 0.1 s, each by up to 0.05 s
  summed = [v for k, v in seconds.items() if k != 'final_evaluation']
  assert projection['total_seconds'] == pytest.approx(
      sum(summed), abs=0.05 * (len(summed) + 1) + 1e-9)
  assert sorted(p.name for p in checkdir.iterdir()) == []   # scratch removed
  assert 'sample_step0000006_seed0_n16.png' in sampled[1]
  assert ('with the configuration it was trained with (its config.json), '
          'which differs from the config file in') in sampled[2]
  assert 'train.num_iters' in sampled[2]
  assert 'sample_step0000006_seed0_n16.png' in bare[1]
  assert (workdir / 'samples' / 'sample_step0000006_seed0_n16.npz').is_file()
  report = json.loads((workdir / 'eval' / 'step_0000006.json').read_text())
  assert report['num_samples'] == 64 and 'swd/mean' in report['metrics']
  assert 'niqe_distance' in evaluated[1]


def test_every_bad_command_line_gets_one_clear_message(tmp_path, trained_run):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory')
  read_only = pathlib.Path('/proc/qagan_jax_run')   # not writable, even as root
  broken = tmp_path / 'broken_config.py'
  broken.write_text('def get_config(:\n')
  demo = f'--config={DEMO}'
  workdir = f'--workdir={tmp_path / "run"}'
  # no --workdir: runs/<config file name> in the current directory
  empty, holding_a_run = tmp_path / 'empty', tmp_path / 'holding'
  empty.mkdir()
  shutil.copytree(trained_run, holding_a_run / 'runs' / 'demo')
  cases = [   # (arguments, what the message must name, extra settings)
      (['--config=configs/does_not_exist.py'], 'no such file'),
      (['--config=configs/dmeo.py'], "did you mean 'configs/demo.py'?"),
      ([f'--config={broken}'], 'broken_config.py'),
      ([], '--config is required'),
      ([demo, workdir, 'extra'], 'unexpected arguments: extra'),
      ([demo, workdir, '--mode=trian'],
       'value should be one of <train|sample|evaluate|check>'),
      ([demo, workdir, '--num_samples=many'], '--num_samples'),
      ([demo, workdir, '--config.trian.batch_size=3'],
       "no field 'trian'; did you mean 'train'?"),
      ([demo, workdir, '--config.train.batch_sizee=3'],
       "did you mean 'train.batch_size'?"),
      ([demo, workdir, '--config.loss.niqe.patchsize=3'],
       "did you mean 'loss.niqe.patch_size'?"),
      ([demo, workdir, '--config.train.batch_size=abc'],
       'invalid literal for int()'),
      ([demo, workdir, '--config.loss.method=nique'], "did you mean 'niqe'?"),
      ([demo, workdir, '--config.data.dataset=cifar'],
       "data.dataset = 'cifar' is not one of"),
      ([demo, workdir, '--config.model.resolution=40'],
       'model.resolution = 40 is not one of'),
      ([demo, workdir, '--config.model.resolution=48'],
       'does not match the 32x32 images'),
      ([demo, workdir, '--config.model.width=0'],
       'model.width must be >= 1, got 0'),
      ([demo, workdir, '--config.train.n_critic=0'],
       'train.n_critic must be >= 1, got 0'),
      ([demo, workdir, '--config.train.learning_rate=-1e-4'],
       'train.learning_rate must be in (0.0'),
      ([demo, workdir, '--config.train.b1=1.5'], 'train.b1'),
      ([demo, workdir, "--config.eval.metrics=('fid','swdd')"],
       "unknown metric 'swdd'; did you mean 'swd'?"),
      ([demo, workdir, "--config.eval.train_metrics=('prcd',)"],
       "unknown metric 'prcd'"),
      ([demo, workdir, '--config.data.placement=devices'],
       "data.placement = 'devices' is not one of 'auto', 'device', 'host'; "
       "did you mean 'device'?"),
      ([demo, workdir, '--config.data.device_budget=0'],
       'data.device_budget must be in (0.0, 1.0], got 0.0'),
      ([demo, workdir, '--config.data.worker_count=-2'],
       'data.worker_count must be >= -1, got -2'),
      ([demo, workdir, '--config.run.sample_grid=8'],
       'run.sample_grid must be a square number (0: no grids), got 8'),
      ([demo, workdir, '--config.eval.reference_split=test'],
       'eval.reference_split'),
      ([demo, workdir, '--config.run.sample_grid=10'],
       'run.sample_grid must be a square number'),
      ([demo, workdir, '--config.loss.method=niqe',
        '--config.loss.niqe.pristine=file',
        f'--config.loss.niqe.pristine_file={tmp_path / "absent.npz"}'],
       'absent.npz'),
      ([demo, workdir, '--config.loss.method=niqe',
        '--config.loss.niqe.pristine=file'], 'loss.niqe.pristine_file'),
      ([demo, workdir, '--mode=sample'], 'no checkpoints in'),
      ([demo, workdir, '--mode=evaluate'], 'no checkpoints in'),
      ([demo, workdir, '--mode=evaluate', "--config.eval.metrics=('fid', 'swd')",
        f'--config.eval.inception_weights={tmp_path / "absent.npz"}'],
       ('pt_inception-2015-12-05-6726825d.pth',
        'python -m qagan_jax.evaluation.inception')),
      ([demo, f'--workdir={a_file}'], 'is a file, not a directory'),
      ([demo, f'--workdir={a_file / "run"}'], 'is a file, not a directory'),
      ([demo, f'--workdir={read_only}'], 'is not writable'),
      ([demo, f'--workdir={tmp_path / ("a" * 300) / "run"}'],
       ('is 300 bytes long, and this filesystem allows', 'a shorter')),
      ([demo, f'--workdir={tmp_path / "sweep[1]"}'],
       ('cannot be in the path', 'sweep_1')),
      ([f'--config={REPO_ROOT / "configs" / "cifar10_wgangp.py"}', workdir,
        f'--config.data.data_dir={tmp_path / "tfds"}'],
       'python -m qagan_jax.prepare_data cifar10'),
      ([demo, '--mode=sample'], f'no checkpoints in {empty / "runs" / "demo"}',
       {'cwd': str(empty)}),
      ([demo, *runs.tiny_flags(model__width=8)],
       ('holds a run of another configuration',
        'model.width: 4 in the workdir, 8 now'), {'cwd': str(holding_a_run)}),
      # sample reads the run's config; an override that contradicts it
      ([demo, '--mode=sample', '--config.model.width=8'],
       ('holds a run of another configuration',
        'model.width: 4 in the workdir, 8 now'), {'cwd': str(holding_a_run)}),
      (['--mode=evaluate', f'--workdir={empty}'],
       ('holds no config.json', '--config=')),
      ([demo, workdir],
       ('jax.distributed.initialize() failed', 'JAX_NUM_PROCESSES'),
       {'env': {'JAX_COORDINATOR_ADDRESS': 'localhost:12345'}}),
  ]
  results = run_command_lines(
      [dict(argv=args, **(extra[0] if extra else {}))
       for args, _, *extra in cases], tmp_path)
  assert len(results) == len(cases) >= 20
  failures = []
  for (args, expected, *_), (status, _, stderr) in zip(cases, results):
    expected = (expected,) if isinstance(expected, str) else expected
    if (status == 0 or not all(e in stderr for e in expected)
        or 'Traceback' in stderr):
      failures.append((args, expected, status, stderr[-1500:]))
  assert not failures, '\n\n'.join(map(str, failures))
  assert not (tmp_path / 'run').exists()   # nothing was started
  assert not (tmp_path / 'sweep[1]').exists()
  assert not (empty / 'runs').exists()


def test_input_workers_leave_ctrl_c_to_the_run():
  """Ctrl-C in a terminal reaches every process of the group; grain's worker
  processes, which multiprocessing starts by running this module as
  __mp_main__, ignore it (the run stops them after saving) rather than
  print a KeyboardInterrupt traceback each and leak their shared memory."""
  code = ('import runpy, signal\n'
          "runpy.run_module('qagan_jax.main', run_name='__mp_main__', "
          'alter_sys=True)\n'
          'print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, check=True, cwd=REPO_ROOT, timeout=120)
  assert done.stdout.strip() == 'True', done.stderr


def test_ctrl_c_outside_training_ends_the_command_at_once():
  """The command line takes charge of Ctrl-C before JAX is imported: a
  KeyboardInterrupt that landed in a garbage-collector callback (JAX
  installs one) was printed as ignored and the command went on, to the end
  of a whole training run. Here the signal arrives inside such a
  callback."""
  code = (
      'import gc, os, runpy, signal, sys\n'
      "sys.argv = ['qagan_jax.main']\n"
      'try:\n'
      "  runpy.run_module('qagan_jax.main', run_name='__main__',\n"
      '                   alter_sys=True)\n'
      'except SystemExit:\n'      # no --config: the handler stays
      '  pass\n'
      'def fire(phase, info):\n'
      '  gc.callbacks.remove(fire)\n'
      '  os.kill(os.getpid(), signal.SIGINT)\n'
      '  for _ in range(10**6):\n'   # the handler runs here
      '    pass\n'
      'gc.callbacks.append(fire)\n'
      'gc.collect()\n'
      "print('went on')\n")
  done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, cwd=REPO_ROOT, timeout=120)
  assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
  assert 'went on' not in done.stdout
  assert done.stderr.strip().splitlines()[-1].startswith(
      'qagan_jax: interrupted'), done.stderr
  assert 'Traceback' not in done.stderr
  # the package itself imports no JAX: nothing precedes the handler but
  # the standard library
  light = subprocess.run(
      [sys.executable, '-c', "import sys, qagan_jax; print('jax' in "
       'sys.modules)'], capture_output=True, text=True, check=True,
      cwd=REPO_ROOT, timeout=120)
  assert light.stdout.strip() == 'False', light.stderr
