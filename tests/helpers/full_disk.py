"""A run on a small filesystem that fills, then resumes once space is freed.

    python full_disk.py DISK RUN RESULTS.json [FLAGS...]

DISK is a small, empty filesystem (the test mounts a tmpfs in a mount
namespace of its own); RUN a workdir of the suite's tiny run stopped with
checkpoints, copied to DISK/run. Three command lines of `qagan_jax.main`
then continue it there, through tests/helpers/command_lines.py, with FLAGS:

1. `full`: a filler file leaves room for half a checkpoint, so the run
   stops at its next checkpoint, before writing it;
2. `mid_save`: the same with the room check before each save switched off,
   so that the filesystem itself fails orbax's writes during the save
   (as when another program fills the disk meanwhile);
3. `resumed`: the filler removed (space freed), the same command again.

Writes {name: [exit status, stdout, stderr, checkpoint steps, other
entries of DISK/run/checkpoints]} and the final metrics.jsonl ('metrics')
to RESULTS.json.
"""

import json
import os
import pathlib
import shutil
import sys

import command_lines

from qagan_jax import checkpoints
from qagan_jax import storage


def _listing(folder: pathlib.Path) -> tuple[list, list]:
  names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
  return ([int(n) for n in names if n.isdigit()],
          [n for n in names if not n.isdigit()])


def _fill(disk: pathlib.Path, leave: int) -> pathlib.Path:
  """A file that leaves `leave` bytes free on `disk`."""
  filler = disk / 'filler'
  stats = os.statvfs(disk)
  size = stats.f_bavail * stats.f_frsize - leave
  with open(filler, 'ab') as out:
    out.write(b'\0' * max(size, 0))
  return filler


def main():
  disk, run, results_path = (pathlib.Path(a) for a in sys.argv[1:4])
  workdir = disk / 'run'
  shutil.copytree(run, workdir)
  case = {'argv': [f'--workdir={workdir}', *sys.argv[4:]]}
  newest = max(_listing(workdir / 'checkpoints')[0])
  size = storage.folder_bytes(workdir / 'checkpoints' / str(newest))
  results = {}
  filler = _fill(disk, size // 2)
  results['full'] = command_lines.run_in_child(case)
  results['full'] += _listing(workdir / 'checkpoints')

  filler.unlink()
  filler = _fill(disk, size // 2)
  check = checkpoints.Checkpointer._check_room   # pylint: disable=protected-access
  checkpoints.Checkpointer._check_room = lambda *args: None  # pylint: disable=protected-access
  try:
    results['mid_save'] = command_lines.run_in_child(case)
  finally:
    checkpoints.Checkpointer._check_room = check  # pylint: disable=protected-access
  results['mid_save'] += _listing(workdir / 'checkpoints')

  filler.unlink()
  results['resumed'] = command_lines.run_in_child(case)
  results['resumed'] += _listing(workdir / 'checkpoints')
  results['metrics'] = (workdir / 'metrics.jsonl').read_text()
  results_path.write_text(json.dumps(results))


if __name__ == '__main__':
  main()
