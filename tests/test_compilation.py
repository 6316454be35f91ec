"""XLA options per platform: XLA's own convolutions on CPUs, nothing on accelerators."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental.compilation_cache import compilation_cache

from helpers import numerics
from qagan_jax import compilation
from qagan_jax import train
from qagan_jax import train_state

CONV_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _conv_score(x, kernel):
  return jnp.sum(jnp.tanh(lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=CONV_DIMS)))


def _ynn_convolutions(hlo_text: str) -> int:
  """Convolutions inside YNNPACK library fusions of an optimised HLO module."""
  fused = set(re.findall(r'kind=kCustom, calls=%?([\w.\-]+)[^\n]*__ynn_fusion',
                         hlo_text))
  count = 0
  for name in fused:
    body = re.search(r'\n%?' + re.escape(name) + r' \([^\n]*\{\n(.*?)\n\}',
                     hlo_text, re.S)
    count += bool(body and ' convolution(' in body.group(1))
  return count


def test_accelerators_get_no_options():
  for platform in ('gpu', 'cuda', 'rocm', 'tpu'):
    assert compilation.compiler_options(platform) == {}


def test_an_unknown_option_falls_back_to_none(monkeypatch):
  monkeypatch.setattr(compilation, '_CPU_OPTIONS', {
      'xla_cpu_experimental_ynn_fusion_type': 'NOT_A_FUSION_TYPE'})
  compilation._cpu_options_supported.cache_clear()
  try:
    assert compilation.compiler_options('cpu') == {}
  finally:
    monkeypatch.undo()
    compilation._cpu_options_supported.cache_clear()
  assert compilation.compiler_options('cpu')


def test_cpu_kernel_gradients_are_not_ynnpack_convolutions():
  # The kernel gradient of a 3x3 convolution, at a size where this jaxlib's
  # defaults hand it to YNNPACK (~10x slower than XLA's own convolution).
  x = jax.ShapeDtypeStruct((16, 32, 32, 32), jnp.float32)
  kernel = jax.ShapeDtypeStruct((3, 3, 32, 32), jnp.float32)
  gradient = jax.grad(_conv_score, argnums=(0, 1))
  default = jax.jit(gradient).lower(x, kernel).compile().as_text()
  if not _ynn_convolutions(default):
    pytest.skip('this jaxlib does not hand convolutions to YNNPACK')
  ours = compilation.jit(gradient, platform='cpu').lower(x, kernel).compile()
  assert _ynn_convolutions(ours.as_text()) == 0
  assert ' convolution(' in ours.as_text()


def test_cpu_options_keep_values_and_derivatives():
  # Values, first derivatives and the gradient penalty's second derivatives
  # (reverse over reverse) of a small convolution stack, with and without
  # the options: the same sums in another order.
  # 32 channels: XLA's defaults give convolutions this wide to YNNPACK.
  x = jax.random.normal(jax.random.key(0), (4, 17, 15, 3))
  kernels = [0.2 * jax.random.normal(jax.random.key(i), shape) for i, shape in
             enumerate([(3, 3, 3, 32), (1, 1, 32, 32), (3, 3, 32, 32)], 1)]

  def critic(kernels, images):
    h = images
    for i, k in enumerate(kernels):
      h = lax.conv_general_dilated(h, k, (1 + i % 2,) * 2,
                                   'VALID' if i == 1 else 'SAME',
                                   dimension_numbers=CONV_DIMS)
      h = jax.nn.relu(h) if i < len(kernels) - 1 else h
    return jnp.mean(h, axis=(1, 2, 3))

  def everything(kernels, images):
    scores = critic(kernels, images)
    first = jax.grad(lambda k, x: critic(k, x).sum(), argnums=(0, 1))(
        kernels, images)

    def penalty(k):
      grads = jax.grad(lambda x: critic(k, x).sum())(images)
      norms = jnp.sqrt(jnp.sum(grads**2, axis=(1, 2, 3)))
      return jnp.mean((norms - 1)**2)

    return scores, first, jax.grad(penalty)(kernels)

  default = jax.jit(everything).lower(kernels, x).compile()
  ours = compilation.jit(everything, platform='cpu').lower(kernels, x).compile()
  assert _ynn_convolutions(ours.as_text()) == 0
  # the longest sums: 3 x 3 x 32-term convolutions over 17 x 15 pixels
  numerics.assert_trees_close(ours(kernels, x), default(kernels, x),
                              numerics.reordered_sum(3 * 3 * 32 * 17 * 15))


@pytest.mark.slow
def test_train_step_is_the_same_with_the_cpu_options():
  # Width 32: the narrowest network whose convolutions XLA's defaults give
  # to YNNPACK.
  config = train_state.default_config()
  config.model.width = 32
  config.train.n_critic = 1
  setup = train_state.build(config)
  mesh = train.make_mesh(jax.devices()[:1])
  real = jax.random.uniform(jax.random.key(3), (1, 16, 32, 32, 3),
                            minval=-1, maxval=1)
  states = {}
  for name, options in (('ours', None), ('xla', {})):
    step = train.make_train_step(setup, mesh, batch_size=16,
                                 generator_batch_size=16,
                                 compiler_options=options)
    state = train_state.create_train_state(setup, jax.random.PRNGKey(0))
    compiled = step.lower(state, real).compile()
    ynn = _ynn_convolutions(compiled.as_text())
    assert ynn == 0 if name == 'ours' else ynn > 0
    states[name], _ = compiled(state, real)
  # Adam's first step moves each parameter by lr * g / (|g| + 1e-8): about
  # lr = 2e-4 whatever the gradient's size, so a real difference shows at
  # that scale. Where |g| is near zero (here: below 1e-3 of the network's
  # largest gradient) the step's size and sign follow the rounding of g and
  # the order of the sums; there the gradients are compared instead (Adam's
  # first moment).
  # Every bias of the generator's dense layer and block convolutions reaches
  # the output only through BatchNorms, which remove per-channel constants:
  # its gradient is zero in exact arithmetic, and what float32 leaves of it
  # is the cancellation error of the BatchNorm backward pass (up to 1e-2 of
  # the largest gradient here): such leaves are not compared.
  zero_gradient = lambda key: ('.gen' in key and "['bias']" in key and not any(
      f"['{n}']" in key for n in ('output', 'norm1', 'norm2', 'output_norm')))
  gradients, scales = {}, {}
  for net in ('gen', 'critic'):
    adam = getattr(states['xla'], f'{net}_opt_state')[0]
    for path, g in jax.tree_util.tree_flatten_with_path(adam.mu)[0]:
      gradients[f'.{net}_params' + jax.tree_util.keystr(path)] = np.asarray(g)
    for moment in ('mu', 'nu'):
      scales[net, moment] = max(float(np.abs(leaf).max()) for leaf in
                                jax.tree.leaves(getattr(adam, moment)))
  flat = jax.tree_util.tree_flatten_with_path(states['xla'])[0]
  ours = jax.tree.leaves(states['ours'])
  checked, conditioned = 0, np.zeros(2)
  for (path, expected), actual in zip(flat, ours):
    key = jax.tree_util.keystr(path)
    expected, actual = np.asarray(expected), np.asarray(actual)
    if not np.issubdtype(expected.dtype, np.floating):
      np.testing.assert_array_equal(actual, expected, err_msg=key)
      continue
    if zero_gradient(key):
      continue
    if '_opt_state' in key:
      # Adam's moments: the raw gradients (b1 = 0) and their squares, to
      # 3e-4 of their largest value in the network. Measured: the two
      # compilations differ by up to 1.4e-4 (generator) and 6e-5 (critic);
      # against the same step computed in float64 they are off by 7.6e-5 /
      # 3.4e-5 (these options) and 6.7e-5 / 2.0e-6 (XLA's defaults): float32
      # rounding, amplified by the BatchNorms of 4x4 maps and the penalty's
      # second derivatives.
      net = 'gen' if key.startswith('.gen') else 'critic'
      moment = 'mu' if '.mu' in key else 'nu'
      np.testing.assert_allclose(actual, expected, rtol=0,
                                 atol=3e-4 * scales[net, moment], err_msg=key)
    else:
      where = ...
      if key in gradients:
        net = 'gen' if key.startswith('.gen') else 'critic'
        where = np.abs(gradients[key]) > 1e-3 * scales[net, 'mu']
        conditioned += [where.sum(), where.size]
      # 5% of the step Adam takes
      np.testing.assert_allclose(actual[where], expected[where], rtol=0,
                                 atol=0.05 * config.train.learning_rate,
                                 err_msg=key)
    checked += 1
  assert checked > 50
  assert conditioned[0] > 0.5 * conditioned[1]   # most parameters compared


@pytest.fixture
def jax_cache_settings():
  """Restores JAX's persistent-cache settings (the suite's) afterwards."""
  names = ('jax_compilation_cache_dir', 'jax_enable_compilation_cache',
           'jax_compilation_cache_max_size',
           'jax_persistent_cache_min_compile_time_secs')
  saved = {name: getattr(jax.config, name) for name in names}
  yield
  compilation_cache.reset_cache()
  for name, value in saved.items():
    jax.config.update(name, value)


def test_the_persistent_cache_goes_where_run_compilation_cache_says(
    tmp_path, monkeypatch, caplog, jax_cache_settings):
  del jax_cache_settings
  suite = jax.config.jax_compilation_cache_dir
  assert suite     # tests/conftest.py's
  # '': the folder JAX is configured with is used as configured
  assert compilation.use_persistent_cache('') == suite
  # a folder of the run's: every program, the size capped
  mine = tmp_path / 'programs'
  assert compilation.use_persistent_cache(str(mine)) == str(mine)
  assert jax.config.jax_compilation_cache_dir == str(mine) and mine.is_dir()
  assert jax.config.jax_enable_compilation_cache
  assert (jax.config.jax_compilation_cache_max_size
          == compilation.PERSISTENT_CACHE_BYTES)
  jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(5)).block_until_ready()
  assert list(mine.glob('*-cache'))     # written there
  # 'none': off
  assert compilation.use_persistent_cache('none') is None
  assert not jax.config.jax_enable_compilation_cache
  # '' with nothing configured: the user cache, beside the references
  monkeypatch.setenv('QAGAN_JAX_CACHE', str(tmp_path / 'user'))
  jax.config.update('jax_compilation_cache_dir', None)
  assert compilation.use_persistent_cache('') == str(tmp_path / 'user' / 'jax')
  # a folder that cannot be made: compiled without, one warning naming the
  # setting
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  with caplog.at_level('WARNING'):
    assert compilation.use_persistent_cache(str(a_file / 'jax')) is None
  assert 'run.compilation_cache' in caplog.text and str(a_file) in caplog.text
  assert not jax.config.jax_enable_compilation_cache


def test_program_bytes_counts_arguments_outputs_and_donations():
  """XLA's plan of a program's memory: 4 KB in and 4 KB out for a float32
  [1024] map, of which a donated argument gives its 4 KB back."""
  x = jnp.zeros(1024, jnp.float32)
  kept = jax.jit(lambda v: v * 2 + 1).lower(x).compile()
  donated = jax.jit(lambda v: v * 2 + 1, donate_argnums=0).lower(x).compile()
  assert compilation.program_bytes(kept) >= 2 * 4096
  assert (compilation.program_bytes(kept) - compilation.program_bytes(donated)
          == 4096)

  class Unplanned:   # a backend that does not say
    def memory_analysis(self):
      raise NotImplementedError
  assert compilation.program_bytes(Unplanned()) is None
