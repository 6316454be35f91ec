"""Command line: train, sample from or evaluate a QAGAN run.

    python -m qagan_jax.main --config=configs/demo.py
    python -m qagan_jax.main --config=configs/stl10_niqe.py [--workdir=DIR]
        [--config.train.batch_size=128 ...]
    python -m qagan_jax.main --mode=sample --config=... [--num_samples=64]

Modes: train (the default; resumes when the workdir holds checkpoints),
sample (a PNG grid and an .npz from the EMA generator), evaluate (the
metrics of eval.metrics on the EMA generator's samples, as a JSON report in
<workdir>/eval/), check (a preflight check: the config's compile time,
step time, memory, evaluation and checkpoint costs measured on these
devices, and the projected wall time of the whole run, as text and one
JSON line). The workdir defaults to runs/<config file name>. Any
config field can be overridden with --config.<field>=<value>; a misspelt
field or an invalid value stops the command before any work, naming it.
Sample and evaluate read the workdir's run with the configuration it was
trained with (its config.json), the overrides on top.
"""

from __future__ import annotations

import os
import signal
import sys


_INTERRUPTED = ('qagan_jax: interrupted; run the same command to resume from '
                'the newest checkpoint.')


def _interrupted(signum, frame):
  """Ctrl-C when no training step can be under way (the start-up, the
  sample, evaluate and check modes), or a second one in training (the
  training loop takes the first): the command ends at once, in one line.
  (Python's own KeyboardInterrupt can land in a garbage-collector callback
  of JAX's, where it is printed as ignored and the command goes on.)"""
  del signum, frame
  try:
    sys.stderr.write(f'\n{_INTERRUPTED}\n')
    sys.stderr.flush()
  finally:
    os._exit(130)  # pylint: disable=protected-access


if __name__ == '__main__':     # before the second of imports below
  signal.signal(signal.SIGINT, _interrupted)

# pylint: disable=g-import-not-at-top,wrong-import-position
import difflib
import logging
import pathlib
import re

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from qagan_jax import cluster
from qagan_jax import config as config_lib
from qagan_jax import errors

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10_ssim.py (sample and '
    "evaluate read the workdir's config.json, and need only --workdir).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: a local path or a URL such as '
    'gs://bucket/run (default: runs/<config file name>).')
_MODE = flags.DEFINE_enum('mode', 'train',
                          ['train', 'sample', 'evaluate', 'check'],
                          'What to do.')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', None, 'Samples to draw: sample mode, default 64; evaluate '
    'mode, default eval.num_samples (50,000, as the paper).')
_STEP = flags.DEFINE_integer('checkpoint_step', None,
                             'Checkpoint to use (default: the newest).')
_STOP_AFTER = flags.DEFINE_integer(
    'stop_after', None, 'Train mode: stop after this step with a checkpoint, '
    'as if interrupted (e.g. before a job\'s time limit); the same command '
    'without it resumes.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', list(cluster.MODES),
    "Start jax.distributed: 'auto' where JAX finds a cluster of several "
    'processes (Cloud TPU pod slice, Slurm, Open MPI, Kubernetes Job, '
    'JAX_COORDINATOR_ADDRESS); on; off.')
_TRACEBACK = flags.DEFINE_boolean(
    'traceback', False, 'On a failure, show the stack as well as the one-line '
    'message (for a bug report).')
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout', 100, 'Multi-process runs: seconds without news '
    'from a process after which the others treat it as dead and stop.')

log = logging.getLogger('qagan_jax')

# the modes that read a trained workdir, with the configuration it keeps
_READERS = ('sample', 'evaluate')

if __name__ == '__mp_main__':
  # A worker process of the input pipeline (multiprocessing's spawn runs
  # this module under that name): Ctrl-C in a terminal reaches every process
  # of the group, and the run stops its workers itself once it has saved.
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':')[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':')[0]
  return None


