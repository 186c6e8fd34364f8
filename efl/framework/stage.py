"""Stages: named units of a procedure (train, eval, ...), and the manager that records which have finished.

`Model.run_stage(name, stage)` runs a stage with the monitored session. The stage manager keeps, in a
checkpointed variable, the project name, the keys of finished stages and the global step at which the running
stage started. After a restart from a checkpoint, finished stages are skipped and an interrupted training stage
continues until the global step it would have reached, so a resumed run does exactly the remaining work.
"""

import fnmatch
import json
import re
import threading
import time

import tensorflow.compat.v1 as tf

from efl import compat
from efl.mode import MODE, TaskScope, current_task_scope, in_task_scope, scope_task, task_scope

_local = threading.local()


class Stage(object):
  """A unit of work run with the monitored session. Subclasses implement `run(*args, **kwargs)`."""

  def __call__(self, *args, **kwargs):
    def func(sess):
      _local.session = sess
      try:
        return self.run(*args, **kwargs)
      finally:
        _local.session = None

    return func

  @property
  def sess(self):
    sess = getattr(_local, 'session', None)
    if sess is None:
      raise RuntimeError('a Stage uses its session only while it runs through Model.run_stage')
    return sess

  def run(self, *args, **kwargs):
    raise NotImplementedError('Stage subclasses implement run()')


class LoopStage(Stage):
  """Runs `run_ops` repeatedly until `step` runs, `time` seconds, the end of the data or a stop request.

  Args:
    run_ops: ops/tensors fetched by each run.
    is_training: in training mode, UPDATE_OPS are run too and `step` counts global steps (so a stage
      interrupted by a restart runs only what remains).
    step: maximum number of runs per `run` (None: until the data ends).
    time: maximum seconds per `run` (None: no limit).
    mode, task: the scope the runs happen in (hooks and communication follow it). Without them the stage runs
      in the enclosing `efl.task_scope` (as EFLS's stages do), or outside any in TRAIN / EVAL by `is_training`.
    feed_dict: feeds for every run; `run(feed_dict=...)` (e.g. `model.run_stage(name, stage, feed_dict=...)`)
      adds to them.

  `finish` (EFLS's name; also `finished`) becomes True at the end of the data or on a stop request. A stage
  run again continues where it stopped.
  """

  def __init__(
    self, run_ops, is_training=True, step=None, time=None, mode=None, task=None, feed_dict=None, global_step=None
  ):
    if step is not None and step < 0:
      raise ValueError('LoopStage step must be >= 0, got %r' % (step,))
    self._run_ops = run_ops
    if is_training:
      update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
      if update_ops:
        self._run_ops = [run_ops, update_ops]
    self._is_training = is_training
    self._step = step
    self._time = time
    self._mode = mode
    self._task = task
    self._feed_dict = feed_dict or {}
    self._global_step = global_step
    self.finished = False
    self.lstep = 0
    self.ran_scope = None  # the scope of the last run, for its summary line

  @property
  def finish(self):
    return self.finished

  def _scope(self):
    if self._mode is None and self._task is None and in_task_scope():
      return current_task_scope()
    mode = self._mode or (MODE.TRAIN if self._is_training else MODE.EVAL)
    return TaskScope(mode, scope_task(self._task))

  def run(self, feed_dict=None, start_gstep=None):
    self.finished = False
    self.lstep = 0
    sess = self.sess
    feeds = dict(self._feed_dict)
    feeds.update(feed_dict or {})
    deadline = None if self._time is None else time.time() + self._time
    remaining = self._step
    if self._is_training and self._step is not None and start_gstep is not None and self._global_step is not None:
      # Count in global steps from where this stage first started, so a resumed stage does only the rest.
      done = _raw_run(sess, self._global_step) - start_gstep
      remaining = max(self._step - done, 0)
    scope = self.ran_scope = self._scope()
    with task_scope(scope.mode, scope.task):
      try:
        while remaining is None or self.lstep < remaining:
          if deadline is not None and time.time() >= deadline:
            break
          if sess.should_stop():
            self.finished = True
            break
          sess.run(self._run_ops, feed_dict=feeds)
          self.lstep += 1
      except (tf.errors.OutOfRangeError, StopIteration):
        tf.logging.info(
          'end of data: %s stage finished after %d steps', 'train' if self._is_training else 'eval', self.lstep
        )
        self.finished = True
    return self.finished


def _raw_run(sess, fetches, feed_dict=None):
  """Runs `fetches` without hooks (no communication step is consumed)."""
  if hasattr(sess, 'run_step_fn'):
    return sess.run_step_fn(lambda step_context: step_context.session.run(fetches, feed_dict=feed_dict))
  return sess.run(fetches, feed_dict=feed_dict)


