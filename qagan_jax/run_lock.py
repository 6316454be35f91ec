"""One training run per workdir: a lock file that names its holder and is renewed while the run lives.

`<workdir>/run.lock` is created exclusively by the run that trains there,
and holds its host, process id and start time as JSON: on a local
filesystem with O_CREAT | O_EXCL (atomic on local filesystems and NFS v3+),
on Google Cloud Storage as an object uploaded only if none exists
(`ifGenerationMatch=0`, atomic), elsewhere (other fsspec URLs) by a check
then a write (not atomic). A thread renews it every `RENEW_EVERY` seconds
(the file's modification time; a re-upload of the object). A second run
refuses the workdir, naming the holder, unless the holder is gone:

- on the same host, its process no longer exists, has exited (a zombie
  not yet reaped), or is another process with the same id (where Linux's
  /proc tells a process's start: a container restarted with its run's
  process id); a killed run is noticed at once;
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
import socket
import threading
import time

from etils import epath

from qagan_jax import errors
from qagan_jax import storage

log = logging.getLogger(__name__)
LOCK_FILE = 'run.lock'
RENEW_EVERY = 15.0       # seconds
STALE_AFTER = 120.0      # seconds without renewal: the holder is gone


class WorkdirBusyError(errors.WorkdirError, RuntimeError):
  """Another live run trains in the workdir."""


@dataclasses.dataclass(frozen=True)
class Holder:
  host: str
  pid: int
  since: str             # ISO time the holder started
  # the holder process's start in clock ticks since boot (/proc), which
  # tells it from a later process given the same id; None where unknown
  started: int | None = None

  def describe(self) -> str:
    return f'process {self.pid} on host {self.host}, since {self.since}'


def _me() -> Holder:
  return Holder(socket.gethostname(), os.getpid(),
                datetime.datetime.now().astimezone().isoformat(
                    timespec='seconds'), _process_stat(os.getpid())[1])


def _parse(data: bytes) -> Holder | None:
  """The holder written in a lock, or None if unreadable."""
  try:
    fields = json.loads(data)
    started = fields.get('started')      # absent in older locks
    return Holder(str(fields['host']), int(fields['pid']),
                  str(fields['since']),
                  None if started is None else int(started))
  except (ValueError, KeyError, TypeError, AttributeError):
    return None     # being written, or damaged: judged by its age


def _process_stat(pid: int) -> tuple[str | None, int | None]:
  """(state, start in clock ticks since boot) of a process, from Linux's
  /proc/<pid>/stat; (None, None) where it cannot be read."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      text = f.read().decode('ascii', 'replace')
    # after the command name, in parentheses (which may hold any text):
    # field 3, the state, ..., field 22, the start time
    fields = text[text.rindex(')') + 2:].split()
    return fields[0], int(fields[19])
  except (OSError, ValueError, IndexError):
    return None, None


class _LocalFile:
  """The lock as a local (or NFS) file."""

  def __init__(self, path: epath.Path):
    self.path = os.fspath(path)

  def create(self, data: bytes) -> bool:
    """Writes `data` if there is no lock; False if there is one."""
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as out:
      out.write(data)
    return True

  def read(self) -> tuple[bytes, float]:
    """(contents, seconds since renewed); FileNotFoundError if none."""
    age = time.time() - os.stat(self.path).st_mtime
    with open(self.path, 'rb') as f:
      return f.read(), age

  def renew(self) -> bool:
    os.utime(self.path)
    return True

  def remove(self) -> None:
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass


