"""qagan_jax: Quality Aware GANs (Kancharla & Channappayya, NeurIPS 2019) in JAX.

The quality functions are imported on first use (`from qagan_jax import
ssim_distance` works as usual): `python -m qagan_jax.main` imports this
package before its own code runs, and it takes charge of Ctrl-C before
JAX (a second of imports) is loaded.
"""

from __future__ import annotations

import importlib
import typing

__version__ = '0.1.0'

_QUALITY = ('PristineModel', 'QAGAN_SSIM', 'niqe_score', 'rgb_to_grayscale',
            'ssim', 'ssim_distance')

__all__ = ['PristineModel', 'QAGAN_SSIM', 'niqe_score', 'rgb_to_grayscale',
           'ssim', 'ssim_distance', '__version__']

if typing.TYPE_CHECKING:     # what static tools and IDEs read
  from qagan_jax.quality import niqe_score  # pylint: disable=g-bad-import-order
  from qagan_jax.quality import PristineModel
  from qagan_jax.quality import QAGAN_SSIM
  from qagan_jax.quality import rgb_to_grayscale
  from qagan_jax.quality import ssim
  from qagan_jax.quality import ssim_distance


def __getattr__(name: str):
  if name in _QUALITY:
    value = getattr(importlib.import_module('qagan_jax.quality'), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'qagan_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted({*globals(), *_QUALITY})