class ConfigItem(object):
  """One bank of a `ModelBank` config, as EFLS writes it: `ConfigItem(ckpt_path, load_vars, exclude_vars)`."""

  def __init__(self, ckpt_path, load_vars=None, exclude_vars=None):
    self.ckpt_path = ckpt_path
    self.load_vars = load_vars
    self.exclude_vars = exclude_vars

  def to_dict(self):
    return {
      'path': self.ckpt_path,
      'load': self.load_vars if self.load_vars is not None else ['*'],
      'exclude': self.exclude_vars or [],
    }


class ModelBank(Stage):
  """Loads variables from another checkpoint (e.g. a pre-trained model) into the running model.

  `config`: `{bank_name: {'path': dir or checkpoint prefix, 'load': [globs] | [Variables] | {ckpt_name: var or
  name}, 'exclude': [globs]}}`. Glob loads match checkpoint names against the graph's variable names (suffixes
  `:0` and `/part_N` ignored). Only the chief loads.
  """

  def __init__(self, is_chief=True, config=None):
    if config is None:
      from efl import flags  # pylint: disable=g-import-not-at-top

      config = flags.get_config('model_bank', default={})
    if not isinstance(config, dict):
      raise TypeError('ModelBank config must be a dict {bank: {path, load, exclude}}, got %r' % (config,))
    config = {bank: item.to_dict() if isinstance(item, ConfigItem) else item for bank, item in config.items()}
    self._is_chief = is_chief
    self._config = config

  @staticmethod
  def _normalise(name):
    name = re.sub(r':\d+$', '', name)
    return re.sub(r'/part_\d+$', '', name)

  def plan(self):
    """Returns [(checkpoint path, {checkpoint name: variable})] for every bank."""
    graph_vars = {}
    for v in tf.global_variables():
      graph_vars.setdefault(self._normalise(v.name), []).append(v)
    out = []
    for bank, cfg in self._config.items():
      path = cfg.get('path')
      if not path:
        raise ValueError('model bank %r has no "path"' % bank)
      ckpt = tf.train.latest_checkpoint(path) if tf.gfile.IsDirectory(path) else path
      if not ckpt:
        raise ValueError('model bank %r: no checkpoint found at %r' % (bank, path))
      names = [n for n, _ in tf.train.list_variables(ckpt)]
      load = cfg.get('load', ['*'])
      exclude = cfg.get('exclude', [])
      mapping = {}
      if isinstance(load, dict):
        for ck_name, var in load.items():
          if isinstance(var, str):
            if var not in graph_vars:
              raise ValueError('model bank %r: graph has no variable %r' % (bank, var))
            var = graph_vars[var][0]
          mapping[ck_name] = var
      else:
        for item in load:
          if compat.is_variable(item):
            mapping[self._normalise(item.name)] = item
            continue
          for n in names:
            base = re.sub(r'(/ids|-keys|-values|-versions)$', '', n)
            if fnmatch.fnmatchcase(base, item) and base in graph_vars and base == n:
              mapping[n] = graph_vars[base][0]
      for pattern in exclude:
        mapping = {k: v for k, v in mapping.items() if not fnmatch.fnmatchcase(k, pattern)}
      missing = [k for k in mapping if k not in names]
      if missing:
        raise ValueError('model bank %r: checkpoint %s lacks %s' % (bank, ckpt, missing))
      out.append((ckpt, mapping))
    return out

  def run(self):
    if not self._is_chief:
      return None
    loaded = 0
    for ckpt, mapping in self.plan():
      reader = tf.train.load_checkpoint(ckpt)
      for ck_name, var in mapping.items():
        # Variable.load feeds the initializer's input: no new ops in the finalized graph.
        var.load(reader.get_tensor(ck_name), self.sess)
        loaded += 1
      tf.logging.info('ModelBank loaded %d variables from %s', len(mapping), ckpt)
    return loaded


