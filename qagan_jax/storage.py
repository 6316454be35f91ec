"""Where a run's files go: a local folder or any URL of orbax's path layer (gs://, s3://).

A workdir is an `etils.epath.Path`, the path type orbax itself writes
checkpoints through: a local path (made absolute), or a URL that epath
hands to fsspec (`gs://bucket/run` needs the `gcs` extra: gcsfs, and
google-cloud-storage for TensorBoard's event files and the run lock).
Object stores have no append and no rename of a folder in one step; the
helpers here write whole files, and callers rewrite small files (the
metrics) rather than append to them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pathlib
import shutil
import uuid

import numpy as np
from etils import epath

from qagan_jax import errors


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
  """`workdir` as an epath.Path: a URL as given, a local path absolute.
  Raises ValueError for a URL scheme epath does not know."""
  text = os.fspath(workdir)
  if is_url(text):
    try:
      return epath.Path(text)
    except KeyError:
      raise errors.ConfigurationError(
          f'{text}: {scheme(text)}:// is not a storage this package can '
          'write to; use a local path or a gs://, s3://, az:// or hf:// '
          'URL (etils.epath, as orbax).') from None
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def is_url(path: str | os.PathLike) -> bool:
  """Whether `path` names remote storage (`scheme://...`), not a local file."""
  return '://' in os.fspath(path)


def scheme(path: str | os.PathLike) -> str | None:
  """'gs', 's3', ... for a URL; None for a local path."""
  text = os.fspath(path)
  return text.split('://', 1)[0] if is_url(text) else None


class UnwritableError(errors.StorageError, PermissionError):
  """A folder or file of the run cannot be written."""


def user_cache_dir() -> str:
  """The package's cache of things worth keeping between runs (reference
  statistics, compiled programs): $QAGAN_JAX_CACHE, else
  $XDG_CACHE_HOME/qagan_jax, else ~/.cache/qagan_jax. Anything in it may
  be deleted at any time; it is computed again."""
  return os.environ.get('QAGAN_JAX_CACHE') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
      'qagan_jax')


def write_bytes(path: epath.Path, data: bytes) -> None:
  """Writes `data` to `path` whole (its folder made first). Local files are
  written beside and renamed, so that a reader never sees half a file."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_url(path):          # an object appears whole when its upload ends
    path.write_bytes(data)
    return
  partial = path.parent / f'.{path.name}.{uuid.uuid4().hex[:8]}.partial'
  try:
    partial.write_bytes(data)
    os.replace(partial, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(partial)


def write_text(path: epath.Path, text: str) -> None:
  write_bytes(path, text.encode())


def save_npz(path: epath.Path, compress: bool = True, **arrays) -> None:
  """np.savez_compressed (np.savez if not `compress`) to any path."""
  buffer = io.BytesIO()
  (np.savez_compressed if compress else np.savez)(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def load_npz(path: epath.Path) -> dict[str, np.ndarray]:
  """The arrays of an .npz file at any path, read at once."""
  with np.load(io.BytesIO(epath.Path(path).read_bytes())) as stored:
    return {name: stored[name] for name in stored.files}


def move_tree(source: epath.Path, target: epath.Path) -> None:
  """Moves the folder `source` to `target` (replacing it), on one store."""
  source, target = epath.Path(source), epath.Path(target)
  if target.exists():
    target.rmtree()
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_url(source):
    source.rename(target)   # fsspec: copy then delete, object by object
  else:
    shutil.move(os.fspath(source), os.fspath(target))


def pattern_characters_problem(path: str | os.PathLike) -> str | None:
  """Why checkpoints cannot live under `path`, or None: '[' or ']' in it.

  Orbax finds a checkpoint's files by a wildcard search under its folder
  (etils.epath's glob, which does not escape the folder's own name), where
  `[1]` is a pattern, not a name: the files of `runs/sweep[1]` are never
  found, and every checkpoint written there is unreadable. (`*`, `?` and
  `{}` match themselves there and are fine.)
  """
  text = os.fspath(path)
  if '[' in text or ']' in text:
    safe = text.replace('[', '_').replace(']', '')
    return (f'{text}: "[" and "]" cannot be in the path of a run\'s '
            'checkpoints (orbax reads them as a file pattern, and every '
            f'checkpoint saved there would be unreadable); use, e.g., {safe}')
  return None


def workdir_problem(workdir: str | os.PathLike) -> str | None:
  """Why `workdir` cannot hold a run, or None. Local: nothing is created
  (a folder is made and removed in its nearest existing parent); a URL:
  a probe object is written and deleted, which also checks the bucket
  exists and the credentials may write."""
  try:
    workdir = workdir_path(workdir)
  except ValueError as error:
    return f'--workdir={error}'
  problem = pattern_characters_problem(workdir)
  if problem:
    return f'--workdir={problem}'
  if is_url(workdir):
    probe = workdir / f'.qagan_jax_probe_{uuid.uuid4().hex[:8]}'
    try:
      probe.write_bytes(b'')
      probe.unlink()
    except ImportError as error:
      return (f'--workdir={workdir}: {scheme(workdir)}:// paths need '
              f'{error.name or "a filesystem package"} '
              f'({errors.install_command("gcs")} for gs://).')
    except Exception as error:  # pylint: disable=broad-except
      # fsspec's backends raise their own types (permissions, no bucket,
      # no credentials)
      first = (str(error).splitlines() or [''])[0][:300]
      return (f'--workdir={workdir} is not writable: {type(error).__name__}: '
              f'{first}. Check the bucket exists and that your credentials '
              'may write to it.')
    return None
  path = os.fspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    return f'--workdir={workdir} is a file, not a directory.'
  existing = _nearest_existing(path)
  if not os.path.isdir(existing):
    return f'--workdir={workdir}: {existing} is a file, not a directory.'
  try:
    longest = os.pathconf(existing, 'PC_NAME_MAX')
  except (OSError, ValueError):
    longest = 255
  for name in pathlib.PurePath(path).parts:
    if len(os.fsencode(name)) > longest:
      return (f'--workdir={workdir}: the folder name {name[:24]}... is '
              f'{len(os.fsencode(name))} bytes long, and this filesystem '
              f'allows {longest}; use a shorter --workdir.')
  error = _folder_refusal(existing)   # what the disk says, read-only too
  if error is not None:
    return (f'--workdir={workdir}: {existing} is not writable ({error.strerror}'
            '); pass a --workdir on a writable disk.')
  return None


_PROBE_PREFIX = '.qagan_jax_probe_'


def _folder_refusal(folder: str) -> OSError | None:
  """The error of making (and removing) a folder in local `folder`, or None:
  permissions and read-only mounts alike."""
  probe = os.path.join(folder, f'{_PROBE_PREFIX}{uuid.uuid4().hex[:8]}')
  try:
    os.mkdir(probe)
    os.rmdir(probe)
  except OSError as error:
    return error
  return None


def unwritable_part(workdir: str | os.PathLike) -> str | None:
  """Why a run could not write somewhere in an existing local `workdir` (the
  folder, its subfolders, its files), or None; None for URLs. Each folder
  is probed by making and removing a folder in it, so that permissions and
  read-only mounts (a workdir first written under sudo) are found in
  seconds, before orbax's writes would wait out their timeouts."""
  if is_url(workdir):
    return None
  root = os.fspath(workdir)
  if not os.path.isdir(root):
    return None
  # not the probes of the run's other processes, which they remove
  folders = [root] + sorted(
      entry.path for entry in os.scandir(root)
      if entry.is_dir(follow_symlinks=False)
      and not entry.name.startswith(_PROBE_PREFIX))
  for folder in folders:
    error = _folder_refusal(folder)
    if error is not None:
      if not os.path.isdir(folder):   # removed meanwhile: nothing to write
        continue
      return f'{folder} is not writable ({error.strerror})'
  for entry in os.scandir(root):
    if (entry.is_file(follow_symlinks=False)
        and not os.access(entry.path, os.W_OK) and os.path.exists(entry.path)):
      return f'{entry.path} is not writable'
  return None


def _nearest_existing(path: str) -> str:
  """`path`, or its nearest parent that exists (local paths)."""
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def folder_bytes(path) -> int:
  """Bytes of the files under a local folder (0 if it does not exist)."""
  total = 0
  for root, _, files in os.walk(os.fspath(path)):
    for name in files:
      try:
        total += os.lstat(os.path.join(root, name)).st_size
      except FileNotFoundError:
        pass
  return total


def free_bytes(path) -> int | None:
  """Free bytes on the local filesystem of `path` (its nearest existing
  parent); None for a URL (object stores do not fill)."""
  if is_url(path):
    return None
  return shutil.disk_usage(_nearest_existing(os.fspath(path))).free


def mentions_out_of_space(text: str) -> bool:
  """Whether a library's message reports a full disk (tensorstore's, for
  one, wraps the OS error in its own text)."""
  return 'No space left on device' in text or "os_error_code='28'" in text


def is_out_of_space(error: BaseException) -> bool:
  """Whether `error`, or one it was raised from, is a full disk (ENOSPC,
  EDQUOT)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                      errno.EDQUOT):
      return True
    if mentions_out_of_space(str(error)):   # wrapped by a library
      return True
    error = error.__cause__ or error.__context__
  return False
