"""What can go wrong in a run that is not a bug: a small hierarchy, raised where the problem is found.

Each error's message says what is wrong and what to do, in a line or a few;
`python -m qagan_jax.main` prints it after "qagan_jax: " and exits with
status 1 (`main.py` is the one place that turns errors into exit statuses;
`--traceback` shows the stack as well). The kinds, by where the problem
lies:

  ConfigurationError   the config or the command line
  DataError            the dataset: missing, unprepared, unreadable
  WorkdirError         the workdir: another configuration's, in use, damaged
  CheckpointError      the checkpoints: unreadable, or a diverged state
  StorageError         the disk or the bucket: full, read-only, unreachable
  ClusterError         the other processes of a multi-host run
  ResourceError        the devices: out of memory

Each class states `meaning` (what the error says about the run) and
`remedy` (what to do); docs/troubleshooting.md lists them, and
tests/test_errors.py keeps that page and this module in step. The errors
of the modules keep their historical bases too (a DiskFullError is an
OSError, a DatasetNotPreparedError a FileNotFoundError).
"""

from __future__ import annotations

import importlib.metadata
import shlex


class QaganError(Exception):
  """An error of a run's environment or input, said in one message."""
  meaning = ''
  remedy = ''


class ConfigurationError(QaganError, ValueError):
  meaning = 'A field of the config, or a flag, is unknown or invalid.'
  remedy = ('Correct the field the message names (it suggests the closest '
            'valid one); `--helpshort` lists the flags.')


class DataError(QaganError):
  meaning = ('The training images, or the Inception weights of the '
             'evaluation, cannot be found or read.')
  remedy = ('Prepare the dataset, or convert the weights, once with the '
            'command the message gives (python -m qagan_jax.prepare_data '
            'NAME; python -m qagan_jax.evaluation.inception), or point '
            'data.data_dir or eval.inception_weights to where they are.')


class WorkdirError(QaganError):
  meaning = ('The workdir belongs to another configuration, is in use by a '
             'live run, its config.json is damaged, or it was removed while '
             'the run trained.')
  remedy = ('Use another --workdir, the configuration the workdir was '
            'started with, or wait for the other run (a removed workdir: put '
            'it back to resume, or run again to start afresh); the message '
            'names the field, the holder or the file.')


class CheckpointError(QaganError):
  meaning = ('No checkpoint of the run can be read, or the training state '
             'stopped being finite.')
  remedy = ('For a diverged run, lower train.learning_rate or the penalty '
            'weights and resume from the checkpoint the message names; for '
            'unreadable checkpoints, follow the message: a live run\'s next '
            'checkpoint, or a fresh --workdir.')


class StorageError(QaganError):
  meaning = ('The run could not write where it must: a full disk, a '
             'read-only folder, an unwritable or unreachable bucket.')
  remedy = ('Free the space or fix the permissions the message names, then '
            'run the same command: it resumes from the newest checkpoint, '
            'which is intact.')


class ClusterError(QaganError):
  meaning = ('A multi-host run lost one of its processes, or could not '
             'start its cluster (jax.distributed).')
  remedy = ('Run the same command on every host: it resumes from the newest '
            'checkpoint; --distributed=off runs on one host alone.')


class ResourceError(QaganError):
  meaning = 'The devices ran out of memory for the step or the evaluation.'
  remedy = ('Lower train.batch_size (or eval.batch_size), set '
            "data.placement='host' to keep the dataset off the devices, or "
            'use model.dtype=bfloat16; `--mode=check` measures the memory a '
            'config needs.')


KINDS = (ConfigurationError, DataError, WorkdirError, CheckpointError,
         StorageError, ClusterError, ResourceError)


def out_of_memory(error: BaseException) -> bool:
  """Whether `error` is memory running out: the devices' (an XLA runtime
  error, at compilation or run time) or the host's (MemoryError)."""
  if isinstance(error, MemoryError):
    return True
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def as_resource_error(error: BaseException,
                      plan: str = '') -> ResourceError | None:
  """The ResourceError that `error` means, if it is memory running out
  (its first line kept: it names the allocation; `plan`, a sentence on
  what the work was planned to need, after it); None otherwise."""
  if not out_of_memory(error):
    return None
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  where = 'the host' if isinstance(error, MemoryError) else 'the devices'
  detail = f' ({lines[0]})' if lines else ''
  plan = f' {plan}' if plan else ''
  return ResourceError(
      f'{where} ran out of memory{detail}.{plan} {ResourceError.remedy} '
      'Training resumes from its newest checkpoint with a smaller batch.')


def install_command(extra: str) -> str:
  """The pip command that installs the optional packages of `extra` (an
  `extras_require` of setup.cfg: prepare, convert, gcs, ...) on this
  platform, by name, as this installation's metadata lists them: it works
  however the package was installed (a checkout, a wheel, a git URL),
  where naming the extra of the project needs a published package. In a
  checkout, `pip install ".[extra]"` does the same."""
  wanted = []
  try:
    from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
    for text in importlib.metadata.requires('qagan-jax') or ():
      requirement = Requirement(text)
      if (requirement.marker is not None
          and requirement.marker.evaluate({'extra': extra})):
        wanted.append(f'{requirement.name}{requirement.specifier}')
  except (ImportError, importlib.metadata.PackageNotFoundError):
    pass       # not installed (run from a source folder), or no packaging
  if not wanted:
    return f'pip install ".[{extra}]" (in the qagan_jax repository\'s folder)'
  return 'pip install ' + ' '.join(shlex.quote(name) for name in wanted)
