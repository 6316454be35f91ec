"""Flax Linen generators and critics."""

from qagan_jax.models.resnet import Architecture
from qagan_jax.models.resnet import ARCHITECTURES
from qagan_jax.models.resnet import architecture
from qagan_jax.models.resnet import count_params
from qagan_jax.models.resnet import Critic
from qagan_jax.models.resnet import Generator

__all__ = ['ARCHITECTURES', 'Architecture', 'Critic', 'Generator',
           'architecture', 'count_params']
