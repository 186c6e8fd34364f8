"""Privacy: differentially private optimizers and their accounting, and Paillier forward encryption."""

import enum

from efl.privacy.analysis import compute_dp_sgd_privacy, epsilon_after_steps
from efl.privacy.dp_optimizer import (
  DPAdagradGaussianOptimizer,
  DPAdagradOptimizer,
  DPAdamGaussianOptimizer,
  DPAdamOptimizer,
  DPGradientDescentGaussianOptimizer,
  DPGradientDescentOptimizer,
  make_gaussian_optimizer_class,
  make_optimizer_class,
)
from efl.privacy.dp_query import DPQuery
from efl.privacy.gaussian_query import GaussianSumQuery
from efl.privacy.paillier import (
  PaillierKeyError,
  generate_paillier_key,
  load_keypair,
  load_private_key,
  load_public_key,
)


class Role(enum.Enum):
  SENDER = 0
  RECEIVER = 1


def __getattr__(name):
  # The encrypted layers pull in TensorFlow graph code: load them on first use.
  if name in ('EncryptActiveLayer', 'EncryptPassiveLayer'):
    from efl.privacy import paillier  # pylint: disable=g-import-not-at-top

    return getattr(paillier, name)
  raise AttributeError("module 'efl.privacy' has no attribute %r" % name)
