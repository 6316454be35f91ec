"""One training run per workdir: the lock refuses a live holder, names it, and takes over a gone one."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from helpers.locks import hold_in_another_process
from qagan_jax import run_lock


def write_lock(workdir, host, pid, age, started=None):
  path = workdir / run_lock.LOCK_FILE
  workdir.mkdir(parents=True, exist_ok=True)
  fields = {'host': host, 'pid': pid, 'since': '2026-01-01T00:00:00+00:00'}
  if started is not None:
    fields['started'] = started
  path.write_text(json.dumps(fields))
  then = time.time() - age
  os.utime(path, (then, then))
  return path


def test_a_live_holder_is_refused_by_name_and_a_killed_one_taken_over(
    tmp_path, caplog):
  holder = hold_in_another_process(tmp_path)
  try:
    with pytest.raises(run_lock.WorkdirBusyError) as refused:
      run_lock.RunLock(tmp_path).acquire()
    message = str(refused.value)
    assert f'process {holder.pid} on host {socket.gethostname()}' in message
    assert 'since 20' in message and 'another --workdir' in message
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # killed: its lock stays behind, but its process is gone
  assert (tmp_path / run_lock.LOCK_FILE).exists()
  with run_lock.RunLock(tmp_path) as lock:
    assert 'its process no longer exists' in caplog.text
    held = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
    assert held['pid'] == os.getpid() and lock.holder.pid == os.getpid()
  assert not (tmp_path / run_lock.LOCK_FILE).exists()   # released


def proc_stat(pid):
  """(state, start ticks) of a process: fields 3 and 22 of Linux's
  /proc/<pid>/stat (proc(5))."""
  fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1]
  fields = fields.split()
  return fields[0], int(fields[19])


linux_proc = pytest.mark.skipif(not os.path.exists('/proc/self/stat'),
                                reason="needs Linux's /proc")


@linux_proc
def test_a_killed_holder_not_yet_reaped_is_gone(tmp_path, caplog):
  """A run killed (kill -9, a job's time limit) and run again at once: its
  process is a zombie until its parent reaps it (seconds, where the parent
  was killed too), yet it holds nothing."""
  holder = hold_in_another_process(tmp_path)
  holder.send_signal(signal.SIGKILL)
  deadline = time.monotonic() + 30
  while proc_stat(holder.pid)[0] != 'Z':
    assert time.monotonic() < deadline, 'the holder did not exit'
    time.sleep(0.01)
  try:
    with run_lock.RunLock(tmp_path):
      assert 'its process has exited' in caplog.text
  finally:
    holder.wait()


@linux_proc
def test_a_process_id_given_to_another_process_is_not_the_holder(
    tmp_path, caplog):
  """A restarted container runs its new run with the old run's process id
  (or gives the id to another process): the lock's start time tells them
  apart; an older lock without one is still held."""
  other = subprocess.Popen(['sleep', '600'])
  try:
    _, started = proc_stat(other.pid)
    for lock_start, held in ((started, True), (None, True),
                             (started - 100, False)):
      write_lock(tmp_path, socket.gethostname(), other.pid, age=0,
                 started=lock_start)
      if held:
        with pytest.raises(run_lock.WorkdirBusyError,
                           match=f'process {other.pid} on host'):
          run_lock.RunLock(tmp_path).acquire()
      else:
        run_lock.RunLock(tmp_path).acquire().release()
        assert f'process {other.pid} is now another one' in caplog.text
  finally:
    other.kill()
    other.wait()


def test_another_hosts_lock_holds_until_it_is_not_renewed(tmp_path, caplog):
  write_lock(tmp_path, 'another-host', 1, age=10)
  with pytest.raises(run_lock.WorkdirBusyError, match='another-host'):
    run_lock.RunLock(tmp_path, stale_after=60).acquire()
  write_lock(tmp_path, 'another-host', 1, age=61)      # a lost host
  with run_lock.RunLock(tmp_path, stale_after=60):
    assert 'not renewed for 61 s' in caplog.text


def test_an_unreadable_lock_is_judged_by_its_age(tmp_path):
  path = tmp_path / run_lock.LOCK_FILE
  path.write_text('{"ho')                        # being written, or damaged
  with pytest.raises(run_lock.WorkdirBusyError, match='being written'):
    run_lock.RunLock(tmp_path, stale_after=60).acquire()
  then = time.time() - 100
  os.utime(path, (then, then))
  run_lock.RunLock(tmp_path, stale_after=60).acquire().release()
  assert not path.exists()


def test_the_holder_renews_its_lock_and_gives_up_one_taken_from_it(
    tmp_path, caplog):
  lock = run_lock.RunLock(tmp_path, renew_every=0.02).acquire()
  path = tmp_path / run_lock.LOCK_FILE
  then = time.time() - 1000
  os.utime(path, (then, then))
  deadline = time.monotonic() + 30
  while time.time() - path.stat().st_mtime > 500:      # renewed
    assert time.monotonic() < deadline, 'the lock was never renewed'
    time.sleep(0.02)
  # another run takes it (it judged this one gone): this one lets it be
  write_lock(tmp_path, 'another-host', 1, age=0)
  deadline = time.monotonic() + 30
  while 'no longer holds its workdir' not in caplog.text:
    assert time.monotonic() < deadline
    time.sleep(0.02)
  lock.release()
  assert json.loads(path.read_text())['host'] == 'another-host'
