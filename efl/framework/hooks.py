"""Hooks: every extension point of a run is a `tf.train.SessionRunHook`.

Call order (the same as `tf.train.MonitoredSession`): `begin` and `after_create_session` reach every
registered hook once; `before_run`/`after_run` reach the hooks registered for the scope that is running
(`efl.task_scope`) plus the hooks registered for every scope; `end` reaches every hook when the session closes
without error. `efl.with_tmp_hooks(hooks)` adds hooks to every run of a `with` block, whatever its scope.
"""

import collections
import contextlib
import time

import numpy as np
import tensorflow.compat.v1 as tf

from efl.mode import MODE, TaskScope, current_task_scope

ALL_SCOPES = None  # registration key of hooks that run in every scope


class HookRegistry(object):
  """Hooks by scope, in registration order."""

  def __init__(self):
    self._hooks = collections.OrderedDict()

  def add(self, hooks, scope=ALL_SCOPES):
    for h in hooks:
      if not isinstance(h, tf.train.SessionRunHook):
        raise TypeError('hooks must be tf.train.SessionRunHook instances, got %r' % (h,))
    self._hooks.setdefault(scope, []).extend(hooks)

  def all(self):
    seen, out = set(), []
    for hooks in self._hooks.values():
      for h in hooks:
        if id(h) not in seen:
          seen.add(id(h))
          out.append(h)
    return out

  def for_scope(self, scope):
    out = list(self._hooks.get(ALL_SCOPES, []))
    out.extend(h for h in self._hooks.get(scope, []) if h not in out)
    return out


_running = []  # the dispatchers of the sessions open in this process, innermost last


class ScopedHookDispatcher(tf.train.SessionRunHook):
  """The one hook given to the MonitoredSession: forwards each call to the hooks of the running scope."""

  def __init__(self, registry):
    self._registry = registry
    self._active = []
    self._temporary = []  # hooks of the enclosing with_tmp_hooks blocks
    self._started = []  # temporary hooks that had begin/after_create_session
    self._session = self._coord = None

  def __enter__(self):
    _running.append(self)
    return self

  def __exit__(self, *unused):
    _running.remove(self)

  def begin(self):
    for h in self._registry.all():
      h.begin()

  def after_create_session(self, session, coord):
    self._session, self._coord = session, coord
    for h in self._registry.all():
      h.after_create_session(session, coord)

  @contextlib.contextmanager
  def temporary(self, hooks):
    """Adds `hooks` to every run inside the block; each gets begin/after_create_session on first use."""
    if self._session is None:
      raise RuntimeError(
        'with_tmp_hooks() needs a running session: use it inside fit() (in a procedure_fn or '
        'a stage), after the session was created'
      )
    hooks = list(hooks)
    HookRegistry().add(hooks)  # the same type check as registered hooks
    graph = self._session.graph
    for h in hooks:
      if h not in self._started:
        # begin() may build ops (as for hooks given to a MonitoredSession); the graph is final by now.
        finalized = graph.finalized
        if finalized:
          graph._unsafe_unfinalize()  # pylint: disable=protected-access
        try:
          with graph.as_default():
            h.begin()
        finally:
          if finalized:
            graph.finalize()
        h.after_create_session(self._session, self._coord)
        self._started.append(h)
    self._temporary.extend(hooks)
    try:
      yield hooks
    finally:
      for h in hooks:
        self._temporary.remove(h)

  def before_run(self, run_context):
    self._active = self._registry.for_scope(current_task_scope())
    self._active.extend(h for h in self._temporary if h not in self._active)
    fetches, feeds, options = {}, {}, None
    for i, h in enumerate(self._active):
      args = h.before_run(run_context)
      if args is None:
        continue
      if args.fetches is not None:
        fetches[i] = args.fetches
      if args.feed_dict:
        overlap = set(feeds) & set(args.feed_dict)
        if overlap:
          raise RuntimeError('two hooks feed the same tensors: %s' % sorted(t.name for t in overlap))
        feeds.update(args.feed_dict)
      if args.options is not None:
        options = args.options if options is None else _merge_options(options, args.options)
    return tf.train.SessionRunArgs(fetches, feed_dict=feeds or None, options=options)

  def after_run(self, run_context, run_values):
    results = run_values.results or {}
    for i, h in enumerate(self._active):
      h.after_run(
        run_context,
        tf.train.SessionRunValues(
          results=results.get(i), options=run_values.options, run_metadata=run_values.run_metadata
        ),
      )

  def end(self, session):
    for h in self._registry.all():
      h.end(session)
    for h in self._started:
      if h not in self._registry.all():
        h.end(session)


def with_tmp_hooks(hooks):
  """Context manager: `hooks` see every run inside the `with` block (any scope) of the running fit().

  As in EFLS, each hook gets `begin` and `after_create_session` when first used and `end` when the session
  closes. Outside fit() it raises RuntimeError.
  """
  if not _running:
    raise RuntimeError('with_tmp_hooks() needs a running session: use it inside fit() (in a procedure_fn or a stage)')
  return _running[-1].temporary(hooks)


def _merge_options(a, b):
  merged = tf.RunOptions()
  merged.CopyFrom(a)
  merged.MergeFrom(b)
  return merged


def _fmt(value):
  value = np.asarray(value)
  if value.size == 1:
    v = value.item()
    if isinstance(v, bytes):  # a string metric, e.g. model.add_metric('task', 'dnn')
      return v.decode('utf-8', 'replace')
    return '%.6g' % v if isinstance(v, float) else str(v)
  if value.dtype.kind == 'f' and value.size > 1:
    return '%.6g' % float(np.mean(value))
  return str(value.tolist())