def _unknown_override(argv) -> str | None:
  """A readable message for the first --config.<field> that does not exist."""
  path = _config_path(argv)
  if path is None or not os.path.isfile(path):
    return None
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('_qagan_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for arg in argv:
    match = re.match(r'--config\.([\w.]+)(=|$)', arg)
    if not match:
      continue
    node, walked = config, []
    for part in match.group(1).split('.'):
      if not hasattr(node, 'keys') or part not in node:
        choices = list(node.keys()) if hasattr(node, 'keys') else []
        close = difflib.get_close_matches(part, choices, n=1)
        where = '.'.join(walked + [part])
        hint = (f"; did you mean '{'.'.join(walked + [close[0]])}'?" if close
                else '')
        return f'{arg}: the config has no field {where!r}{hint}'
      node = node[part]
      walked.append(part)
  return None


def _missing_config(path: str) -> str:
  """The message for a --config file that does not exist."""
  folder = pathlib.Path(path).parent
  known = sorted(p.name for p in folder.glob('*.py')) if folder.is_dir() else []
  close = difflib.get_close_matches(pathlib.Path(path).name, known, n=1)
  hint = f"; did you mean '{folder / close[0]}'?" if close else '.'
  return (f'--config={path}: no such file{hint} The config files are in '
          'configs/ of the repository (e.g. --config=configs/demo.py); '
          'run from its root or give the full path.')


def _parse_flags(argv):
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    sys.exit(f'qagan_jax: {_missing_config(path)}')
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(f'qagan_jax: {error}\nRun with --helpshort for the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    message = _unknown_override(argv) or ' '.join(str(error).split())
    sys.exit(f'qagan_jax: {message}')
  except Exception as error:  # pylint: disable=broad-except
    # the config file itself does not run (syntax, imports, get_config)
    sys.exit(f'qagan_jax: --config={path} could not be loaded: '
             f'{type(error).__name__}: {error}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  if config is None and _MODE.value in _READERS and _WORKDIR.value:
    config = config_lib.base_config()   # the workdir's config.json says
  if config is None:
    raise app.UsageError('--config is required, e.g. '
                         '--config=configs/demo.py (sample and evaluate '
                         'need only --workdir)')
  try:
    config_lib.validate(config)
  except ValueError as error:
    sys.exit(f'qagan_jax: {error}')
  except OSError as error:   # the config file failed to load
    sys.exit(f'qagan_jax: {" ".join(str(error).split())}')
  if not any(a.startswith(('--verbosity', '-v')) for a in sys.argv[1:]):
    # Libraries (orbax, grain) log every step at INFO; keep theirs to
    # warnings and this package's own messages at INFO.
    absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False
  workdir = _WORKDIR.value or str(
      pathlib.Path('runs') / pathlib.Path(
          config_flags.get_config_filename(flags.FLAGS['config']).split(':')[0]
      ).stem)
  from qagan_jax import storage  # pylint: disable=g-import-not-at-top
  problem = storage.workdir_problem(workdir)
  if problem:
    sys.exit(f'qagan_jax: {problem}')
  from qagan_jax import interruption  # pylint: disable=g-import-not-at-top
  try:
    cluster.initialize(_DISTRIBUTED.value, _HEARTBEAT.value)
    try:
      _run_mode(_MODE.value, config, workdir)
    except Exception as error:  # pylint: disable=broad-except
      # another process lost outside the training loop (at start-up, in
      # the sample or evaluate mode)
      lost = interruption.peer_lost(error)
      if lost is None:
        raise
      raise lost from error
  except interruption.PeerLostError as error:
    print(f'qagan_jax: {error}', file=sys.stderr, flush=True)
    logging.shutdown()
    # at once: jax.distributed's orderly shutdown would wait for the lost
    # process until its heartbeat times out, then abort
    os._exit(1)  # pylint: disable=protected-access
  except KeyboardInterrupt:
    # a Ctrl-C outside training, or a second one within it: at once, not
    # after a compilation still under way in another thread
    print(_INTERRUPTED, file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(130)  # pylint: disable=protected-access
  except Exception as error:  # pylint: disable=broad-except
    message = failure_message(error)
    if message is None or _TRACEBACK.value:
      raise
    sys.exit(f'qagan_jax: {message}')


def failure_message(error: BaseException) -> str | None:
  """The message that a failure of a run's environment or input is told
  with (an errors.QaganError, an OSError: a missing file, a full or
  read-only disk; memory running out); None for anything else, a bug,
  whose traceback is shown."""
  if isinstance(error, (errors.QaganError, OSError)):
    return str(error)
  resource = errors.as_resource_error(error)
  return None if resource is None else str(resource)


def _overrides(argv) -> list[str]:
  """The dotted paths of the --config.<path> overrides in `argv`."""
  return [match.group(1) for arg in argv
          if (match := re.match(r'--config\.([\w.]+)(=|$)', arg))]


def _config_of_run(config, workdir: str):
  """For the sample and evaluate modes: the configuration the workdir's
  run was trained with, the command line's overrides on top."""
  from qagan_jax import workdirs  # pylint: disable=g-import-not-at-top
  config, differed = workdirs.config_of_run(
      config, workdir, _overrides(sys.argv[1:]),
      required=_CONFIG.value is None)
  config_lib.validate(config)
  if differed and _CONFIG.value is not None:
    fields = [d.split(':')[0] for d in differed]
    log.info('Reading %s with the configuration it was trained with (its '
             'config.json), which differs from the config file in %s.',
             workdir, ', '.join(fields[:6])
             + (f' and {len(fields) - 6} more' if len(fields) > 6 else ''))
  return config


def _run_mode(mode: str, config, workdir: str) -> None:
  from qagan_jax import loop  # pylint: disable=g-import-not-at-top
  from qagan_jax import modes  # pylint: disable=g-import-not-at-top
  from qagan_jax import train_state  # pylint: disable=g-import-not-at-top
  if mode in _READERS:
    config = _config_of_run(config, workdir)
  if mode == 'train':
    log.info('Training %s in %s.', config.loss.method, workdir)
    state = loop.train_and_evaluate(config, workdir,
                                    stop_after=_STOP_AFTER.value)
    done = int(train_state.host_value(state.step))
    if done >= config.train.num_iters:
      log.info('Done: %d iterations. Sample grids in %s/samples, losses '
               'and metrics in %s/loss_curves.png and metrics.jsonl.',
               done, workdir, workdir)
  elif mode == 'check':
    from qagan_jax import preflight  # pylint: disable=g-import-not-at-top
    found = preflight.measure(config, workdir)
    print(preflight.text(found))
    print(preflight.json_line(found))
  elif mode == 'sample':
    path = modes.sample(config, workdir, _NUM_SAMPLES.value or 64,
                        _STEP.value)
    print(f'wrote {path} and {path.with_suffix(".npz")}')
  else:
    path = modes.evaluate_run(config, workdir, step=_STEP.value,
                              num_samples=_NUM_SAMPLES.value)
    if path.exists():     # written by process 0
      print(path.read_text(), end='')
      print(f'wrote {path}')


def run(argv=None):
  """The command line (`argv` defaults to sys.argv); exits with its status."""
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
