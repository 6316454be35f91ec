"""A live process that holds a workdir's run lock, for the tests of run_lock and the loop."""

import pathlib
import subprocess
import sys

from qagan_jax import run_lock

_HOLD = ('import sys, time\n'
         'sys.path.insert(0, sys.argv[2])\n'
         'import run_lock\n'
         'run_lock.RunLock(sys.argv[1]).acquire()\n'
         'print("held", flush=True)\n'
         'time.sleep(600)\n')


def hold_in_another_process(workdir) -> subprocess.Popen:
  """A live process holding `workdir`'s lock (run_lock alone: no jax);
  returns once it holds it. The caller kills it."""
  package = pathlib.Path(run_lock.__file__).parent
  holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir),
                             str(package)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'held'
  return holder
