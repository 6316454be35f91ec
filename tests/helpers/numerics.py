"""Tolerances for comparing two float32 computations that may sum in another order.

The rule of this suite. Two float32 computations of the same quantity that
may reduce in a different order (another device count, another process
count, another compilation, jit against eager, a batch against its parts)
are compared leaf by leaf with

    |actual - expected| <= rel * max|expected leaf|

where `rel` is written at the call site as a number of float32 ulps,
`ulps(n) = n * EPS`, with n derived from the computation: about sqrt(terms)
for one sum of `terms` values in another order (rounding errors of a
reordered sum add up like a random walk), times what amplifies them
afterwards (a condition number, the training steps that follow), and with
what a real bug would change at that scale said next to it. Never a bare
absolute number tuned on one machine: the same comparison must hold on
every CPU, GPU and TPU, with one core or many.

Computations expected to be bit-identical (the same compiled program on the
same inputs, such as an interrupted and resumed run against an
uninterrupted one) are compared exactly instead.

With QAGAN_REPORT_TOLERANCES=1 in the environment (and pytest -s), each
comparison prints how much of its tolerance the worst leaf used.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from typing import Callable

import chex
import jax
import numpy as np

EPS = float(np.finfo(np.float32).eps)       # 2^-23: one ulp of 1.0


def ulps(n: float) -> float:
  """`n` float32 ulps, as a tolerance relative to a value's magnitude."""
  return n * EPS


def reordered_sum(terms: int, amplification: float = 1.0) -> float:
  """The relative tolerance of a float32 sum of `terms` values computed in
  another order, times `amplification`: 4 sqrt(terms) ulps (four standard
  deviations of the random-walk rounding error), at least 4 ulps."""
  return ulps(4 * max(math.sqrt(terms), 1.0) * amplification)


def _report(used: float) -> None:
  """With QAGAN_REPORT_TOLERANCES set: what share of its tolerance a
  comparison used, and where."""
  if os.environ.get('QAGAN_REPORT_TOLERANCES'):
    caller = inspect.stack()[2]
    print(f'tolerance used: {used:.3f} at {os.path.basename(caller.filename)}'
          f':{caller.lineno}', file=sys.stderr)


def magnitude(tree) -> float:
  """The largest magnitude of `tree`'s floating leaves (0 if none)."""
  return max((float(np.max(np.abs(leaf), initial=0.0)) for leaf in
              jax.tree_util.tree_leaves(jax.device_get(tree))
              if np.issubdtype(np.asarray(leaf).dtype, np.floating)),
             default=0.0)


def assert_trees_close(actual, expected, rel: float,
                       skip: Callable[[str], bool] | None = None,
                       floor: float = 0.0) -> int:
  """Each floating leaf of `actual` equals `expected`'s within `rel` times
  the largest magnitude of that leaf of `expected` (or `floor`, if larger);
  other leaves exactly. `skip(path)` leaves out the leaves it is true for.
  Returns the number of leaves compared; the trees must have one structure."""
  chex.assert_trees_all_equal_structs(actual, expected)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(expected))[0]
  compared, used = 0, 0.0
  for (path, e), a in zip(flat, jax.tree_util.tree_leaves(
      jax.device_get(actual))):
    name = jax.tree_util.keystr(path)
    if skip is not None and skip(name):
      continue
    e, a = np.asarray(e), np.asarray(a)
    if np.issubdtype(e.dtype, np.floating):
      scale = max(float(np.max(np.abs(e), initial=0.0)), floor)
      if scale:
        used = max(used, float(np.max(np.abs(np.float64(a) - e), initial=0.0))
                   / (rel * scale))
      np.testing.assert_allclose(a, e, rtol=0, atol=rel * scale,
                                 err_msg=f'{name} (|leaf| <= {scale:.3g})')
    else:
      np.testing.assert_array_equal(a, e, err_msg=name)
    compared += 1
  _report(used)
  return compared


def kind_of(path: str) -> str:
  """The group of a train-state leaf whose magnitudes are alike: its field,
  and for optimiser states the moment ('.gen_opt_state[0].mu'), from its
  path as `jax.tree_util.keystr` writes it."""
  field = path.lstrip('.').replace('[', '.').split('.')[0]
  for moment in ('.mu', '.nu'):
    if moment in path:
      return f'.{field}{moment}'
  return f'.{field}'


def flatten(tree) -> dict[str, np.ndarray]:
  """{keystr path: host array} of `tree`'s leaves."""
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def _scales(flat: dict[str, np.ndarray]) -> dict[str, float]:
  scales: dict[str, float] = {}
  for name, e in flat.items():
    if np.issubdtype(e.dtype, np.floating):
      scales[kind_of(name)] = max(scales.get(kind_of(name), 0.0),
                                  float(np.max(np.abs(e), initial=0.0)))
  return scales


def assert_states_close(actual, expected, rel: float,
                        skip: Callable[[str], bool] | None = None) -> int:
  """Train states equal within `rel` of the largest magnitude of each kind
  of leaf (`kind_of`: the generator's parameters, the critic's Adam first
  moments, ...): rounding in a network's sums is relative to the magnitudes
  flowing through that network, so a leaf whose own values are tiny (a bias
  with a zero true gradient) is held to the network's scale, not to its
  own. Integer leaves exactly. `actual` and `expected` are pytrees, or dicts
  {keystr path: array} (`flatten`). Returns the number of leaves compared."""
  if not isinstance(expected, dict):
    chex.assert_trees_all_equal_structs(actual, expected)
    actual, expected = flatten(actual), flatten(expected)
  assert actual.keys() == expected.keys()
  scales = _scales(expected)
  compared = 0
  kept = {n: e for n, e in expected.items() if skip is None or not skip(n)}
  _report(worst_relative_difference({n: actual[n] for n in kept}, kept,
                                    scales) / rel)
  for name, e in kept.items():
    a = np.asarray(actual[name])
    if np.issubdtype(e.dtype, np.floating):
      scale = scales[kind_of(name)]
      np.testing.assert_allclose(
          a, e, rtol=0, atol=rel * scale,
          err_msg=f'{name} ({kind_of(name)} up to {scale:.3g}; allowed '
                  f'{rel:.2g} of it)')
    else:
      np.testing.assert_array_equal(a, e, err_msg=name)
    compared += 1
  return compared


def worst_relative_difference(actual, expected, scales=None) -> float:
  """max |actual - expected| / (the magnitude of its kind) over the floating
  leaves: what `assert_states_close` compares with `rel`."""
  if not isinstance(expected, dict):
    actual, expected = flatten(actual), flatten(expected)
  scales = scales or _scales(expected)
  return max((float(np.abs(np.asarray(actual[n], np.float64) - e).max(
      initial=0.0)) / scales[kind_of(n)] for n, e in expected.items()
              if np.issubdtype(e.dtype, np.floating) and scales[kind_of(n)]),
             default=0.0)
