"""Optimizer setters: `fn(model, task) -> {optimizer: (var_list, scope or None)}`."""

import tensorflow.compat.v1 as tf

_BY_NAME = {
  'sgd': tf.train.GradientDescentOptimizer,
  'momentum': tf.train.MomentumOptimizer,
  'adagrad': tf.train.AdagradOptimizer,
  'adam': tf.train.AdamOptimizer,
}


def _trainable():
  out = list(tf.trainable_variables())
  out.extend(v for v in tf.get_collection(tf.GraphKeys.TRAINABLE_RESOURCE_VARIABLES) if v not in out)
  return out


def optimizer_setter(opt):
  """Trains every trainable variable with `opt`."""

  def fn(model, task):
    return {opt: (_trainable(), None)}

  return fn


def scope_optimizer(scope_to_opt):
  """Trains the variables of each variable scope with its own optimizer: `{scope: opt}`."""
  if not isinstance(scope_to_opt, dict) or not scope_to_opt:
    raise ValueError('scope_optimizer takes a dict {scope: optimizer}, got %r' % (scope_to_opt,))

  def fn(model, task):
    out = {}
    for scope, opt in scope_to_opt.items():
      var_list = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope)
      if not var_list:
        raise ValueError('scope_optimizer: no trainable variable under scope %r' % (scope,))
      out[opt] = (var_list, scope)
    return out

  return fn


def config_optimizer(model, task):
  """Builds the optimizer from the `-c` config: `{"optimizer": {"name": "adam", "params": {...}}}`."""
  from efl import flags  # pylint: disable=g-import-not-at-top

  name = flags.get_config('optimizer', 'name')
  if name not in _BY_NAME:
    raise ValueError('config optimizer.name must be one of %s, got %r' % (sorted(_BY_NAME), name))
  params = flags.get_config('optimizer', 'params', default={})
  return {_BY_NAME[name](**params): (_trainable(), None)}
