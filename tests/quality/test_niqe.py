"""NIQE against the MATLAB reference scores, numpy formulas and finite differences."""

import hashlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import scipy.ndimage
import scipy.special
from PIL import Image
from skimage import data as skdata

from helpers import numerics
from qagan_jax.quality import niqe
from qagan_jax.quality import nss


def load_reference(niqe_reference_dir):
  entries = json.loads((niqe_reference_dir / 'niqe_reference.json').read_text())
  return {e['file']: e for e in entries['images']}


REFERENCE_FILES = ['camera.png', 'camera_blur2.png', 'chelsea.png',
                   'coffee.png', 'coffee_noise10.png', 'rocket_noise25.png']


TID2013 = ['I03', 'I04', 'I06', 'I08', 'I19']


def flat_windows(gray) -> int:
  """How many 7x7 windows of a `[H, W]` image (borders replicated, as
  MATLAB's imfilter) are exactly flat: where MATLAB's score depends on how
  its filters round (docs/quality.md)."""
  padded = np.pad(gray, 3, mode='edge')
  windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7))
  return int(np.sum(windows.max(axis=(-2, -1)) == windows.min(axis=(-2, -1))))


def matlab_scored_images(niqe_reference_dir):
  """(name, uint8 [H, W], the MATLAB release's score): the six scored by
  the release in Octave, and the five TID2013 images scored in MATLAB."""
  cases = [(name, np.asarray(Image.open(niqe_reference_dir / 'images' / name)),
            entry['niqe'])
           for name, entry in load_reference(niqe_reference_dir).items()]
  tid = niqe_reference_dir.parent / 'tid2013'
  calibration = json.loads((tid / 'calibration.json').read_text())
  cases += [(e['name'], np.asarray(Image.open(tid / e['distorted']['file'])),
             e['niqe_matlab']) for e in calibration['images']]
  return cases


def test_matlab_mode_reproduces_the_matlab_release(niqe_reference_dir):
  """MATLAB's steps in float64 (the default for concrete images): the
  score of the release to 1e-5 wherever no 7x7 window is exactly flat (the
  six such images here agree to ~1e-6); where some are (five images, 0.6%
  to 32% of their windows), within 1%: MATLAB's filters round the flat
  windows' zero MSCN into small values of either sign, which its AGGD fits
  then count, and no ordering of float64 sums reproduces its rounding
  (docs/quality.md tabulates both)."""
  model = niqe.PristineModel.load(niqe_reference_dir / 'modelparameters.mat')
  errors = {}
  for name, image, expected in matlab_scored_images(niqe_reference_dir):
    score = float(niqe.niqe_score(image[..., None], model))
    errors[name] = score / expected - 1
    flat = flat_windows(image)
    assert abs(errors[name]) <= (1e-2 if flat else 1e-5), (name, flat, score,
                                                           expected)
  assert sum(abs(e) <= 1e-5 for e in errors.values()) >= 6, errors


def test_float32_path_is_within_a_percent_of_matlab(niqe_reference_dir):
  """The differentiable float32 path (what training runs, under jit):
  within 1% of the release on every image, flat windows included."""
  score = jax.jit(niqe.niqe_score)
  for name, image, expected in matlab_scored_images(niqe_reference_dir):
    np.testing.assert_allclose(float(score(image[..., None])), expected,
                               rtol=1e-2, err_msg=name)


@pytest.mark.parametrize('name', REFERENCE_FILES)
def test_features_of_the_octave_references(niqe_reference_dir, name):
  entry = load_reference(niqe_reference_dir)[name]
  image = np.asarray(Image.open(niqe_reference_dir / 'images' / name))
  assert image.shape == tuple(entry['shape'])
  found = nss.niqe_features(image[..., None], 96)
  assert found.features.shape[0] == entry['patches']
  mean, _ = niqe.mvg_fit(found.features, found.valid)
  # camera_blur2 has a few exactly flat windows, where MATLAB counts
  # rounding noise into the AGGD sides and this code counts exact zeros in
  # neither (nss module docstring): its MSCN scale differs by 1% there.
  np.testing.assert_allclose(mean, entry['mu_distparam'], rtol=1e-2, atol=1e-3)
  with jax.enable_x64(True):
    exact = nss.niqe_features(image[..., None].astype(np.float64), 96,
                              shape_estimate='grid')
    mean, _ = niqe.mvg_fit(exact.features, exact.valid)
  tolerance = 1e-2 if flat_windows(image) else 1e-6
  np.testing.assert_allclose(mean, entry['mu_distparam'], rtol=tolerance,
                             atol=tolerance)


