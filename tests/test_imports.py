"""The package's import graph: no circles, configuration flows down from main.py."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'qagan_jax'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph() -> dict[str, set[str]]:
  """{module: package modules it imports}, function-level imports included."""
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        # `from a.b import c` names module a.b.c when there is one
        targets = [f'{node.module}.{alias.name}' for alias in node.names]
        targets = [t if t in modules else node.module for t in targets]
      else:
        continue
      found.update(t for t in targets if t in modules and t != name)
    graph[name] = found
  return graph


def find_cycle(graph):
  """A list of modules forming a circle, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for target in sorted(graph[node]):
      # importing a package's parent while the package loads is no circle
      if node.startswith(target + '.'):
        continue
      if state.get(target) == 'open':
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_package_has_no_import_circle():
  graph = import_graph()
  assert len(graph) > 20 and 'qagan_jax.loop' in graph
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_the_cycle_finder_finds_circles():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c',
                                                              'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_only_main_imports_the_config_module():
  importers = sorted(name for name, targets in import_graph().items()
                     if 'qagan_jax.config' in targets)
  assert importers == ['qagan_jax.main']


def private_uses(path: pathlib.Path, package: str = '') -> list[str]:
  """`module._name` uses and `from module import _name` imports of
  another qagan_jax module's private names in the file at `path`; a
  package's private modules (`from qagan_jax.quality import _checks`) are
  its own modules' to import (`package`: the file's package)."""
  tree = ast.parse(path.read_text())
  aliases = set()      # local names bound to qagan_jax modules
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'qagan_jax'):
      for alias in node.names:
        if alias.name.startswith('_') and node.module != package:
          found.append(f'line {node.lineno}: from {node.module} import '
                       f'{alias.name}')
        aliases.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      aliases.update(a.asname or a.name for a in node.names
                     if a.name.startswith('qagan_jax'))
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr.startswith('_')
        and not node.attr.startswith('__')
        and isinstance(node.value, ast.Name) and node.value.id in aliases):
      found.append(f'line {node.lineno}: {node.value.id}.{node.attr}')
  return found


def test_no_module_uses_another_modules_private_names():
  """A seam another module needs is public and documented: neither the
  package nor the experiments reach into a module's `_private` names."""
  roots = (PACKAGE, PACKAGE.parent / 'experiments')
  uses = {str(path.relative_to(PACKAGE.parent)): found
          for root in roots for path in sorted(root.rglob('*.py'))
          if (found := private_uses(path, '.'.join(
              path.relative_to(PACKAGE.parent).parts[:-1])))}
  assert not uses, uses


def test_the_private_name_finder_finds_them(tmp_path):
  path = tmp_path / 'user.py'
  path.write_text('from qagan_jax import loop\n'
                  'from qagan_jax.train import _build\n'
                  'from qagan_jax.quality import _checks\n'
                  'loop._prepare(1)\nloop.due(1, 2, 3)\nself._x = 1\n')
  assert private_uses(path) == [
      'line 2: from qagan_jax.train import _build',
      'line 3: from qagan_jax.quality import _checks', 'line 4: loop._prepare']
  # a package's own private module, imported in that package
  assert private_uses(path, 'qagan_jax.quality') == [
      'line 2: from qagan_jax.train import _build', 'line 4: loop._prepare']


# Each module is imported alone in a fresh interpreter: forked from one that
# has imported the third-party libraries (the slow part) but nothing of
# qagan_jax, so a circle or a missing import in the package shows as it
# would in a user's `import qagan_jax.<module>`.
_IMPORT_ALONE = """
import importlib, os, sys, traceback
import absl.flags, flax.linen, grain, jax, jax.numpy, ml_collections, numpy
import optax, orbax.checkpoint, PIL.Image, scipy.special
import tensorflow_datasets
assert not any(name.startswith('qagan_jax') for name in sys.modules)
failed = []
for module in sys.argv[1:]:
  pid = os.fork()
  if pid == 0:
    try:
      importlib.import_module(module)
    except BaseException:
      traceback.print_exc()
      os._exit(1)
    os._exit(0)
  if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
    failed.append(module)
sys.exit(f'these failed to import alone: {failed}' if failed else 0)
"""


def test_each_module_imports_alone_in_a_fresh_interpreter():
  modules = ['qagan_jax', 'qagan_jax.loop', 'qagan_jax.run',
             'qagan_jax.modes', 'qagan_jax.sampling', 'qagan_jax.workdirs',
             'qagan_jax.evaluation', 'qagan_jax.train', 'qagan_jax.config',
             'qagan_jax.evaluation.evaluator', 'qagan_jax.main']
  subprocess.run([sys.executable, '-c', _IMPORT_ALONE, *modules], check=True,
                 timeout=300)


LAYOUT = PACKAGE.parent / 'docs' / 'layout.md'


def layout_order() -> list[str]:
  """The modules and packages of docs/layout.md, in the page's order, as
  dotted names (`quality/` -> 'qagan_jax.quality')."""
  import re  # pylint: disable=g-import-not-at-top
  names = re.findall(r'^\| `([\w/.]+)` \|', LAYOUT.read_text(), re.M)
  return ['qagan_jax.' + name.removesuffix('/').removesuffix('.py')
          for name in names]


def test_the_layout_page_lists_every_module_below_what_it_imports():
  """docs/layout.md is the map of the package: every module is on it,
  under (or in the package of) every module it imports."""
  order = layout_order()

  def entry(module):
    found = [i for i, name in enumerate(order)
             if module == name or module.startswith(name + '.')]
    return found[0] if found else None

  graph = import_graph()
  modules = [m for m in graph if m != 'qagan_jax']   # the package's re-exports
  assert [m for m in modules if entry(m) is None] == [], 'not on the page'
  upward = [f'{module} imports {target}' for module in modules
            for target in graph[module]
            if target != 'qagan_jax' and entry(target) > entry(module)]
  assert upward == []
