"""One training run per workdir: the lock refuses a live holder, names it, and takes over a gone one."""

import json
import os
import signal
import socket
import time

import pytest

from helpers.locks import hold_in_another_process
from qagan_jax import run_lock


def write_lock(workdir, host, pid, age):
  path = workdir / run_lock.LOCK_FILE
  workdir.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({'host': host, 'pid': pid,
                              'since': '2026-01-01T00:00:00+00:00'}))
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
