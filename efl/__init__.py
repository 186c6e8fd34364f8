"""efl: vertical (split) federated learning on TensorFlow 1.15 graph mode.

The public names follow EFLS's: `efl.Model`, `efl.FederalModel`, `efl.Sample`, `efl.FederalSample`,
`efl.MODE`, `efl.procedure_fn`, `efl.optimizer_fn`, `efl.metrics`, `efl.data`, `efl.privacy`,
`efl.Communicator`, the DP optimizers (`efl.DPGradientDescentGaussianOptimizer`, ...).
Subpackages with heavy dependencies (data, privacy, communicator) load on first use.
"""
import importlib
import types

from efl import flags
from efl import metrics
from efl.framework import hooks
from efl.framework import optimizer_fn
from efl.framework import procedure_fn
from efl.framework import stage as _stage
from efl.framework.model import Model
from efl.framework.sample import FederalSample, Sample, SampleIdMismatchError
from efl.framework.stage import Stage
from efl.log import redirect_log
from efl.mode import MODE, current_task_scope, task_scope

__version__ = '0.1.0'

stage = types.ModuleType('efl.stage', 'Stages: LoopStage, ModelBank, StageManager.')
stage.Stage = _stage.Stage
stage.LoopStage = _stage.LoopStage
stage.ModelBank = _stage.ModelBank
stage.StageManager = _stage.StageManager

stage_combiner = types.ModuleType('efl.stage_combiner', 'Wrappers telling how to combine stage results.')
for _name in ('First', 'Last', 'Chief', 'Mean', 'Sum', 'List'):
  setattr(stage_combiner, _name, getattr(_stage, _name))

_LAZY_MODULES = {'data': 'efl.data', 'privacy': 'efl.privacy', 'communicator': 'efl.communicator'}
_LAZY_NAMES = {
    'FederalModel': ('efl.framework.federal_model', 'FederalModel'),
    'Communicator': ('efl.communicator', 'Communicator'),
}
_DP_NAMES = ('DPGradientDescentGaussianOptimizer', 'DPAdamGaussianOptimizer', 'DPAdagradGaussianOptimizer',
             'DPGradientDescentOptimizer', 'DPAdamOptimizer', 'DPAdagradOptimizer',
             'make_optimizer_class', 'make_gaussian_optimizer_class')


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


def efl_version():
  return __version__


def tf_version():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  return tf.__version__
