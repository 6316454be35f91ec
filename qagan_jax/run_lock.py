"""One training run per workdir: a lock file that names its holder and is renewed while the run lives.

`<workdir>/run.lock` is created exclusively (O_CREAT | O_EXCL, atomic on
local filesystems and NFS v3+) by the run that trains there, and holds its
host, process id and start time as JSON. A thread renews the file's
modification time every `RENEW_EVERY` seconds. A second run refuses the
workdir, naming the holder, unless the holder is gone:

- on the same host, its process no longer exists (a killed run is noticed
  at once);
- on any host, the lock was not renewed for `STALE_AFTER` seconds (a lost
  host, a frozen process; hosts' clocks are assumed to agree within that).

A gone holder's lock is taken over, with a warning (two runs that take over
the same gone holder in the same instant may both start; the one whose lock
was replaced logs that it no longer holds the workdir). In a multi-process
run process 0 holds the lock for all.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import socket
import threading
import time

log = logging.getLogger(__name__)
LOCK_FILE = 'run.lock'
RENEW_EVERY = 15.0       # seconds
STALE_AFTER = 120.0      # seconds without renewal: the holder is gone


class WorkdirBusyError(RuntimeError):
  """Another live run trains in the workdir."""


@dataclasses.dataclass(frozen=True)
class Holder:
  host: str
  pid: int
  since: str             # ISO time the holder started

  def describe(self) -> str:
    return f'process {self.pid} on host {self.host}, since {self.since}'


def _me() -> Holder:
  return Holder(socket.gethostname(), os.getpid(),
                datetime.datetime.now().astimezone().isoformat(
                    timespec='seconds'))


def _read(path: pathlib.Path) -> tuple[Holder | None, float]:
  """The holder written in `path` (None if unreadable) and the seconds
  since it was renewed; raises FileNotFoundError if there is none."""
  age = time.time() - path.stat().st_mtime
  try:
    fields = json.loads(path.read_text())
    return Holder(str(fields['host']), int(fields['pid']),
                  str(fields['since'])), age
  except (ValueError, KeyError, TypeError):
    return None, age     # being written, or damaged: judged by its age


def _gone(holder: Holder | None, age: float, stale_after: float) -> str:
  """Why the holder is gone, or '' if it may be alive."""
  if age > stale_after:
    return f'its lock was not renewed for {age:.0f} s'
  if holder is not None and holder.host == socket.gethostname():
    try:
      os.kill(holder.pid, 0)
    except ProcessLookupError:
      return 'its process no longer exists'
    except PermissionError:       # alive, another user's
      pass
  return ''


class RunLock:
  """The lock of one workdir, held until `release()`."""

  def __init__(self, workdir, *, renew_every: float = RENEW_EVERY,
               stale_after: float = STALE_AFTER):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.renew_every = renew_every
    self.stale_after = stale_after
    self.holder = None
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> RunLock:
    """Takes the lock; raises WorkdirBusyError naming a live holder."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):       # a gone holder's lock is removed, then retried
      me = _me()
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        try:
          holder, age = _read(self.path)
        except FileNotFoundError:
          continue           # released meanwhile
        why = _gone(holder, age, self.stale_after)
        if not why:
          who = (holder.describe() if holder is not None
                 else 'a run whose lock is being written')
          raise WorkdirBusyError(
              f'{self.path.parent} is in use by another training run: '
              f'{who} (its lock {self.path} was renewed {age:.0f} s ago). '
              'Wait for it to finish or stop it, or use another --workdir. '
              f'A lock not renewed for {self.stale_after:.0f} s is taken '
              'over; delete it yourself only if you are sure that run is '
              'gone.')
        log.warning('Taking over %s from %s: %s.', self.path,
                    holder.describe() if holder else 'an unreadable lock',
                    why)
        try:
          self.path.unlink()
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, 'w') as out:
        json.dump(dataclasses.asdict(me), out)
      self.holder = me
      self._thread = threading.Thread(target=self._renew, daemon=True,
                                      name='qagan_jax run lock')
      self._thread.start()
      return self
    raise WorkdirBusyError(f'could not take {self.path}: other runs keep '
                           'taking it; start one run per workdir.')

  def _mine(self) -> bool:
    try:
      return _read(self.path)[0] == self.holder
    except FileNotFoundError:
      return False

  def _renew(self):
    while not self._stop.wait(self.renew_every):
      if not self._mine():
        log.warning('%s was removed or taken by another run; this run no '
                    'longer holds its workdir.', self.path)
        return
      try:
        os.utime(self.path)
      except OSError as error:    # a full or lost filesystem: try again
        log.warning('Could not renew %s: %s', self.path, error)

  def release(self) -> None:
    """Removes the lock, if this run still holds it."""
    if self.holder is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._mine():
      self.path.unlink()
    self.holder = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False
