"""Runs many command lines through the real `qagan_jax.main`, one fork each.

    python command_lines.py CASES.json RESULTS.json

CASES.json holds a list of cases, each {"argv": [...]} with optional "cwd",
"env" (variables to set) and "compilations" (a file to which the child
writes how many programs it asked JAX's persistent compilation cache for,
and how many it found there: {"requests": n, "hits": m}). The package is
imported once, and no JAX backend is started here; each command line then
runs in a forked child that imports `qagan_jax.main` itself (absl's flags,
and the config overrides that ml_collections reads from sys.argv, are
defined once per process) and starts its own backend. Exit status, stdout and stderr go to
RESULTS.json as [[status, stdout, stderr], ...], in order: a case may use
what an earlier one wrote. Used by tests/test_main.py.
"""

import json
import os
import sys
import tempfile
import traceback

# everything qagan_jax.main needs, imported once for all the children
import matplotlib.pyplot  # pylint: disable=unused-import

from qagan_jax import config  # pylint: disable=unused-import
from qagan_jax import loop  # pylint: disable=unused-import
from qagan_jax import modes  # pylint: disable=unused-import


def run_in_child(case) -> tuple[int, str, str]:
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    pid = os.fork()
    if pid == 0:   # the child: output to the files, then the command line
      os.dup2(out.fileno(), 1)
      os.dup2(err.fileno(), 2)
      sys.stdout = os.fdopen(1, 'w', buffering=1)
      sys.stderr = os.fdopen(2, 'w', buffering=1)
      status = 0
      counts = {'requests': 0, 'hits': 0}
      if case.get('compilations'):
        from jax import monitoring  # pylint: disable=g-import-not-at-top
        names = {'/jax/compilation_cache/compile_requests_use_cache':
                 'requests', '/jax/compilation_cache/cache_hits': 'hits'}

        def count(event, **kwargs):
          del kwargs
          if event in names:
            counts[names[event]] += 1

        monitoring.register_event_listener(count)
      try:
        os.chdir(case.get('cwd') or os.getcwd())
        os.environ.update(case.get('env') or {})
        sys.argv = ['qagan_jax.main', *case['argv']]
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
      if case.get('compilations'):
        with open(case['compilations'], 'w') as out_counts:
          json.dump(counts, out_counts)
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return os.waitstatus_to_exitcode(wait_status), out.read(), err.read()


def main():
  cases = json.loads(open(sys.argv[1]).read())
  results = [run_in_child(case) for case in cases]
  with open(sys.argv[2], 'w') as out:
    json.dump(results, out)


if __name__ == '__main__':
  main()
