"""Runs many command lines through the real `qagan_jax.main`, one fork each.

    python command_lines.py CASES.json RESULTS.json

CASES.json holds a list of argument lists. The package is imported once;
each command line then runs in a forked child that imports
`qagan_jax.main` itself (absl's flags, and the config overrides that
ml_collections reads from sys.argv, are defined once per process). Exit
status and stderr go to RESULTS.json as [[status, stderr], ...]. Used by
tests/test_main.py.
"""

import json
import os
import sys
import tempfile
import traceback

# everything qagan_jax.main needs, imported once for all the children
from qagan_jax import config  # pylint: disable=unused-import
from qagan_jax import loop  # pylint: disable=unused-import


def run_in_child(argv) -> tuple[int, str]:
  with tempfile.TemporaryFile('w+') as err:
    pid = os.fork()
    if pid == 0:   # the child: stderr to the file, then the command line
      os.dup2(err.fileno(), 2)
      sys.stderr = os.fdopen(2, 'w', buffering=1)
      status = 0
      try:
        sys.argv = ['qagan_jax.main', *argv]
        from qagan_jax import main as main_lib  # pylint: disable=g-import-not-at-top
        main_lib.run(sys.argv)
      except SystemExit as exit_:   # as the interpreter reports it
        if isinstance(exit_.code, str):
          print(exit_.code, file=sys.stderr)
          status = 1
        else:
          status = exit_.code or 0
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        status = 1
      sys.stderr.flush()
      os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    err.seek(0)
    return os.waitstatus_to_exitcode(wait_status), err.read()


def main():
  cases = json.loads(open(sys.argv[1]).read())
  results = [run_in_child(argv) for argv in cases]
  with open(sys.argv[2], 'w') as out:
    json.dump(results, out)


if __name__ == '__main__':
  main()