class StageManager(object):
  """Runs named stages once per project and records them in a checkpointed variable."""

  def __init__(self, project_name, worker_index=0, worker_num=1):
    self._project = project_name
    with tf.variable_scope('stage_manager', reuse=tf.AUTO_REUSE):
      # Each worker of a cluster runs its own stages; every worker declares all their records so that the
      # chief's checkpoint holds them. Worker 0's is the one-worker record.
      records = [
        tf.get_variable(
          'state' if i == 0 else 'state_w%d' % i,
          shape=[],
          dtype=tf.string,
          initializer=tf.constant_initializer(''),
          trainable=False,
          collections=[tf.GraphKeys.GLOBAL_VARIABLES],
        )
        for i in range(worker_num)
      ]
      self._var = records[worker_index]
    self._value = tf.placeholder(tf.string, [], name='stage_manager_state')
    self._assign = tf.assign(self._var, self._value)
    self._state = None
    self._index = 0
    self._kinds = {}  # stage name -> kind of stage run under it
    self.finished_order = []

  def load(self, sess):
    raw = _raw_run(sess, self._var)
    state = json.loads(raw.decode('utf-8')) if raw else {}
    if state.get('project') != self._project:
      if state:
        tf.logging.info(
          '[StageManager] project changed from %r to %r: stage records reset', state.get('project'), self._project
        )
      state = {'project': self._project, 'finished': [], 'current': None}
    self._state = state
    self._index = 0

  def _save(self, sess):
    _raw_run(sess, self._assign, feed_dict={self._value: json.dumps(self._state)})

  def _check_kind(self, name, stage_or_func):
    """A name stands for one kind of stage: reusing it for another kind is most likely a typo."""
    if not callable(stage_or_func):
      raise TypeError(
        'run_stage(%r): the stage must be an efl.Stage or a function f(sess), got %r' % (name, stage_or_func)
      )
    kind = type(stage_or_func).__name__ if isinstance(stage_or_func, Stage) else 'function'
    known = self._kinds.setdefault(name, kind)
    if known != kind:
      raise ValueError(
        'run_stage(%r): the name was used for a %s stage and now for a %s; give each kind of '
        'stage its own name' % (name, known, kind)
      )

  def run_stage(self, sess, name, stage_or_func, *args, **kwargs):
    self._check_kind(name, stage_or_func)
    wait_ratio = kwargs.pop('stage_wait_ratio', 1.0)  # EFLS: share of workers to wait for; one here
    if not 0 <= wait_ratio <= 1:
      raise ValueError('stage_wait_ratio must be in [0, 1], got %r' % (wait_ratio,))
    if self._state is None:
      self.load(sess)
    key = '%d:%s' % (self._index, name)
    self._index += 1
    if key in self._state['finished']:
      tf.logging.info('[StageManager] [name=%s] already finished in this project, skipped', name)
      return None
    current = self._state.get('current') or {}
    if current.get('key') != key:
      gstep = _raw_run(sess, tf.train.get_global_step()) if tf.train.get_global_step() is not None else 0
      self._state['current'] = current = {'key': key, 'start_gstep': int(gstep)}
      self._save(sess)
    if isinstance(stage_or_func, LoopStage) and 'start_gstep' not in kwargs:
      kwargs['start_gstep'] = current['start_gstep']
    func = (
      stage_or_func(*args, **kwargs)
      if isinstance(stage_or_func, Stage)
      else (lambda s: stage_or_func(s, *args, **kwargs))
    )
    result = func(sess)
    self._state['finished'].append(key)
    self._state['current'] = None
    self._save(sess)
    self.finished_order.append(name)
    tf.logging.info('[StageManager] [name=%s] finished (%d stages done in this run)', name, len(self.finished_order))
    return result


class _Combiner(object):
  def __init__(self, val):
    self.val = val


class First(_Combiner):
  """Stage result: the first worker's value."""


class Last(_Combiner):
  """Stage result: the last worker's value."""


class Chief(_Combiner):
  """Stage result: the chief's value."""


class Mean(_Combiner):
  """Stage result: the mean over workers."""


class Sum(_Combiner):
  """Stage result: the sum over workers."""


class List(_Combiner):
  """Stage result: the list of all workers' values."""


def combine(values):
  """Combines the results of one stage from every worker (one worker locally)."""
  if not values:
    return None
  head = values[0]
  if head is None:
    return None
  if isinstance(head, (list, tuple)):
    return type(head)(combine([v[i] for v in values]) for i in range(len(head)))
  if isinstance(head, dict):
    return {k: combine([v[k] for v in values]) for k in head}
  if isinstance(head, (First, Chief)):
    return head.val
  if isinstance(head, Last):
    return values[-1].val
  if isinstance(head, Mean):
    return sum(v.val for v in values) / float(len(values))
  if isinstance(head, Sum):
    return sum(v.val for v in values)
  if isinstance(head, List):
    return [v.val for v in values]
  if len(values) == 1:
    return head
  raise ValueError(
    'stage results of type %s need a combiner (efl.stage_combiner.First/Last/Chief/Mean/Sum/'
    'List) to be combined across workers' % type(head).__name__
  )
