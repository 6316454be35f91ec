"""A live process that holds a workdir's run lock, for the tests of run_lock and the loop."""

import subprocess
import sys

_HOLD = ('import sys, time\n'
         'from qagan_jax import run_lock\n'
         'run_lock.RunLock(sys.argv[1]).acquire()\n'
         'print("held", flush=True)\n'
         'time.sleep(600)\n')


def hold_in_another_process(workdir, env=None) -> subprocess.Popen:
  """A live process holding `workdir`'s lock (a local path or a URL);
  returns once it holds it. The caller kills it."""
  holder = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir)],
                            stdout=subprocess.PIPE, text=True, env=env)
  assert holder.stdout.readline().strip() == 'held'
  return holder