def test_the_grid_estimate_is_matlabs_argmin():
  """`shape_from_ratio_grid` against MATLAB's estimate written out:
  `gam(argmin((r_gam - r).^2))` over the whole grid, on ratios across and
  beyond its range, and exactly between two grid points."""
  gam = 0.2 + 0.001 * np.arange(9801)
  gamma = scipy.special.gamma
  r_gam = gamma(2 / gam)**2 / (gamma(1 / gam) * gamma(3 / gam))
  rng = np.random.default_rng(3)
  ratios = np.concatenate([rng.uniform(r_gam[0] - 0.01, r_gam[-1] + 0.01, 500),
                           0.5 * (r_gam[1:400:7] + r_gam[2:401:7]),
                           r_gam[::97], [0.0, 1.0]])
  expected = gam[np.argmin((r_gam[None, :] - ratios[:, None])**2, axis=1)]
  with jax.enable_x64(True):
    found = np.asarray(nss.shape_from_ratio_grid(jnp.asarray(ratios)))
  np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)


def test_packaged_standard_model_is_the_matlab_model(niqe_reference_dir):
  mat = scipy.io.loadmat(niqe_reference_dir / 'modelparameters.mat')
  model = niqe.PristineModel.standard()
  np.testing.assert_array_equal(model.mean, mat['mu_prisparam'].ravel())
  np.testing.assert_array_equal(model.cov, mat['cov_prisparam'])
  loaded = niqe.PristineModel.load(niqe_reference_dir / 'modelparameters.mat')
  np.testing.assert_array_equal(loaded.cov, model.cov)


def test_reference_images_are_what_tests_data_readme_says(niqe_reference_dir):
  tid = niqe_reference_dir.parent / 'tid2013'
  for entry in json.loads((tid / 'calibration.json').read_text())['images']:
    for kind in ('reference', 'distorted'):
      content = (tid / entry[kind]['file']).read_bytes()
      assert hashlib.sha256(content).hexdigest() == entry[kind]['sha256']
  entries = load_reference(niqe_reference_dir)
  assert sorted(entries) == sorted(REFERENCE_FILES)
  files = {name: (niqe_reference_dir / 'images' / name).read_bytes()
           for name in REFERENCE_FILES}
  for name, content in files.items():
    assert hashlib.sha256(content).hexdigest() == entries[name]['sha256'], name
  images = {name: np.asarray(Image.open(io.BytesIO(content)))
            for name, content in files.items()}
  gray = lambda rgb: np.round(rgb.astype(np.float64) @ np.asarray(
      niqe.MATLAB_RGB2GRAY_WEIGHTS)).astype(np.uint8)
  camera = skdata.camera()
  made = {
      'camera.png': camera,
      'chelsea.png': gray(skdata.chelsea()),
      'coffee.png': gray(skdata.coffee()),
      'camera_blur2.png': np.round(scipy.ndimage.gaussian_filter(
          camera.astype(np.float64), 2.0, mode='reflect')).astype(np.uint8),
  }
  for name, expected in made.items():
    np.testing.assert_array_equal(images[name], expected, err_msg=name)
  # the noisy copies: their photograph plus noise of the stated size
  # (clipping at 0 and 255 shrinks it a little)
  for name, clean, sigma in (('coffee_noise10.png', made['coffee.png'], 10),
                             ('rocket_noise25.png', gray(skdata.rocket()), 25)):
    noise = images[name].astype(np.float64) - clean
    assert abs(noise.mean()) < 0.05 * sigma, name
    assert 0.9 * sigma < noise.std() < 1.01 * sigma, (name, noise.std())


