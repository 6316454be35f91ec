"""Where one training iteration spends its time, operation by operation.

    python experiments/profile_step.py [--width 128] [--batch 64] [--method wgangp]
        [--xla-defaults] [--top 5]

Compiles the train step as `experiments/benchmark_train.py` does (32x32,
random real batches, all local devices), runs it once to warm up, then once
under `jax.profiler`, and prints the costliest operations of the optimised
XLA program with the JAX operation each comes from, their share of the
iteration, and totals per kind of operation.

XLA:CPU runs its own (Eigen) convolutions asynchronously, so the profiler
sees only their dispatch: each distinct convolution of the program is then
compiled alone with the same options and timed (median of 3), and that time
stands for every occurrence. Everything else (YNNPACK fusions included) is
timed by the profiler in place. --xla-defaults compiles with XLA's default
options instead of `qagan_jax.compilation.compiler_options` (on CPUs:
YNNPACK convolutions), to see the difference.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.profiler import ProfileData

from qagan_jax import compilation
from qagan_jax import train
from qagan_jax import train_state

_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?([\w.\-]+) = (\w+\[[\d,]*\])\S* (\S+?)\((.*)$')


def parse_hlo(text: str):
  """Instruction name -> (opcode, shape, rest of line), and computations."""
  instructions, computations, current = {}, {}, None
  for line in text.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) \(.*\{$', line)
    if header:
      current = computations.setdefault(header.group(1), [])
      continue
    found = _INSTRUCTION.match(line)
    if found:
      name, shape, opcode, rest = found.groups()
      instructions[name] = (opcode, shape, rest)
      if current is not None:
        current.append(name)
  return instructions, computations


_DTYPES = {'f32': jnp.float32, 'f64': jnp.float64, 'bf16': jnp.bfloat16,
           'f16': jnp.float16}


def _shape(text):
  dtype, dims = re.match(r'(\w+)\[([\d,]*)\]', text).groups()
  return _DTYPES[dtype], tuple(int(d) for d in dims.split(',') if d)


def _spec(labels, batch, feature):
  """'b01f' -> (batch index, feature index, spatial indices)."""
  spatial = sorted((c, i) for i, c in enumerate(labels) if c.isdigit())
  return (labels.index(batch), labels.index(feature),
          *(i for _, i in spatial))


def rebuild_convolution(rest, shapes, options):
  """A compiled single convolution equal to an HLO `convolution(...)` line."""
  operands = re.findall(r'%([\w.\-]+)', rest.split(')')[0])
  lhs_dtype, lhs_shape = _shape(shapes[operands[0]])
  _, rhs_shape = _shape(shapes[operands[1]])
  window = dict(re.findall(r'(\w+)=([\w_x\-]+)', re.search(
      r'window=\{([^}]*)\}', rest).group(1)))
  size = [int(s) for s in window['size'].split('x')]
  pads = [tuple(int(p) for p in pair.split('_'))
          for pair in window.get('pad', 'x'.join(['0_0'] * len(size))).split('x')]
  ones = 'x'.join(['1'] * len(size))
  stride = [int(s) for s in window.get('stride', ones).split('x')]
  lhs_dilate = [int(s) for s in window.get('lhs_dilate', ones).split('x')]
  rhs_dilate = [int(s) for s in window.get('rhs_dilate', ones).split('x')]
  lhs_labels, rhs_labels, out_labels = re.match(
      r'(\w+)_(\w+)->(\w+)', re.search(r'dim_labels=(\S+?),', rest + ',')
      .group(1)).groups()
  numbers = jax.lax.ConvDimensionNumbers(
      _spec(lhs_labels, 'b', 'f'), _spec(rhs_labels, 'o', 'i'),
      _spec(out_labels, 'b', 'f'))
  groups = int((re.search(r'feature_group_count=(\d+)', rest) or
                re.match('()', '1')).group(1) or 1)
  batch_groups = int((re.search(r'batch_group_count=(\d+)', rest) or
                      re.match('()', '1')).group(1) or 1)
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, stride, pads, lhs_dilate, rhs_dilate, numbers,
      feature_group_count=groups, batch_group_count=batch_groups)
  args = (jnp.ones(lhs_shape, lhs_dtype), jnp.ones(rhs_shape, lhs_dtype))
  compiled = jax.jit(conv, compiler_options=options or None).lower(
      *args).compile()
  return compiled, args, size


def time_compiled(compiled, args, repeats=3):
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--method', default='wgangp',
                      choices=['wgangp', 'ssim', 'niqe'])
  parser.add_argument('--n-critic', type=int, default=5)
  parser.add_argument('--xla-defaults', action='store_true')
  parser.add_argument('--top', type=int, default=5)
  parser.add_argument('--tracer-level', type=int, default=1,
                      help='jax.profiler host tracer level (1 costs least)')
  args = parser.parse_args()

  config = train_state.default_config()
  config.model.width = args.width
  config.loss.method = args.method
  config.train.batch_size = args.batch
  config.train.n_critic = args.n_critic
  config.train.generator_batch_size = 2 * args.batch
  setup = train_state.build(config)
  mesh = train.make_mesh()
  options = {} if args.xla_defaults else compilation.compiler_options(
      mesh.devices.flat[0].platform)
  step = train.make_train_step(setup, mesh, batch_size=args.batch,
                               generator_batch_size=2 * args.batch,
                               compiler_options=options)
  state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
  real = jnp.asarray(np.random.default_rng(0).uniform(
      -1, 1, (config.train.n_critic, args.batch, 32, 32, 3)), jnp.float32)
  compiled = step.lower(state, real).compile()
  state, _ = compiled(state, real)
  jax.block_until_ready(state)

  trace_dir = tempfile.mkdtemp(prefix='qagan-profile-')
  start = time.perf_counter()
  options_ = jax.profiler.ProfileOptions()
  options_.host_tracer_level = int(args.tracer_level)
  options_.python_tracer_level = 0
  with jax.profiler.trace(trace_dir, profiler_options=options_):
    state, metrics = compiled(state, real)
    jax.block_until_ready((state, metrics))
  wall = time.perf_counter() - start
  profile = ProfileData.from_file(sorted(glob.glob(
      f'{trace_dir}/**/*.xplane.pb', recursive=True))[-1])
  traced = collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      for event in line.events:
        traced[event.name] += event.duration_ns / 1e9

  instructions, computations = parse_hlo(compiled.as_text())
  shapes = {name: shape for name, (_, shape, _) in instructions.items()}
  fused = {name for opcode, _, rest in instructions.values()
           if opcode == 'fusion'
           for name in re.findall(r'calls=%?([\w.\-]+)', rest)}
  inside_fusions = {i for c in fused for i in computations.get(c, [])}
  rows = []   # (seconds, instruction, kind, shape, source)
  cache = {}
  for name, (opcode, shape, rest) in instructions.items():
    if name in inside_fusions or (name not in traced and
                                  opcode != 'convolution'):
      continue
    source = re.search(r'op_name="([^"]*)"', rest)
    source = source.group(1) if source else ''
    kind = re.sub(r'[.\d]+$', '', name)
    body = re.search(r'calls=%?([\w.\-]+)', rest)
    body_ops = [instructions[i][0] for i in computations.get(
        body.group(1), [])] if body else []
    operands = tuple(shapes.get(o, '?') for o in re.findall(
        r'%([\w.\-]+)', rest.split(')')[0]))
    if opcode == 'convolution':
      key = (shape, re.sub(r'%[\w.\-]+', '', rest.split('metadata=')[0]),
             operands)
      if key not in cache:
        cache[key] = time_compiled(*rebuild_convolution(rest, shapes,
                                                        options)[:2])
      seconds, kind = cache[key], 'convolution (Eigen, timed alone)'
    else:
      seconds = traced[name]
      if 'convolution' in body_ops:
        kind = 'convolution (YNNPACK fusion)'
      elif 'dot' in body_ops or opcode == 'dot':
        kind = 'dot'
    if opcode == 'convolution':   # what it convolves: forward or gradient
      shape = ' * '.join(operands) + ' -> ' + shape
    rows.append((seconds, name, kind, shape, source))

  total = sum(r[0] for r in rows)
  print(f'jax {jax.__version__}, {jax.devices()[0].platform}; '
        f'{args.method}, width {args.width}, batch {args.batch}, '
        f'{"XLA default options" if args.xla_defaults else "project options"}'
        f' {options}')
  print(f'iteration under the profiler: {wall:.1f} s; operations summed: '
        f'{total:.1f} s (2 threads can overlap operations)\n')
  # One operation: the same kind, shape and JAX source, wherever it occurs
  # (the unrolled critic steps repeat every operation n_critic times).
  grouped, occurrences = collections.Counter(), collections.Counter()
  for seconds, _, kind, shape, source in rows:
    source = re.sub(r'^jit\([^)]*\)/', '', source) or '(made by XLA)'
    grouped[kind, shape, source] += seconds
    occurrences[kind, shape, source] += 1
  print(f'{args.top} costliest operations (summed over their occurrences):')
  for (kind, shape, source), seconds in grouped.most_common(args.top):
    print(f'  {seconds:7.3f} s  {100 * seconds / wall:5.1f}%  '
          f'{occurrences[kind, shape, source]:3d} x {kind}: {shape}\n'
          f'{"":24s}{source}')
  by_kind = collections.Counter()
  counts = collections.Counter()
  for seconds, _, kind, _, _ in rows:
    by_kind[kind] += seconds
    counts[kind] += 1
  print('\nby kind:')
  for kind, seconds in by_kind.most_common(8):
    print(f'  {seconds:7.2f} s  {100 * seconds / wall:5.1f}%  '
          f'{counts[kind]:4d} x {kind}')


if __name__ == '__main__':
  main()