class LoggerHook(tf.train.SessionRunHook):
  """Logs, every `every_n_iter` runs of its scope, the global/local step, steps/s, samples/s and metrics.

  Metric tensors are fetched on every run, so streaming metrics (`tf.metrics.*` update ops) see every batch.
  With a `summary_dir`, the logged values are also written as TensorBoard scalars.
  """

  def __init__(
    self,
    global_step,
    every_n_iter=100,
    every_n_secs=None,
    counter_increment=1,
    scope=None,
    batch_size=None,
    summary_dir=None,
    extra_log_fn=None,
  ):
    if every_n_iter is not None and every_n_iter <= 0:
      raise ValueError('log_step must be a positive number of steps, got %r' % (every_n_iter,))
    self._global_step = global_step
    self._every_n = every_n_iter
    self._every_secs = every_n_secs
    self._increment = counter_increment
    self._scope = scope or TaskScope(MODE.TRAIN, None)
    self._batch_size = batch_size
    self._metrics = collections.OrderedDict()
    self._summary_dir = summary_dir
    self._writer = None
    self._extra_log_fn = extra_log_fn
    self._reset_counters()

  def _reset_counters(self):
    self._lstep = 0
    self._last = None  # (time, gstep, lstep, samples) at the last log line
    self._samples = 0
    self._max_batch = 0  # the configured batch size (the last batch of an epoch may be smaller)
    self._stage_start = None
    self._latest = None
    self._pending_start = None

  def add_metrics(self, name, tensor):
    self._metrics[name] = tensor

  def begin(self):
    if self._summary_dir:
      self._writer = tf.summary.FileWriterCache.get(self._summary_dir)

  @property
  def prefix(self):
    mode = self._scope.mode.name.lower() if isinstance(self._scope.mode, MODE) else str(self._scope.mode)
    return mode if self._scope.task is None else '%s/%s' % (mode, self._scope.task)

  def before_run(self, run_context):
    if self._last is None:
      self._pending_start = time.time()
    fetches = {'gstep': self._global_step, 'metrics': dict(self._metrics)}
    if self._batch_size is not None:
      fetches['batch'] = self._batch_size
    return tf.train.SessionRunArgs(fetches)

  def after_run(self, run_context, run_values):
    r = run_values.results
    now = time.time()
    if self._last is None:
      # The stage starts when its first run starts; the global step then was one less for a train step.
      g0 = r['gstep'] - 1 if self._scope.mode == MODE.TRAIN else r['gstep']
      self._last = (self._pending_start, g0, 0, 0)
      self._stage_start = self._last
    self._lstep += self._increment
    self._samples += int(r.get('batch', 0))
    self._max_batch = max(self._max_batch, int(r.get('batch', 0)))
    self._latest = r
    due = self._every_n is not None and self._lstep % self._every_n == 0
    if self._every_secs is not None and now - self._last[0] >= self._every_secs:
      due = True
    if due:
      self._log(now, r)

  def _log(self, now, r, final=False):
    t0, g0, l0, s0 = self._last
    dt = max(now - t0, 1e-9)
    parts = [
      '[%s]' % self.prefix,
      'gstep=%d' % r['gstep'],
      'lstep=%d' % self._lstep,
      'steps/s=%.2f' % ((self._lstep - l0) / dt),
      'gsteps/s=%.2f' % ((r['gstep'] - g0) / dt),
    ]
    if self._batch_size is not None:
      parts.append('samples/s=%.1f' % ((self._samples - s0) / dt))
    for name, value in r['metrics'].items():
      parts.append('%s=%s' % (name, _fmt(value)))
    if self._extra_log_fn is not None:
      parts.extend(self._extra_log_fn(int(r['gstep']), self._max_batch))
    tf.logging.info(('%s done: ' % self.prefix if final else '') + ' '.join(parts))
    self._last = (now, r['gstep'], self._lstep, self._samples)
    if self._writer is not None:
      values = [
        tf.Summary.Value(tag='%s/%s' % (self.prefix, n), simple_value=float(np.mean(v)))
        for n, v in r['metrics'].items()
        if np.asarray(v).dtype.kind in 'fiub'
      ]
      if values:
        self._writer.add_summary(tf.Summary(value=values), int(r['gstep']))
        self._writer.flush()

  def stage_summary(self, stage_name):
    """Logs one summary line for a finished stage (steps, average speed, last metrics); resets counters."""
    if self._latest is not None and self._stage_start is not None:
      self._last = self._stage_start
      tf.logging.info('stage %s finished after %d steps', stage_name, self._lstep)
      self._log(time.time(), self._latest, final=True)
    self._reset_counters()


class CommunicatorHook(tf.train.SessionRunHook):
  """Tags every monitored run with its phase and step, so both parties' messages stay aligned.

  The phase ('train', 'eval', 'train/<task>') travels with each message: a peer running another phase at the
  same step fails at once instead of waiting for a message that never comes.
  """

  def __init__(self, communicator):
    self._communicator = communicator

  def before_run(self, run_context):
    scope = current_task_scope()
    phase = scope.mode.name.lower() if isinstance(scope.mode, MODE) else str(scope.mode)
    self._communicator.set_phase(phase if scope.task is None else '%s/%s' % (phase, scope.task))

  def after_run(self, run_context, run_values):
    self._communicator.advance_step()