def test_default_model_is_the_standard_model():
  image = skdata.camera()[:288, :384, None]
  np.testing.assert_allclose(
      niqe.niqe_score(image),
      niqe.niqe_score(image, niqe.PristineModel.standard()), rtol=0)


# --- distortions ---------------------------------------------------------------------


def jpeg(image, quality):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return np.asarray(Image.open(buffer))


def test_visible_distortions_raise_the_score():
  rng = np.random.default_rng(0)
  batch = []
  for name in ('astronaut', 'coffee'):
    image = getattr(skdata, name)()[:288, :384]
    blurred = np.stack([scipy.ndimage.gaussian_filter(image[..., c], 2.0)
                        for c in range(3)], axis=-1)
    noisy = image + rng.normal(0, 10, image.shape)
    batch += [image, np.round(blurred), np.clip(np.round(noisy), 0, 255),
              jpeg(image, 10)]
  scores = np.asarray(niqe.niqe_score(np.stack(batch).astype(np.uint8)))
  for original, blur, noise, jpeg10 in scores.reshape(2, 4):
    # blur sigma 2, noise sigma 10, JPEG quality 10 each clearly raise it
    assert min(blur, noise, jpeg10) > original + 1.0, scores


# --- the score's interface -------------------------------------------------------------


def test_score_batches_and_converts_colour_like_matlab():
  colour = np.stack([skdata.chelsea()[:192, :288], skdata.coffee()[:192, :288]])
  scores = niqe.niqe_score(colour[None])             # [1, 2, H, W, 3]
  assert scores.shape == (1, 2)
  # MATLAB's rgb2gray on uint8: weighted sum rounded to uint8.
  weights = np.asarray(niqe.MATLAB_RGB2GRAY_WEIGHTS)
  gray = np.round(colour.astype(np.float64) @ weights).astype(np.uint8)
  np.testing.assert_allclose(scores, niqe.niqe_score(gray[None, ..., None]),
                             rtol=1e-6)
  # Leading dimensions are independent images.
  np.testing.assert_allclose(scores[0, ::-1],
                             niqe.niqe_score(gray[None, ::-1, ..., None])[0],
                             rtol=1e-6)


@pytest.mark.parametrize('make_images,match', [
    (lambda: np.zeros((100, 300)), 'at least 3 dimensions'),
    (lambda: np.zeros((100, 300, 2)), 'grayscale .* or RGB'),
    (lambda: np.zeros((100, 150, 1)), 'at least 2 patches'),
    (lambda: np.zeros((80, 300, 1)), 'smaller than one 96x96 patch'),
])
def test_score_bad_input(make_images, match):
  with pytest.raises(ValueError, match=match):
    niqe.niqe_score(make_images())


# --- MVG fit and distance ----------------------------------------------------------------


def random_spd(rng, n, scale=1.0, condition=1e4):
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  return scale * (q * np.geomspace(1, 1 / condition, n)) @ q.T


def numpy_distance(mean_p, cov_p, mean_t, cov_t):
  delta = mean_p - mean_t
  return np.sqrt(delta @ np.linalg.pinv((cov_p + cov_t) / 2) @ delta)


def test_mvg_distance_matches_the_pinv_formula():
  rng = np.random.default_rng(0)
  cases = []
  for _ in range(4):
    cases.append((rng.normal(size=8), random_spd(rng, 8),
                  rng.normal(size=8), random_spd(rng, 8, 2.0)))
  # singular test covariance (rank 3) and zero test covariance
  low_rank = rng.normal(size=(8, 3))
  cases.append((rng.normal(size=8), random_spd(rng, 8), rng.normal(size=8),
                low_rank @ low_rank.T))
  cases.append((rng.normal(size=8), random_spd(rng, 8), rng.normal(size=8),
                np.zeros((8, 8))))
  for mean_p, cov_p, mean_t, cov_t in cases:
    expected = numpy_distance(mean_p, cov_p, mean_t, cov_t)
    ours = niqe.mvg_distance(*(np.float32(a) for a in (mean_p, cov_p, mean_t,
                                                       cov_t)))
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
  batched = niqe.mvg_distance(*(np.stack(a).astype(np.float32)
                                for a in zip(*cases)))
  np.testing.assert_allclose(batched, [numpy_distance(*c) for c in cases],
                             rtol=1e-4)


