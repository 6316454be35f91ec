"""Work shared out over the processes of a run: each its contiguous share of `count` rows, gathered in order.

An evaluation's samples and reference images are split this way: process p
computes rows [share(count)) of them, padded to `share_size(count)` rows so
that every process contributes arrays of one shape, and `gather` joins the
shares in process order. One process: its share is everything, and
`gather` returns its own rows.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def share_size(count: int) -> int:
  """Rows of every process's share of `count` (the last ones padded)."""
  return -(-count // jax.process_count())


def share(count: int) -> tuple[int, int]:
  """[start, stop) of this process's share of `count` items: contiguous,
  in process order, `share_size(count)` of them (fewer on the last ones)."""
  size = share_size(count)
  start = min(jax.process_index() * size, count)
  return start, min(start + size, count)


def padded(rows: np.ndarray, size: int) -> np.ndarray:
  """`rows` with zero rows after them, `size` in all (a share's padding)."""
  pad = size - len(rows)
  return np.concatenate([rows, np.zeros((pad,) + rows.shape[1:], rows.dtype)]
                        ) if pad else rows


def gather(parts: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
  """Every process's rows of `parts`, in process order, the first `count`.

  Each process holds the rows of its contiguous share of `count` samples
  (`share`), padded to the same number of rows (the padding is last,
  so the first `count` rows of the concatenation are the samples in order).
  One process: its own rows."""
  if jax.process_count() == 1:
    return {name: rows[:count] for name, rows in parts.items()}
  gathered = {}
  for name in sorted(parts):           # the same order on every process
    rows = np.asarray(parts[name])
    flags = rows.dtype == np.bool_
    joined = np.asarray(multihost_utils.process_allgather(
        rows.astype(np.uint8) if flags else rows, tiled=True))
    gathered[name] = (joined.astype(bool) if flags else joined)[:count]
  return gathered
