"""Writes the NIQE pristine models that ship in qagan_jax/quality/data/.

    # the standard NIQE model, converted from the MATLAB release's file
    python experiments/pristine_models.py convert tests/data/niqe/modelparameters.mat
    # the project's own model, fitted to scikit-image's photographs
    python experiments/pristine_models.py fit-skimage
    # how far apart the two are
    python experiments/pristine_models.py compare

`fit-skimage` is the NIQE fitting path end to end (estimatemodelparam.m:
96x96 patches, sharpness threshold 0.75, MATLAB's rgb2gray) on the natural
photographs bundled in the scikit-image wheel, so it runs offline and gives
the same file on every machine. The photographs (`SKIMAGE_PHOTOGRAPHS`) are
the undistorted photographs of natural scenes and surfaces: astronaut,
camera, chelsea, coffee, rocket, the stereo motorcycle pair, and the brick,
grass and gravel textures. Left out: synthetic images (logo, page, text,
horse, checkerboard, colorwheel, clock), microscopy and medical images
(cell, immunohistochemistry, retina, microaneurysms), astronomy (hubble),
and the soft, low-contrast moon and coins scans. NIQE's own model came from
125 pristine photographs; these 11 give far fewer sharp patches, so the
model is noisier; `compare` reports by how much.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from qagan_jax.quality import niqe

DATA_DIR = (pathlib.Path(__file__).resolve().parents[1] / 'qagan_jax' /
            'quality' / 'data')
SKIMAGE_PHOTOGRAPHS = ('astronaut', 'camera', 'chelsea', 'coffee', 'rocket',
                       'motorcycle_left', 'motorcycle_right', 'brick', 'grass',
                       'gravel')


def skimage_photographs() -> dict[str, np.ndarray]:
  """The chosen photographs as uint8 `[H, W, C]` arrays, by name."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  left, right, _ = data.stereo_motorcycle()
  images = {'motorcycle_left': left, 'motorcycle_right': right}
  for name in SKIMAGE_PHOTOGRAPHS:
    if name not in images:
      images[name] = getattr(data, name)()
  return {name: (image[..., None] if image.ndim == 2 else image)
          for name, image in ((n, images[n]) for n in SKIMAGE_PHOTOGRAPHS)}


def convert(mat_path: str) -> None:
  model = niqe.PristineModel.load(mat_path)
  out = DATA_DIR / niqe.STANDARD_MODEL
  model.save(out)
  print(f'wrote {out} from {mat_path}')


def fit_skimage() -> None:
  photographs = skimage_photographs()
  model = niqe.PristineModel.fit_images(photographs.values())
  out = DATA_DIR / niqe.SKIMAGE_MODEL
  model.save(out)
  print(f'wrote {out}: fitted to {len(photographs)} photographs '
        f'({", ".join(photographs)})')


def compare() -> None:
  standard = niqe.PristineModel.standard()
  ours = niqe.PristineModel.skimage_photographs()
  report = {
      'mvg_distance(standard, skimage)': float(niqe.mvg_distance(
          standard.mean, standard.cov, ours.mean, ours.cov)),
      'relative mean difference |mu_s - mu_k| / |mu_s|': float(
          np.linalg.norm(standard.mean - ours.mean)
          / np.linalg.norm(standard.mean)),
      'relative cov difference (Frobenius)': float(
          np.linalg.norm(standard.cov - ours.cov) / np.linalg.norm(standard.cov)),
  }
  scores = {}
  for name, image in skimage_photographs().items():
    scores[name] = {
        'standard': round(float(niqe.niqe_score(image, standard)), 3),
        'skimage': round(float(niqe.niqe_score(image, ours)), 3)}
  report['niqe_scores'] = scores
  print(json.dumps(report, indent=1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest='command', required=True)
  sub.add_parser('convert').add_argument('mat_path')
  sub.add_parser('fit-skimage')
  sub.add_parser('compare')
  args = parser.parse_args()
  if args.command == 'convert':
    convert(args.mat_path)
  elif args.command == 'fit-skimage':
    fit_skimage()
  else:
    compare()


if __name__ == '__main__':
  main()