def test_one_matrix_takes_one_branch_and_equals_the_batched_solve():
  """One matrix: Cholesky, or the eigendecomposition only when it fails
  (lax.cond); a batch computes both and selects. Same values and gradients,
  on definite and singular covariances."""
  rng = np.random.default_rng(4)
  low_rank = rng.normal(size=(8, 3))
  for cov_t in (random_spd(rng, 8, 2.0), low_rank @ low_rank.T,
                np.zeros((8, 8))):
    args = [np.float32(a) for a in (rng.normal(size=8), random_spd(rng, 8),
                                    rng.normal(size=8), cov_t)]
    # pristine covariance zero too: only the pseudo-inverse can solve
    for case in (args, args[:1] + [np.zeros((8, 8), np.float32)] + args[2:]):
      one = jax.jit(jax.value_and_grad(niqe.mvg_distance, argnums=(0, 1, 3)))
      batched = jax.jit(jax.value_and_grad(
          lambda *a: niqe.mvg_distance(*(x[None] for x in a))[0],
          argnums=(0, 1, 3)))
      (value, grads), (value_b, grads_b) = one(*case), batched(*case)
      # the same branch's arithmetic (sums of 8 x 8 terms), which XLA may
      # fuse differently in the two programs
      rel = numerics.reordered_sum(64)
      np.testing.assert_allclose(value, value_b, rtol=rel, atol=rel)
      for g, g_b in zip(grads, grads_b):
        scale = max(float(np.abs(g_b).max()), 1e-30)
        np.testing.assert_allclose(g, g_b, rtol=0, atol=rel * scale)
  matrix = jnp.asarray(random_spd(rng, 8))
  lowered = jax.jit(niqe._psd_solve).lower(matrix, jnp.ones(8)).as_text()  # pylint: disable=protected-access
  assert 'cond' in lowered or 'case' in lowered


def test_mvg_distance_is_finite_with_finite_gradients_at_edge_cases():
  n = 6
  eye = jnp.eye(n)
  mean = jnp.arange(n, dtype=jnp.float32)
  grad = jax.jit(jax.grad(niqe.mvg_distance, argnums=(0, 1, 2, 3)))
  cases = {
      'same model': (mean, eye, mean, eye),              # distance 0
      'repeated eigenvalues': (mean, eye, mean + 1, eye),
      'zero test covariance': (mean, eye, mean + 1, 0 * eye),
      'both covariances zero': (mean, 0 * eye, mean + 1, 0 * eye),
      'rank one': (mean, jnp.outer(mean, mean), mean * 2, 0 * eye),
  }
  for name, args in cases.items():
    value = niqe.mvg_distance(*args)
    assert np.isfinite(float(value)), name
    for g in grad(*args):
      assert np.all(np.isfinite(np.asarray(g))), name
  assert float(niqe.mvg_distance(*cases['same model'])) == 0.0
  # pinv semantics: with both covariances zero the distance is 0, as MATLAB.
  assert float(niqe.mvg_distance(*cases['both covariances zero'])) == 0.0
  np.testing.assert_allclose(niqe.mvg_distance(*cases['repeated eigenvalues']),
                             np.sqrt(n), rtol=1e-6)


def test_mvg_fit_matches_nanmean_and_complete_row_covariance():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(40, 5))
  features[3, 1] = np.nan
  features[7, [0, 4]] = np.nan
  with jax.enable_x64(True):
    mean, cov = niqe.mvg_fit(jnp.asarray(features))
  np.testing.assert_allclose(mean, np.nanmean(features, axis=0), rtol=1e-12)
  complete = features[~np.isnan(features).any(axis=1)]
  np.testing.assert_allclose(cov, np.cov(complete, rowvar=False), rtol=1e-10)
  valid = ~np.isnan(features)
  filled = np.where(valid, features, 123.0)   # values under valid=False ignored
  with jax.enable_x64(True):
    mean2, cov2 = niqe.mvg_fit(jnp.asarray(filled), jnp.asarray(valid))
  np.testing.assert_allclose(mean2, mean, rtol=1e-12)
  np.testing.assert_allclose(cov2, cov, rtol=1e-12)


