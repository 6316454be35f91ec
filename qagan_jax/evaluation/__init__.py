"""Evaluation of generators: metrics that need no download (offline), and Inception metrics."""

from qagan_jax.evaluation.offline import niqe_mvg
from qagan_jax.evaluation.offline import niqe_set_distance

__all__ = ['niqe_mvg', 'niqe_set_distance']
