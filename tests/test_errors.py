"""The kinds of failure: each documented with its meaning and remedy; the command line's one-line messages."""

import configparser
import importlib
import pathlib
import pkgutil
import re
import shlex

import jax
import pytest
from packaging import markers

import qagan_jax
from qagan_jax import errors

PAGE = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'troubleshooting.md'


def flat(text: str) -> str:
  return ' '.join(text.split())


def every_error_class():
  """The QaganError subclasses the package defines (its modules imported)."""
  for module in pkgutil.walk_packages(qagan_jax.__path__, 'qagan_jax.'):
    if module.name != 'qagan_jax.main':   # defines absl flags
      importlib.import_module(module.name)
  found, todo = [], [errors.QaganError]
  while todo:
    for subclass in todo.pop().__subclasses__():
      found.append(subclass)
      todo.append(subclass)
  return found


def test_the_troubleshooting_page_states_each_kind_as_the_module_does():
  page = PAGE.read_text()
  sections = dict(re.findall(r'^### (\w+)\n(.*?)(?=^##|\Z)', page,
                             re.MULTILINE | re.DOTALL))
  assert list(sections) == [kind.__name__ for kind in errors.KINDS]
  for kind in errors.KINDS:
    assert kind.meaning and kind.remedy, kind
    assert flat(kind.meaning) in flat(sections[kind.__name__]), kind
    assert flat(kind.remedy) in flat(sections[kind.__name__]), kind


def test_every_error_of_the_package_is_of_one_kind_and_on_the_page():
  page = PAGE.read_text()
  sections = dict(re.findall(r'^### (\w+)\n(.*?)(?=^##|\Z)', page,
                             re.MULTILINE | re.DOTALL))
  classes = [c for c in every_error_class() if c not in errors.KINDS]
  assert len(classes) >= 12
  for cls in classes:
    kind = next(k for k in errors.KINDS if issubclass(cls, k))   # one kind
    assert sum(issubclass(cls, k) for k in errors.KINDS) == 1, cls
    module = cls.__module__.removeprefix('qagan_jax.')
    assert f'`{module}.{cls.__name__}`' in sections[kind.__name__], (
        f'{cls.__name__} is not listed under {kind.__name__} in {PAGE.name}')


class FakeXlaError(jax.errors.JaxRuntimeError):
  pass


@pytest.mark.parametrize('error, expected', [
    (errors.ConfigurationError('train.b1 must be in [0, 1)'),
     'train.b1 must be in [0, 1)'),
    (FileNotFoundError('no such file: pristine.npz'), 'pristine.npz'),
    # as XLA reports an allocation that does not fit, on a GPU
    (FakeXlaError('RESOURCE_EXHAUSTED: Out of memory while trying to '
                  'allocate 18253611008 bytes.\nBufferAssignment OOM '
                  'Debugging.'),
     ('the devices ran out of memory (RESOURCE_EXHAUSTED: Out of memory '
      'while trying to allocate 18253611008 bytes.)', 'train.batch_size',
      'resumes from its newest checkpoint')),
    (MemoryError(), ('the host ran out of memory.', 'train.batch_size')),
    (FakeXlaError('INTERNAL: an XLA bug'), None),
    (RuntimeError('a bug of the package'), None),
    (KeyError('generator'), None),
])
def test_the_command_line_tells_a_failure_in_one_line_and_a_bug_in_full(
    error, expected):
  from qagan_jax import main  # pylint: disable=g-import-not-at-top
  message = main.failure_message(error)
  if expected is None:
    assert message is None      # a bug: its traceback is shown
  else:
    for part in (expected,) if isinstance(expected, str) else expected:
      assert part in message, message
    assert 'Traceback' not in message and '\nBufferAssignment' not in message


def test_install_hints_name_the_packages_of_each_extra():
  """`pip install "qagan-jax[prepare]"` needs a published package; the
  hints name the extra's packages for this platform, as setup.cfg lists
  them, and work however the package was installed."""
  parser = configparser.ConfigParser()
  parser.read(PAGE.parents[1] / 'setup.cfg')
  extras = parser['options.extras_require']
  for extra in ('prepare', 'convert', 'gcs'):
    wanted = []
    for line in extras[extra].splitlines():
      requirement = line.split('#')[0].strip()
      if not requirement:
        continue
      name, _, marker = requirement.partition(';')
      if marker and not markers.Marker(marker).evaluate():
        continue
      wanted.append(name.strip())
    command = errors.install_command(extra)
    assert command.startswith('pip install '), command
    assert sorted(shlex.split(command)[2:]) == sorted(wanted), (extra, command)
  source = PAGE.parents[1] / 'qagan_jax'
  stale = [str(path) for path in source.rglob('*.py')
           if re.search(r'qagan[-_]jax\[', path.read_text())]
  assert not stale, stale
