"""Evaluation of generators: Inception metrics (FID, IS, KID) and metrics that need no download.

`evaluator.Evaluator` measures samples with the metrics a config names;
`qagan_jax.modes.evaluate_run` is `python -m qagan_jax.main --mode=evaluate`.
"""

from qagan_jax.evaluation.metrics import GaussianStats
from qagan_jax.evaluation.metrics import fid
from qagan_jax.evaluation.metrics import frechet_distance
from qagan_jax.evaluation.metrics import inception_score
from qagan_jax.evaluation.metrics import kid
from qagan_jax.evaluation.offline import niqe_mvg
from qagan_jax.evaluation.offline import niqe_set_distance
from qagan_jax.evaluation.offline import pairwise_ssim
from qagan_jax.evaluation.offline import sliced_wasserstein

__all__ = ['GaussianStats', 'fid', 'frechet_distance', 'inception_score',
           'kid', 'niqe_mvg', 'niqe_set_distance', 'pairwise_ssim',
           'sliced_wasserstein']