def test_distance_of_features_has_finite_difference_gradients():
  rng = np.random.default_rng(2)
  image = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (56, 56)), 0.8)
  with jax.enable_x64(True):
    model_mean = jnp.asarray(rng.normal(1.0, 0.3, 36))
    model_cov = jnp.asarray(random_spd(rng, 36, 0.1, 1e3))

    def distance(img):
      found = nss.niqe_features(img, 28)
      mean, cov = niqe.mvg_fit(found.features, found.valid)
      return niqe.mvg_distance(model_mean, model_cov, mean, cov)

    x = jnp.asarray(image)[..., None]
    value_and_grad = jax.jit(jax.value_and_grad(distance))
    value, grad = value_and_grad(x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    f = lambda y: value_and_grad(y)[0]   # one compiled program for both
    for seed in range(3):
      direction = jnp.asarray(np.random.default_rng(seed).normal(size=x.shape))
      h = 1e-5
      numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
      np.testing.assert_allclose(jnp.vdot(grad, direction), numeric,
                                 rtol=1e-4, atol=1e-8)


# --- pristine models ------------------------------------------------------------------


def test_pristine_model_save_load_roundtrip(tmp_path):
  rng = np.random.default_rng(3)
  model = niqe.PristineModel.fit_features(rng.normal(size=(50, 36)))
  assert isinstance(jax.tree_util.tree_leaves(model)[0], np.ndarray)
  model.save(tmp_path / 'model.npz')
  loaded = niqe.PristineModel.load(tmp_path / 'model.npz')
  np.testing.assert_array_equal(loaded.mean, model.mean)
  np.testing.assert_array_equal(loaded.cov, model.cov)
  scipy.io.savemat(tmp_path / 'model.mat', {
      'mu_prisparam': model.mean[None], 'cov_prisparam': model.cov})
  from_mat = niqe.PristineModel.load(tmp_path / 'model.mat')
  np.testing.assert_array_equal(from_mat.cov, model.cov)


def test_pristine_model_load_errors(tmp_path):
  scipy.io.savemat(tmp_path / 'wrong.mat', {'mu': np.zeros((1, 36))})
  with pytest.raises(ValueError, match='no mu_prisparam / cov_prisparam'):
    niqe.PristineModel.load(tmp_path / 'wrong.mat')
  np.savez(tmp_path / 'wrong.npz', mean=np.zeros(36), cov=np.zeros((35, 35)))
  with pytest.raises(ValueError, match='does not match'):
    niqe.PristineModel.load(tmp_path / 'wrong.npz')
  (tmp_path / 'corrupt.mat').write_bytes(b'not a mat file')
  with pytest.raises(ValueError, match='not a readable MATLAB'):
    niqe.PristineModel.load(tmp_path / 'corrupt.mat')
  with pytest.raises(FileNotFoundError):
    niqe.PristineModel.load(tmp_path / 'missing.npz')


def test_fit_images_keeps_only_sharp_patches():
  rng = np.random.default_rng(4)
  images = []
  for _ in range(2):
    image = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (192, 288)), 1.0)
    image[:96, :96] = scipy.ndimage.gaussian_filter(image[:96, :96], 3.0)
    images.append(image[..., None].astype(np.float32))
  model = niqe.PristineModel.fit_images(images, sharpness_threshold=0.75)
  rows = []
  for image in images:     # as MATLAB: float64, its grid estimate of alpha
    with jax.enable_x64(True):
      found = nss.niqe_features(image.astype(np.float64), 96,
                                shape_estimate='grid')
      sharp = np.asarray(found.sharpness)
      rows.append(np.asarray(found.features)[sharp > 0.75 * sharp.max()])
  rows = np.concatenate(rows)
  assert 2 <= len(rows) < 12       # the blurred patches were left out
  np.testing.assert_allclose(model.mean, rows.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(model.cov, np.cov(rows, rowvar=False), rtol=1e-5,
                             atol=1e-9)


@pytest.mark.parametrize('bad_value', [np.nan, np.inf])
def test_non_finite_images_give_nan_scores_and_features(bad_value):
  rng = np.random.default_rng(3)
  images = rng.uniform(0, 255, (3, 64, 64, 1)).astype(np.float32)
  images[:, 16:40, 16:40] = scipy.ndimage.gaussian_filter(
      images[:, 16:40, 16:40], (0, 2, 2, 0))
  bad = images.copy()
  bad[1, 10, 20, 0] = bad_value
  score = jax.jit(lambda im: niqe.niqe_score(im, patch_size=32))
  clean, got = np.asarray(score(images)), np.asarray(score(bad))
  assert np.isnan(got[1]) and np.all(np.isfinite(clean))
  np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
  found, found_clean = (jax.tree_util.tree_map(np.asarray, nss.niqe_features(
      im, 32)) for im in (bad, images))
  assert np.all(np.isnan(found.features[1])) and np.all(
      np.isnan(found.sharpness[1]))
  np.testing.assert_array_equal(found.features[[0, 2]],
                                found_clean.features[[0, 2]])
  np.testing.assert_array_equal(found.valid[[0, 2]], found_clean.valid[[0, 2]])
  assert np.all(found.valid[1])     # NaN values, not missing ones
  # gradients of the finite images are unchanged, the bad one's are zero
  grad = jax.jit(jax.grad(   # one compilation for both
      lambda im: jnp.nansum(nss.niqe_features(im, 32).features)))
  g_bad, g_clean = (np.asarray(grad(im)) for im in (bad, images))
  np.testing.assert_array_equal(g_bad[[0, 2]], g_clean[[0, 2]])
  assert np.all(g_bad[1] == 0)


def test_all_nan_image_is_not_a_constant_image():
  constant = np.full((1, 192, 192, 1), 128.0, np.float32)
  for matlab in (True, False):
    assert np.isfinite(niqe.niqe_score(constant, matlab=matlab))
    assert np.isnan(niqe.niqe_score(np.full_like(constant, np.nan),
                                    matlab=matlab))


def test_the_matlab_score_is_the_float32_one_more_exactly_and_needs_values():
  rng = np.random.default_rng(5)
  images = rng.uniform(0, 255, (2, 3, 64, 64, 1)).astype(np.float32)
  images[..., 8:40, 8:40, :] = scipy.ndimage.gaussian_filter(
      images[..., 8:40, 8:40, :], (0, 0, 2, 2, 0))
  matlab = np.asarray(niqe.niqe_score(images, patch_size=32))
  fast = np.asarray(niqe.niqe_score(images, patch_size=32, matlab=False))
  assert matlab.shape == (2, 3)
  # The same features, but for each fit's shape: MATLAB's grid value (0.001
  # apart) against the root of rho(alpha) = R, up to half a step apart
  # (5e-4 of alpha ~ 1: 5e-4 relative, in 10 of the 36 features), and the
  # float32 rounding of the features and of the solve (~1e5 * eps, the
  # conditioning of (Sigma_p + Sigma_t) / 2).
  np.testing.assert_allclose(fast, matlab, rtol=1e-3)
  with pytest.raises(ValueError, match='concrete images'):
    jax.jit(lambda im: niqe.niqe_score(im, patch_size=32, matlab=True))(images)


def test_mvg_distance_of_nan_parameters_is_nan():
  mean, cov = np.zeros(3), np.eye(3)
  assert np.isnan(niqe.mvg_distance(mean, cov, np.full(3, np.nan), cov))


def test_unit_range_images_warn_once(monkeypatch):
  monkeypatch.setattr(niqe, '_warned_unit_range', False)
  images = np.random.default_rng(0).uniform(0, 1, (192, 192, 1))
  with pytest.warns(UserWarning, match=r'\[0, 255\]'):
    niqe.niqe_score(images)
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    niqe.niqe_score(images)                    # once only
    monkeypatch.setattr(niqe, '_warned_unit_range', False)
    niqe.niqe_score(images * 255)              # [0, 255]: no warning
    jax.jit(niqe.niqe_score)(images)           # traced: not checked
