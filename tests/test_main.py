"""The command line, end to end in subprocesses: train, resume, sample, SIGTERM, bad flags."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


TINY = [
    '--config.model.width=4', '--config.train.batch_size=8',
    '--config.train.generator_batch_size=8', '--config.train.n_critic=1',
    '--config.data.patches_per_epoch=1024', '--config.run.log_every=2',
    '--config.run.checkpoint_every=2', '--config.run.sample_every=2',
    '--config.run.eval_every=2', '--config.run.eval_samples=64',
    '--config.run.standing_stats_samples=32', '--config.run.sample_grid=16',
]


def qagan(*args, timeout=600, check=True, cwd=REPO_ROOT):
  result = subprocess.run(
      [sys.executable, '-m', 'qagan_jax.main',
       f'--config={REPO_ROOT / "configs" / "demo.py"}', *args], cwd=cwd,
      capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'exit {result.returncode}\n{result.stderr[-3000:]}')
  return result


def training_steps(workdir):
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines if 'critic_loss' in line]


def test_train_writes_everything_then_resumes_then_samples(tmp_path):
  workdir = tmp_path / 'run'
  result = qagan(f'--workdir={workdir}', '--config.train.num_iters=4', *TINY)
  assert 'Done: 4 iterations' in result.stderr
  for name in ('config.json', 'metrics.jsonl', 'loss_curves.png'):
    assert (workdir / name).is_file(), name
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit()) == ['2', '4']
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert (workdir / 'samples' / 'step_0000004.png').is_file()
  assert training_steps(workdir) == [2, 4]
  # A second invocation with a longer run resumes at step 4.
  result = qagan(f'--workdir={workdir}', '--config.train.num_iters=6', *TINY)
  assert 'Resuming from the checkpoint of step 4' in result.stderr
  assert training_steps(workdir) == [2, 4, 6]
  result = qagan(f'--workdir={workdir}', '--mode=sample', '--num_samples=9',
                 *TINY)
  assert 'sample_step0000006_seed0_n9.png' in result.stdout
  assert (workdir / 'samples' / 'sample_step0000006_seed0_n9.npz').is_file()
  result = qagan(f'--workdir={workdir}', '--mode=evaluate', '--num_samples=64',
                 *TINY)
  report = json.loads((workdir / 'eval' / 'step_0000006.json').read_text())
  assert report['num_samples'] == 64 and 'swd/mean' in report['metrics']
  assert 'niqe_distance' in result.stdout


def test_evaluate_without_inception_weights_says_which_file(tmp_path):
  result = qagan(f'--workdir={tmp_path / "run"}', '--mode=evaluate',
                 "--config.eval.metrics=('fid', 'swd')",
                 f'--config.eval.inception_weights={tmp_path / "absent.npz"}',
                 check=False, timeout=120)
  assert result.returncode != 0
  assert 'pt_inception-2015-12-05-6726825d.pth' in result.stderr
  assert 'python -m qagan_jax.evaluation.inception' in result.stderr
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
  workdir = tmp_path / 'run'
  process = subprocess.Popen(
      [sys.executable, '-m', 'qagan_jax.main', '--config=configs/demo.py',
       f'--workdir={workdir}', '--config.train.num_iters=100000', *TINY,
       '--config.run.checkpoint_every=100000', '--config.run.log_every=1',
       '--config.run.eval_every=100000', '--config.run.sample_every=100000'],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 300
  while time.time() < deadline and not (
      metrics.exists() and len(training_steps(workdir)) >= 3):
    assert process.poll() is None, process.communicate()[1][-2000:]
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-2000:]
  assert 'SIGTERM: stopped at step' in stderr
  saved = [int(p.name) for p in (workdir / 'checkpoints').iterdir()
           if p.name.isdigit()]
  assert len(saved) == 1 and saved[0] >= 3
  result = qagan(f'--workdir={workdir}', f'--config.train.num_iters={saved[0] + 1}',
                 *TINY)
  assert f'Resuming from the checkpoint of step {saved[0]}' in result.stderr


def run_command_lines(cases, tmp_path):
  """[(exit status, stderr)] of each argument list through the real main,
  in one process that forks a child per command line (tests/helpers)."""
  cases_file, results_file = tmp_path / 'cases.json', tmp_path / 'results.json'
  cases_file.write_text(json.dumps(cases))
  subprocess.run([sys.executable, str(REPO_ROOT / 'tests' / 'helpers' /
                                      'command_lines.py'), str(cases_file),
                  str(results_file)], cwd=REPO_ROOT, check=True, timeout=600)
  return json.loads(results_file.read_text())


def test_every_bad_command_line_gets_one_clear_message(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory')
  read_only = pathlib.Path('/proc/qagan_jax_run')   # not writable, even as root
  broken = tmp_path / 'broken_config.py'
  broken.write_text('def get_config(:\n')
  demo = str(REPO_ROOT / 'configs' / 'demo.py')
  workdir = f'--workdir={tmp_path / "run"}'
  cases = [   # (arguments, what the message must name)
      (['--config=configs/does_not_exist.py'], 'no such file'),
      (['--config=configs/dmeo.py'], "did you mean 'configs/demo.py'?"),
      ([f'--config={broken}'], 'broken_config.py'),
      ([], '--config is required'),
      ([f'--config={demo}', workdir, 'extra'], 'unexpected arguments: extra'),
      ([f'--config={demo}', workdir, '--mode=trian'],
       'value should be one of <train|sample|evaluate>'),
      ([f'--config={demo}', workdir, '--num_samples=many'], '--num_samples'),
      ([f'--config={demo}', workdir, '--config.trian.batch_size=3'],
       "no field 'trian'; did you mean 'train'?"),
      ([f'--config={demo}', workdir, '--config.train.batch_sizee=3'],
       "did you mean 'train.batch_size'?"),
      ([f'--config={demo}', workdir, '--config.loss.niqe.patchsize=3'],
       "did you mean 'loss.niqe.patch_size'?"),
      ([f'--config={demo}', workdir, '--config.train.batch_size=abc'],
       'invalid literal for int()'),
      ([f'--config={demo}', workdir, '--config.loss.method=nique'],
       "did you mean 'niqe'?"),
      ([f'--config={demo}', workdir, '--config.data.dataset=cifar'],
       "data.dataset = 'cifar' is not one of"),
      ([f'--config={demo}', workdir, '--config.model.resolution=40'],
       'model.resolution = 40 is not one of'),
      ([f'--config={demo}', workdir, '--config.model.resolution=48'],
       'does not match the 32x32 images'),
      ([f'--config={demo}', workdir, '--config.model.width=0'],
       'model.width must be >= 1, got 0'),
      ([f'--config={demo}', workdir, '--config.train.n_critic=0'],
       'train.n_critic must be >= 1, got 0'),
      ([f'--config={demo}', workdir, '--config.train.learning_rate=-1e-4'],
       'train.learning_rate must be in (0.0'),
      ([f'--config={demo}', workdir, '--config.train.b1=1.5'], 'train.b1'),
      ([f'--config={demo}', workdir, "--config.eval.metrics=('fid','swdd')"],
       "unknown metric 'swdd'; did you mean 'swd'?"),
      ([f'--config={demo}', workdir, "--config.eval.train_metrics=('prcd',)"],
       "unknown metric 'prcd'"),
      ([f'--config={demo}', workdir, '--config.data.placement=devices'],
       "data.placement = 'devices' is not one of 'auto', 'device', 'host'; "
       "did you mean 'device'?"),
      ([f'--config={demo}', workdir, '--config.data.device_budget=0'],
       'data.device_budget must be in (0.0, 1.0], got 0.0'),
      ([f'--config={demo}', workdir, '--config.data.worker_count=-2'],
       'data.worker_count must be >= -1, got -2'),
      ([f'--config={demo}', workdir, '--config.run.sample_grid=8'],
       'run.sample_grid must be a square number (0: no grids), got 8'),
      ([f'--config={demo}', workdir, '--config.eval.reference_split=test'],
       'eval.reference_split'),
      ([f'--config={demo}', workdir, '--config.run.sample_grid=10'],
       'run.sample_grid must be a square number'),
      ([f'--config={demo}', workdir, '--config.loss.method=niqe',
        '--config.loss.niqe.pristine=file',
        f'--config.loss.niqe.pristine_file={tmp_path / "absent.npz"}'],
       'absent.npz'),
      ([f'--config={demo}', workdir, '--config.loss.method=niqe',
        '--config.loss.niqe.pristine=file'], 'loss.niqe.pristine_file'),
      ([f'--config={demo}', workdir, '--mode=sample'], 'no checkpoints in'),
      ([f'--config={demo}', workdir, '--mode=evaluate'], 'no checkpoints in'),
      ([f'--config={demo}', f'--workdir={a_file}'], 'is a file, not a directory'),
      ([f'--config={demo}', f'--workdir={a_file / "run"}'],
       'is a file, not a directory'),
      ([f'--config={demo}', f'--workdir={read_only}'], 'is not writable'),
      ([f'--config={REPO_ROOT / "configs" / "cifar10_wgangp.py"}', workdir,
        f'--config.data.data_dir={tmp_path / "tfds"}'],
       'python -m qagan_jax.prepare_data cifar10'),
  ]
  results = run_command_lines([args for args, _ in cases], tmp_path)
  assert len(results) == len(cases) >= 20
  failures = [(args, expected, status, stderr[-1500:])
              for (args, expected), (status, stderr) in zip(cases, results)
              if status == 0 or expected not in stderr
              or 'Traceback' in stderr]
  assert not failures, '\n\n'.join(map(str, failures))
  assert not (tmp_path / 'run').exists()   # nothing was started


def test_default_workdir_and_config_mismatch_refusal(tmp_path):
  # no --workdir: runs/<config name>, relative to the current directory
  qagan('--config.train.num_iters=2', *TINY, cwd=tmp_path)
  workdir = tmp_path / 'runs' / 'demo'
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['2']
  result = qagan('--config.train.num_iters=2', *TINY,
                 '--config.model.width=8', check=False, cwd=tmp_path)
  assert result.returncode != 0
  assert 'holds a run of another configuration' in result.stderr
  assert 'model.width: 4 in the workdir, 8 now' in result.stderr


def test_incomplete_multi_host_environment_gets_a_clear_message(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'qagan_jax.main',
       f'--config={REPO_ROOT / "configs" / "demo.py"}',
       f'--workdir={tmp_path / "run"}'], cwd=REPO_ROOT, capture_output=True,
      text=True, timeout=120,
      env=dict(os.environ, JAX_COORDINATOR_ADDRESS='localhost:12345'))
  assert result.returncode != 0
  assert 'jax.distributed.initialize() failed' in result.stderr
  assert 'JAX_NUM_PROCESSES' in result.stderr
  assert 'Traceback' not in result.stderr
