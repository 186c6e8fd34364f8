"""Paillier encryption for vertical federated learning.

Key files, a fast batch cipher, fixed-point packing, and the forward-encryption layers `EncryptActiveLayer`
(follower) / `EncryptPassiveLayer` (leader).

Only `keys`, `cipher` and `encoding` are imported eagerly; the TF layers load on first use.
"""

import importlib

from efl.privacy.paillier.cipher import PaillierCipher
from efl.privacy.paillier.keys import (
  PaillierKeyError,
  generate_paillier_key,
  load_keypair,
  load_private_key,
  load_public_key,
)

_LAZY = {
  'EncryptActiveLayer': 'efl.privacy.paillier.layers',
  'EncryptPassiveLayer': 'efl.privacy.paillier.layers',
  'ActiveParty': 'efl.privacy.paillier.protocol',
  'PassiveParty': 'efl.privacy.paillier.protocol',
  'ProtocolError': 'efl.privacy.paillier.protocol',
}


def __getattr__(name):
  # Python 3.7 module __getattr__: keeps `import efl.privacy.paillier` free of TensorFlow.
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError("module 'efl.privacy.paillier' has no attribute %r" % name)