class _GcsObject:
  """The lock as a Cloud Storage object; generations make it atomic."""

  def __init__(self, path: epath.Path):
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
    from google.cloud.storage import retry  # pylint: disable=g-import-not-at-top
    bucket, name = os.fspath(path).removeprefix('gs://').split('/', 1)
    self._exceptions = exceptions
    # an unreachable store fails within a minute, rather than retrying on
    self._retry = retry.DEFAULT_RETRY.with_timeout(60)
    self._bucket = gcs.Client().bucket(bucket)
    self._name = name
    self._data = b''
    self._generation = None      # of the object this process wrote last
    self._seen = None            # of the object this process read last

  def create(self, data: bytes) -> bool:
    blob = self._bucket.blob(self._name)
    try:
      blob.upload_from_string(data, if_generation_match=0, retry=self._retry)
    except self._exceptions.PreconditionFailed:
      # an upload that succeeded, retried after its reply was lost, fails
      # its precondition on its own object
      found = self._bucket.get_blob(self._name, retry=self._retry)
      if found is None or found.download_as_bytes(retry=self._retry) != data:
        return False
      blob = found
    self._data, self._generation = data, blob.generation
    return True

  def read(self) -> tuple[bytes, float]:
    blob = self._bucket.get_blob(self._name, retry=self._retry)
    if blob is None:
      raise FileNotFoundError(f'gs://{self._bucket.name}/{self._name}')
    self._seen = blob.generation
    age = time.time() - blob.updated.timestamp()
    return blob.download_as_bytes(retry=self._retry), age

  def renew(self) -> bool:
    """Re-uploads the lock unless another run replaced it (False then)."""
    blob = self._bucket.blob(self._name)
    try:
      blob.upload_from_string(self._data, retry=self._retry,
                              if_generation_match=self._generation)
    except self._exceptions.PreconditionFailed:
      return False
    self._generation = blob.generation
    return True

  def remove(self) -> None:
    """Deletes the object last read or written (not a newer one)."""
    try:
      self._bucket.blob(self._name).delete(
          if_generation_match=self._seen or self._generation,
          retry=self._retry)
    except (self._exceptions.NotFound, self._exceptions.PreconditionFailed):
      pass


class _OtherUrl:
  """The lock on another fsspec store: check, then write (not atomic)."""

  def __init__(self, path: epath.Path):
    self.path = epath.Path(path)

  def create(self, data: bytes) -> bool:
    if self.path.exists():
      return False
    self.path.write_bytes(data)
    return True

  def read(self) -> tuple[bytes, float]:
    data = self.path.read_bytes()
    return data, time.time() - self.path.stat().mtime

  def renew(self) -> bool:
    self.path.write_bytes(self.path.read_bytes())
    return True

  def remove(self) -> None:
    try:
      self.path.unlink()
    except FileNotFoundError:
      pass


def _store(path: epath.Path):
  kind = storage.scheme(path)
  if kind is None:
    return _LocalFile(path)
  return _GcsObject(path) if kind == 'gs' else _OtherUrl(path)


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
    state, started = _process_stat(holder.pid)
    if state in ('Z', 'X'):
      return 'its process has exited'
    if None not in (started, holder.started) and started != holder.started:
      return (f'its process no longer exists (process {holder.pid} is now '
              'another one)')
  return ''


class RunLock:
  """The lock of one workdir, held until `release()`."""

  def __init__(self, workdir, *, renew_every: float = RENEW_EVERY,
               stale_after: float = STALE_AFTER):
    self.path = storage.workdir_path(workdir) / LOCK_FILE
    self.renew_every = renew_every
    self.stale_after = stale_after
    self.holder = None
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> RunLock:
    """Takes the lock; raises WorkdirBusyError naming a live holder."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._store = _store(self.path)
    for _ in range(3):       # a gone holder's lock is removed, then retried
      me = _me()
      if not self._store.create(json.dumps(dataclasses.asdict(me)).encode()):
        try:
          data, age = self._store.read()
        except FileNotFoundError:
          continue           # released meanwhile
        holder = _parse(data)
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
        self._store.remove()
        continue
      self.holder = me
      self._thread = threading.Thread(target=self._renew, daemon=True,
                                      name='qagan_jax run lock')
      self._thread.start()
      return self
    raise WorkdirBusyError(f'could not take {self.path}: other runs keep '
                           'taking it; start one run per workdir.')

  def holder_now(self) -> Holder | None | str:
    """Who holds the lock now: this run's Holder while it still does,
    another Holder (or None, unreadable) once another run took it, or
    'removed' once the lock (or the workdir) was removed. A store that
    cannot be read answers this run's Holder: judged at the next
    renewal."""
    try:
      return _parse(self._store.read()[0])
    except FileNotFoundError:
      return 'removed'
    except Exception:  # pylint: disable=broad-except
      return self.holder

  def _mine(self) -> bool:
    try:
      return _parse(self._store.read()[0]) == self.holder
    except FileNotFoundError:
      return False

  def _renew(self):
    while not self._stop.wait(self.renew_every):
      try:
        if not self._mine() or not self._store.renew():
          log.warning('%s was removed or taken by another run; this run no '
                      'longer holds its workdir.', self.path)
          return
      except Exception as error:  # pylint: disable=broad-except
        # a full or unreachable store: try again at the next renewal
        log.warning('Could not renew %s: %s', self.path, error)

  def release(self) -> None:
    """Removes the lock, if this run still holds it."""
    if self.holder is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._mine():
      self._store.remove()
    self.holder = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False
