"""Shared fixtures: the reference data beside the repository, and small helpers."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_reference_dir() -> pathlib.Path | None:
  """`../shared/reference` beside the repository (or $QAGAN_SHARED_REFERENCE)."""
  path = pathlib.Path(os.environ.get(
      'QAGAN_SHARED_REFERENCE', REPO_ROOT.parent / 'shared' / 'reference'))
  return path if path.is_dir() else None


@pytest.fixture(scope='session')
def reference_dir() -> pathlib.Path:
  path = shared_reference_dir()
  if path is None:
    pytest.skip('reference data not found: expected ../shared/reference beside '
                'the repository (or set QAGAN_SHARED_REFERENCE)')
  return path
