"""How the project's programs are compiled: XLA options per platform.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. YNNPACK's
convolutions are slower than XLA's own (Eigen) ones everywhere we measured,
and catastrophically so for the gradient with respect to the kernel, which
XLA expresses as a convolution with a window as large as the image: for a
3x3, 128 -> 128 convolution of a 64x32x32x128 batch on a 2-core CPU the
kernel gradient takes 2.9 s through YNNPACK and 0.32 s through Eigen (the
forward pass 0.33 s and 0.28 s), and a 1x1 one on twice that batch 5.5 s
against 0.16 s (`python experiments/benchmark_conv.py`). A WGAN-GP training
iteration at 32x32, width 128, batch 64 goes from 121 s to 43 s.

`compiler_options(platform)` keeps YNNPACK for matrix products and turns it
off for convolutions on CPUs; `jit` is `jax.jit` with those options for the
default backend. Programs that run once, such as parameter initialisation,
ask for `quick=True`: on CPUs LLVM then optimises at level 0, which compiles
the initialisation of the demo's networks in 2.0 s instead of 6.4 s with
bit-identical results (its threefry random bits dominate the compile).
Accelerators get no options, so their programs are exactly what `jax.jit`
makes. A jaxlib that does not know the option (older or newer
than the ones tested) gets none: correct, only slower on CPUs.

`use_persistent_cache(run.compilation_cache)` turns on JAX's persistent
compilation cache for a run (by default in the user cache, beside the
reference statistics): a resumed run, the sample and evaluate modes, a
preflight check followed by its run, or a second run of a config load
their programs from disk instead of compiling them again.

`program_bytes(compiled)` is the device memory a compiled program needs by
XLA's own plan: the figure `--mode=check` reports, and the one an
out-of-memory error in training is told with.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental.compilation_cache import compilation_cache

from qagan_jax import storage

log = logging.getLogger(__name__)

# Library fusions XLA:CPU may hand to YNNPACK: matrix products only.
_CPU_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',
}
# For programs that run once: compile fast rather than run fast.
_QUICK_CPU_OPTIONS = {'xla_backend_optimization_level': 0}


@functools.cache
def _cpu_options_supported() -> bool:
  """Whether this jaxlib's CPU compiler accepts `_CPU_OPTIONS` and
  `_QUICK_CPU_OPTIONS` (probed together: one tiny compilation)."""
  try:
    x = jax.device_put(jnp.zeros((), jnp.float32), jax.devices('cpu')[0])
    jax.jit(lambda x: x + 1).lower(x).compile(
        compiler_options=_CPU_OPTIONS | _QUICK_CPU_OPTIONS)
  except Exception:  # pylint: disable=broad-except
    # INVALID_ARGUMENT for an unknown option or value: compile without.
    return False
  return True


def compiler_options(platform: str | None = None, *,
                     quick: bool = False) -> dict[str, Any]:
  """XLA options for programs compiled for `platform` ('cpu', 'gpu', 'tpu',
  ...; default: the default backend's). Empty except on CPUs; `quick` for
  programs that run once (faster to compile, slower to run)."""
  platform = platform or jax.default_backend()
  if platform == 'cpu' and _cpu_options_supported():
    return _CPU_OPTIONS | (_QUICK_CPU_OPTIONS if quick else {})
  return {}


def jit(fun: Callable, *, platform: str | None = None, quick: bool = False,
        **kwargs):
  """`jax.jit(fun, **kwargs)` compiled with `compiler_options(platform,
  quick=quick)`."""
  return jax.jit(fun, compiler_options=compiler_options(
      platform, quick=quick) or None, **kwargs)


# The persistent cache this package sets up: every program, however quick to
# compile (the demo's 103 programs, 2 MB; JAX's default keeps only those
# that took a second), least recently used ones evicted beyond this size.
PERSISTENT_CACHE_BYTES = 2 * 2**30


def persistent_cache_dir(setting: str) -> str | None:
  """The folder of JAX's persistent compilation cache that
  `run.compilation_cache = setting` asks for: '' the one JAX is already
  configured with (JAX_COMPILATION_CACHE_DIR), else `jax/` in the user
  cache (storage.user_cache_dir); 'none' none; anything else that folder."""
  if setting == 'none':
    return None
  if setting:
    return os.path.abspath(os.path.expanduser(setting))
  return jax.config.jax_compilation_cache_dir or os.path.join(
      storage.user_cache_dir(), 'jax')


def use_persistent_cache(setting: str) -> str | None:
  """Points JAX's persistent compilation cache where `setting` says
  (`persistent_cache_dir`) for the programs compiled from now on in this
  process; returns the folder, or None when off. A folder of this
  package's choosing keeps every program (PERSISTENT_CACHE_BYTES at
  most); one JAX was already configured with is used as configured. A
  folder that cannot be written leaves the cache off, with one warning: it
  only saves time."""
  folder = persistent_cache_dir(setting)
  if folder is not None:
    try:
      os.makedirs(folder, exist_ok=True)
      writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
      writable = False
    if not writable:
      log.warning('The compilation cache %s is not writable; compiling '
                  'without it. Set run.compilation_cache to a writable '
                  "folder, or to 'none'.", folder)
      folder = None
  current = (jax.config.jax_compilation_cache_dir
             if jax.config.jax_enable_compilation_cache else None)
  if folder == current:
    return folder
  compilation_cache.reset_cache()     # JAX opens its cache once
  jax.config.update('jax_enable_compilation_cache', folder is not None)
  if folder is not None:
    jax.config.update('jax_compilation_cache_dir', folder)
    jax.config.update('jax_compilation_cache_max_size', PERSISTENT_CACHE_BYTES)
    if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return folder


def program_bytes(compiled) -> int | None:
  """Device memory a compiled program needs at its peak, by XLA's analysis:
  its arguments, outputs and temporaries, less the donated buffers reused
  for outputs (None where the backend does not say)."""
  try:
    memory = compiled.memory_analysis()
  except (NotImplementedError, AttributeError):
    return None
  if memory is None:
    return None
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def device_memory_limit() -> int | None:
  """Bytes a local device may hold (None where the platform does not say,
  as XLA:CPU)."""
  return (jax.local_devices()[0].memory_stats() or {}).get('bytes_limit')
