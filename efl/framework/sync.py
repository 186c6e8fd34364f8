"""Synchronous training of a party's workers: `compile(sync_optimizer_config={...})`, as EFLS documents it.

The optimizer is wrapped in `tf.train.SyncReplicasOptimizer`: each step, every worker's gradients are averaged
on the parameter servers and applied once by the chief, and no worker starts its next step before that update.
The config holds SyncReplicasOptimizer's arguments; `replicas_to_aggregate` and `total_num_replicas` default to
the number of workers. Every worker must run the same number of steps (equal shares of the data): a worker left
alone would wait for the others' gradients.
"""

import tensorflow.compat.v1 as tf

from efl import flags

# How long closing a session waits for the chief's update thread: after the last step it waits for gradients that
# never come (until the operation timeout); it is a daemon thread, and its session is closed anyway.
STOP_GRACE_S = 1.0
_ARGS = (
  'replicas_to_aggregate',
  'total_num_replicas',
  'variable_averages',
  'variables_to_average',
  'use_locking',
  'name',
)


class SyncReplicas(object):
  """The model's one synchronised optimizer and the hook that drives it."""

  def __init__(self, config):
    unknown = sorted(set(config) - set(_ARGS))
    if unknown:
      raise ValueError(
        'sync_optimizer_config takes the arguments of tf.train.SyncReplicasOptimizer %s; '
        'unknown: %s' % (list(_ARGS), unknown)
      )
    self._config = dict(config)
    self._config.setdefault('replicas_to_aggregate', flags.get_worker_num())
    self._config.setdefault('total_num_replicas', flags.get_worker_num())
    self._opt = None

  def apply(self, opt, grads_and_vars, global_step):
    """`opt`'s update through the synchronised optimizer; it advances `global_step` once per update."""
    if self._opt is not None:
      raise ValueError(
        'synchronous training (sync_optimizer_config) takes one optimizer per model; found a '
        'second one: %r (the first: %r)' % (opt, self._opt._opt)
      )  # pylint: disable=protected-access
    self._opt = tf.train.SyncReplicasOptimizer(opt, **self._config)
    return self._opt.apply_gradients(grads_and_vars, global_step=global_step)

  def hooks(self):
    """The hook that starts the chief's update thread and each worker's local step, once a session exists."""
    if self._opt is None:
      return []
    # No tokens at the start: every worker's first step waits for the first update, to which each contributes
    # one gradient (with initial tokens a worker that starts first would run ahead, and the late one's
    # gradients would be dropped as stale).
    return [self._opt.make_session_run_hook(flags.is_chief(), num_tokens=0)]


def detached(grads_and_vars, deps):
  """`grads_and_vars` with each gradient made to wait for `deps`, so the update can be built outside them.

  The optimizer creates variables and queues while it builds the update: under a `control_dependencies`
  context their initializers would wait for the step's computation.
  """
  out = []
  with tf.control_dependencies(deps):
    for g, v in grads_and_vars:
      if isinstance(g, tf.IndexedSlices):
        g = tf.IndexedSlices(tf.identity(g.values), g.indices, g.dense_shape)
      else:
        g = tf.identity(g)
      out.append((g, v))
  return out
