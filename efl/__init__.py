"""efl: vertical (split) federated learning on TensorFlow graph mode (1.15, and 2.x through `tensorflow.compat.v1`).

The public names follow EFLS's: `efl.Model`, `efl.FederalModel`, `efl.Sample`, `efl.FederalSample`,
`efl.MODE`, `efl.procedure_fn`, `efl.optimizer_fn`, `efl.metrics`, `efl.data`, `efl.privacy`,
`efl.Communicator`, the DP optimizers (`efl.DPGradientDescentGaussianOptimizer`, ...).
Subpackages with heavy dependencies (data, privacy, communicator) load on first use.

efl runs on TensorFlow 1.15 and, in graph mode, on TensorFlow 2 (scripts then import `tensorflow.compat.v1 as
tf`): importing efl turns TensorFlow 2's v2 behaviour off.
"""

import importlib
import os

# TensorFlow 2's tf.keras is Keras 3 unless this is set before tf.keras is first used; efl's feature columns
# (DenseFeatures) and scripts written for TensorFlow 1 need the Keras 2 of tf-keras. TensorFlow 1 ignores it.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# A party with the native transport runs gRPC's C core beside grpcio's; a grpcio channel's new connection to a C-core
# server may then make progress only when the backup poller runs (5 s by default), which would stall the Hello.
# gRPC reads this once, so it is set before anything loads gRPC; an explicit setting wins.
os.environ.setdefault('GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS', '100')

from efl import compat  # noqa: E402  pylint: disable=wrong-import-position

if compat.TF2:
  # efl builds graphs and runs them in sessions (MonitoredSession, Saver, py_func gradients), as in TF 1.
  import tensorflow.compat.v1 as _tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.util import deprecation as _deprecation  # pylint: disable=g-import-not-at-top

  # Its notice that reference variables are deprecated would open every party's log.
  with _deprecation.silence():
    _tf.disable_v2_behavior()

from efl import flags  # noqa: E402  pylint: disable=wrong-import-position
from efl import hooks
from efl import metrics
from efl import stage
from efl.flags import *  # noqa: F403  (the getters: efl.get_task_index(), ...)
from efl.framework import optimizer_fn
from efl.framework import procedure_fn
from efl.framework import stage_combiner
from efl.framework.failure import PeerError
from efl.framework.hooks import with_tmp_hooks
from efl.framework.model import Model
from efl.framework.sample import FederalSample, Sample, SampleIdMismatchError
from efl.framework.stage import Stage
from efl.libinfo import EFL_VERSION as __version__
from efl.libinfo import efl_version, tf_version
from efl.log import redirect_log
from efl.mode import MODE, current_task_scope, task_scope
from efl.utils.column_util import make_parse_example_spec

_LAZY_MODULES = {
  'data': 'efl.data',
  'privacy': 'efl.privacy',
  'communicator': 'efl.communicator',
  'dataio': 'efl.dataio',
}
_LAZY_NAMES = {
  'FederalModel': ('efl.framework.federal_model', 'FederalModel'),
  'Communicator': ('efl.communicator', 'Communicator'),
}
_DP_NAMES = (
  'DPGradientDescentGaussianOptimizer',
  'DPAdamGaussianOptimizer',
  'DPAdagradGaussianOptimizer',
  'DPGradientDescentOptimizer',
  'DPAdamOptimizer',
  'DPAdagradOptimizer',
  'make_optimizer_class',
  'make_gaussian_optimizer_class',
)


def __getattr__(name):
  if name in _LAZY_MODULES:
    module = importlib.import_module(_LAZY_MODULES[name])
  elif name in _LAZY_NAMES:
    mod, attr = _LAZY_NAMES[name]
    module = getattr(importlib.import_module(mod), attr)
  elif name in _DP_NAMES:
    module = getattr(importlib.import_module('efl.privacy'), name)
  else:
    raise AttributeError("module 'efl' has no attribute %r" % name)
  globals()[name] = module
  return module
