"""`Model`: compiles `input_fn`, `loss_fn`, `eval_fn` and `optimizer_fn` into one static graph, and runs it.

Life cycle: set the functions (each setter takes `task=None` and returns the model) -> `compile()` builds the
graph of every task -> `fit(procedure_fn)` opens one monitored session and runs the procedure's stages.
`FederalModel` extends the gradient computation (`_minimize`) and the session set-up (`_before_session`,
`_after_session`); everything else is shared.
"""

import collections
import inspect
import math
import os
import sys

import tensorflow.compat.v1 as tf

from efl import compat
from efl import flags
from efl.framework import cluster
from efl.framework import failure
from efl.framework import hooks as hooks_lib
from efl.framework import sync
from efl.framework.sample import Sample
from efl.framework.stage import LoopStage, StageManager, _raw_run
from efl.log import redirect_log
from efl.mode import MODE, TaskScope, scope_task, task_scope

_SETTERS = ('input_fn', 'loss_fn', 'eval_fn', 'optimizer_fn')
_REDUCERS = {'mean': tf.reduce_mean, 'sum': tf.reduce_sum}


class _Task(object):
  """What compile() built for one task."""

  def __init__(self, name):
    self.name = name
    self.fns = {}
    self.samples = {}
    self.loss = None
    self.train_ops = []
    self.eval_ops = []
    self.opt_to_vars = {}
    self.update_guards = []  # ops every variable update of a training step waits for


def is_dp_optimizer(opt):
  """True for optimizers whose compute_gradients takes `opt_config` (efl's DP optimizers)."""
  try:
    return 'opt_config' in inspect.signature(opt.compute_gradients).parameters
  except (TypeError, ValueError):
    return False


def reduce_loss(loss, opt_config):
  """Reduces a non-scalar loss with `opt_config['REDUCE']` ('mean', 'sum' or a callable)."""
  if loss.shape.ndims == 0:
    return loss
  how = opt_config.get('REDUCE', 'mean')
  if callable(how):
    return how(loss)
  if how not in _REDUCERS:
    raise ValueError("opt_config['REDUCE'] must be 'mean', 'sum' or a callable, got %r" % (how,))
  return _REDUCERS[how](loss)


def _summary(error):
  """The first line of an error's message, without TensorFlow's node and stack trace decorations."""
  text = compat.op_error_text(error) or str(error) or type(error).__name__
  text = text.split('\n')[0].strip()
  return '%s: %s' % (type(error).__name__, text)


def _global_step_of(sess, global_step):
  """The global step in the session's variables, or None if the session cannot tell any more."""
  try:
    # Bounded: after a failure in a cluster the variable may live on a parameter server that is gone.
    options = tf.RunOptions(timeout_in_ms=5000)
    return int(sess._tf_sess().run(global_step, options=options))  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return None


def _clearer_data_error(error, graph):
  """A data reader's clearer version of `error` (naming reader, file and record), else `error` itself."""
  if isinstance(error, tf.errors.OpError) and 'efl.data' in sys.modules:
    clearer = sys.modules['efl.data'].explain_error(error, graph)
    if clearer is not None:
      return clearer
  return error


class Model(object):
  """A single-process model; see the module docstring."""

  def __init__(self):
    redirect_log()
    self._graph = tf.get_default_graph()
    self._sync = None  # synchronous training of a cluster's workers (compile's sync_optimizer_config)
    self._training_flag = tf.placeholder_with_default(True, shape=[], name='is_training_flag')
    with cluster.placement():
      self._global_step = tf.train.get_or_create_global_step()
    self._tasks = collections.OrderedDict()
    self._hooks = hooks_lib.HookRegistry()
    self._metrics = collections.OrderedDict()  # TaskScope -> OrderedDict(name -> tensor)
    self._predictions = {}  # task -> OrderedDict(name -> tensor)
    self._export = None  # an export.ExportState while export_saved_model builds the serving graph
    self._failed_step = None
    self._extra = {}
    self._compiled = False
    self._opt_config = {}
    self._session_config = None
    self._loggers = {}
    self._stage_manager = None
    self._sess = None

  # ---- setters -------------------------------------------------------------------------------------------
  def _set(self, kind, fn, task):
    if not callable(fn):
      raise TypeError('%s must be callable, got %r' % (kind, fn))
    if self._compiled:
      raise RuntimeError('%s cannot be set after compile()' % kind)
    task = scope_task(task)  # EFLS: a function set inside efl.task_scope(task=...) belongs to that task
    t = self._tasks.setdefault(task, _Task(task))
    if kind in t.fns:
      raise ValueError('%s is already set for task %r; set each function once per task' % (kind, task))
    t.fns[kind] = fn
    return self

  def input_fn(self, fn, task=None):
    """Sets `fn(model, mode) -> Sample` (TRAIN) and Sample or None (EVAL)."""
    return self._set('input_fn', fn, task)

  def loss_fn(self, fn, task=None):
    """Sets `fn(model, sample) -> loss` (a tensor, a sent tensor, or None)."""
    return self._set('loss_fn', fn, task)

  def eval_fn(self, fn, task=None):
    """Sets `fn(model, sample) -> eval op`."""
    return self._set('eval_fn', fn, task)

  def optimizer_fn(self, fn, task=None):
    """Sets `fn(model, task) -> {optimizer: (var_list, scope)}`, e.g. `efl.optimizer_fn.optimizer_setter(opt)`."""
    return self._set('optimizer_fn', fn, task)

  # ---- accessors -----------------------------------------------------------------------------------------
  @property
  def training_flag(self):
    """Scalar bool placeholder: True in training runs, False in eval runs."""
    return self._training_flag

  @property
  def global_step(self):
    return self._global_step

  @property
  def graph(self):
    return self._graph

  @property
  def tasks(self):
    return [t for t in self._tasks if self._is_runnable(t)]

  def _is_runnable(self, task):
    fns = self._tasks[task].fns
    return 'loss_fn' in fns or 'eval_fn' in fns

  def check_task(self, task):
    if task not in self._tasks or not self._is_runnable(task):
      raise KeyError('unknown task %r; the model has tasks %s' % (task, self.tasks))
    return self._tasks[task]

  def _compiled_task(self, task):
    if not self._compiled:
      raise RuntimeError('call compile() before asking the model for its ops')
    return self.check_task(task)

  def input(self, mode=MODE.TRAIN, task=None):
    return self._compiled_task(task).samples.get(mode)

  def loss(self, task=None):
    return self._compiled_task(task).loss

  def train_op(self, task=None):
    """The list of ops one training step runs (optimizer updates, sends, global step increment)."""
    ops = self._compiled_task(task).train_ops
    return list(ops) if ops else None

  def eval_op(self, task=None):
    ops = self._compiled_task(task).eval_ops
    return list(ops) if ops else None

  def opt_to_vars(self, task=None):
    return dict(self._compiled_task(task).opt_to_vars)

  def metrics(self, mode=MODE.TRAIN, task=None):
    return dict(self._metrics.get(TaskScope(mode, task), {}))

  def add_metric(self, name, op, mode=MODE.TRAIN, task=None):
    """Logs `op` (fetched every run of the scope) as metric `name`. A `(value, update_op)` pair logs update_op.

    A Python value (a number, a string such as the task's name) becomes a constant tensor, as in EFLS.
    """
    if self._export is not None:
      return self  # a serving model has no metrics
    if isinstance(op, (tuple, list)) and op and isinstance(op[-1], (tf.Tensor, tf.Variable, tf.Operation)):
      op = op[-1]
    if not isinstance(op, (tf.Tensor, tf.Variable, tf.Operation)):
      try:
        with self._graph.as_default():
          op = tf.constant(op, name='metric_' + ''.join(c if c.isalnum() else '_' for c in str(name)))
      except (TypeError, ValueError) as e:
        raise TypeError(
          'add_metric(%r): the value must be a tensor, a (value, update_op) pair, or a number or '
          'string that can become a constant tensor; got %r (%s)' % (name, op, e)
        )
    task = scope_task(task)
    self._metrics.setdefault(TaskScope(mode, task), collections.OrderedDict())[name] = op
    return self

  def add_prediction(self, name, tensor, task=None):
    """Declares a per-example output of the task (in eval_fn), written by `efl.procedure_fn.predict`.

    `tensor` has one row per example (`[batch]` or `[batch, k]`; k columns `name_0` ... `name_{k-1}`).
    """
    task = scope_task(task)
    if not isinstance(name, str) or not name:
      raise ValueError('add_prediction: the name must be a non-empty string, got %r' % (name,))
    tensor = tf.convert_to_tensor(tensor)
    if tensor.shape.ndims == 0:
      raise ValueError('add_prediction(%r): a prediction has one row per example; got a scalar' % (name,))
    if self._export is not None:
      self._export.add_output(name, tensor, 'prediction')
      return self
    named = self._predictions.setdefault(task, collections.OrderedDict())
    if name in named:
      raise ValueError(
        'add_prediction(%r) was already called for task %r; give each prediction its own name' % (name, task)
      )
    named[name] = tensor
    return self

  def predictions(self, task=None):
    """{name: tensor} declared with add_prediction for the task, in declaration order."""
    return collections.OrderedDict(self._predictions.get(task, {}))

  def export_saved_model(self, export_dir, task=None, checkpoint_path=None, checkpoint_dir=None):
    """Writes the task's evaluation graph as a SavedModel in `export_dir/<global step>`; returns that path.

    Inputs are the party's raw features and its receives, outputs its sends and predictions; the variables
    come from `checkpoint_path` (default: the latest in `checkpoint_dir`, default `--ckpt_dir`). See
    `efl.framework.export`.
    """
    from efl.framework import export  # pylint: disable=g-import-not-at-top

    return export.export_saved_model(
      self, export_dir, task=task, checkpoint_path=checkpoint_path, checkpoint_dir=checkpoint_dir
    )

  @property
  def session(self):
    """The monitored session while fit() runs (None otherwise)."""
    return self._sess

  def add_hooks(self, hooks, mode=MODE.TRAIN, task=None):
    """Registers `tf.train.SessionRunHook`s for the runs of scope `(mode, task)`."""
    if self._export is not None:
      return self  # nothing runs a serving model's hooks
    task = scope_task(task)
    self._hooks.add(list(hooks), TaskScope(mode, task))
    return self

  def add_global_hooks(self, hooks):
    """Registers hooks that see every run, whatever its scope."""
    self._hooks.add(list(hooks), hooks_lib.ALL_SCOPES)
    return self

  def add_train_op(self, op, task=None):
    if self._export is not None:
      return self
    task = scope_task(task)
    self._tasks.setdefault(task, _Task(task)).train_ops.append(op)
    return self

  def add_eval_op(self, op, task=None):
    if self._export is not None:
      return self
    task = scope_task(task)
    self._tasks.setdefault(task, _Task(task)).eval_ops.append(op)
    return self

  def add_extra_data(self, key, value):
    self._extra[key] = value
    return self

  def get_extra_data(self, key, default=None):
    return self._extra.get(key, default)

  @property
  def metric_variables_initializer(self):
    return self._metric_init

  # EFLS's dict views of what was set and built, by task (derived from the tasks, never stored twice).
  def _by_task(self, get):
    return {name: get(t) for name, t in self._tasks.items() if get(t) is not None}

  @property
  def input_fns(self):
    return self._by_task(lambda t: t.fns.get('input_fn'))

  @property
  def loss_fns(self):
    return self._by_task(lambda t: t.fns.get('loss_fn'))

  @property
  def eval_fns(self):
    return self._by_task(lambda t: t.fns.get('eval_fn'))

  @property
  def opt_fns(self):
    return self._by_task(lambda t: t.fns.get('optimizer_fn'))

  @property
  def losses(self):
    return self._by_task(lambda t: t.loss)

  @property
  def inputs(self):
    """{TaskScope(mode, task): Sample} of the compiled inputs."""
    return {
      TaskScope(mode, name): sample
      for name, t in self._tasks.items()
      for mode, sample in t.samples.items()
      if sample is not None
    }

  @property
  def train_ops(self):
    return self._by_task(lambda t: list(t.train_ops) or None)

  @property
  def eval_ops(self):
    return self._by_task(lambda t: list(t.eval_ops) or None)

  @property
  def extra_data(self):
    return self._extra

  @property
  def stage_mgr(self):
    """The StageManager of the running fit() (None before)."""
    return self._stage_manager

  # ---- compile -------------------------------------------------------------------------------------------
  def _fn(self, task, kind):
    fn = self._tasks[task].fns.get(kind)
    if fn is None and kind in ('input_fn', 'optimizer_fn') and None in self._tasks:
      fn = self._tasks[None].fns.get(kind)  # tasks share the default task's input and optimizer
    return fn

  def compile(self, session_config=None, sync_optimizer_config=None, opt_config=None, comm_protocol='grpc'):
    """Builds the graph of every task. `opt_config` is copied, never modified.

    As in EFLS, every function runs under the root variable scope with `reuse=tf.AUTO_REUSE`: an eval_fn that
    builds the training layers again shares their variables.
    """
    if comm_protocol != 'grpc':
      raise ValueError("comm_protocol must be 'grpc' (the only protocol efl speaks), got %r" % (comm_protocol,))
    if self._compiled:
      raise RuntimeError('compile() was already called on this model')
    self._sync = None
    if sync_optimizer_config is not None and cluster.enabled() and flags.get_worker_num() > 1:
      self._sync = sync.SyncReplicas(sync_optimizer_config)
    elif sync_optimizer_config is not None:
      tf.logging.info('sync_optimizer_config: one worker per party, nothing to synchronise')
    self._opt_config = dict(opt_config or {})
    self._opt_config.setdefault('REDUCE', 'mean')
    self._session_config = session_config
    if not self.tasks:
      raise ValueError('nothing to compile: set loss_fn (and input_fn) first')
    with self._graph.as_default(), cluster.placement(), tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
      for task in self.tasks:
        self._compile_task(self._tasks[task])
      self._metric_init = tf.variables_initializer(
        tf.get_collection(tf.GraphKeys.METRIC_VARIABLES), name='metric_variables_initializer'
      )
    self._compiled = True
    return self

  def _build_sample(self, t, mode):
    input_fn = self._fn(t.name, 'input_fn')
    if input_fn is None:
      raise ValueError('task %r has no input_fn; call model.input_fn(fn) before compile()' % (t.name,))
    with task_scope(mode, t.name):
      sample = input_fn(self, mode)
    if sample is not None and not isinstance(sample, Sample):
      raise TypeError(
        'input_fn must return an efl.Sample (or None for EVAL); for mode %s it returned %s'
        % (mode.name, type(sample).__name__)
      )
    return sample

  def _compile_task(self, t):
    t.samples[MODE.TRAIN] = self._build_sample(t, MODE.TRAIN)
    t.samples[MODE.EVAL] = self._build_sample(t, MODE.EVAL)
    loss_fn = t.fns.get('loss_fn')
    if loss_fn is not None:
      sample = t.samples[MODE.TRAIN]
      if sample is None:
        raise ValueError('input_fn returned None for TRAIN, but task %r has a loss_fn' % (t.name,))
      with task_scope(MODE.TRAIN, t.name), tf.control_dependencies(sample.before_step_ops()):
        t.loss = loss_fn(self, sample)
        # The forward and backward passes (and gradients sent to a peer) may run ahead of the step's guards
        # (e.g. the sample-id check), so that waiting for them is off the critical path; updates may not. The
        # guards start after the ops loss_fn added (sends to the peer), not to share the cores with them.
        with tf.control_dependencies(t.train_ops):
          t.update_guards = list(sample.step_guards())
        self._build_train(t)
    eval_fn = t.fns.get('eval_fn')
    if eval_fn is not None:
      sample = t.samples[MODE.EVAL]
      if sample is None:
        raise ValueError('input_fn returned None for EVAL, but task %r has an eval_fn' % (t.name,))
      with task_scope(MODE.EVAL, t.name), tf.control_dependencies(sample.before_step_ops() + sample.step_guards()):
        result = eval_fn(self, sample)
      if result is not None:
        t.eval_ops.insert(0, result)

  def _build_train(self, t):
    if t.loss is not None:
      t.loss = tf.convert_to_tensor(t.loss)
    opt_fn = self._fn(t.name, 'optimizer_fn')
    if opt_fn is None:
      raise ValueError('task %r has a loss_fn but no optimizer_fn; call model.optimizer_fn(...)' % (t.name,))
    t.opt_to_vars = opt_fn(self, t.name)
    if not isinstance(t.opt_to_vars, dict) or not t.opt_to_vars:
      raise TypeError('optimizer_fn must return {optimizer: (var_list, scope)}, got %r' % (t.opt_to_vars,))
    update_ops = []
    for opt, (var_list, scope) in t.opt_to_vars.items():
      op = self._minimize(t, opt, list(var_list), scope)
      if op is not None:
        update_ops.append(op)
    if not update_ops and not t.train_ops:
      raise ValueError(
        'task %r has nothing to train: loss_fn returned %r and no gradient flows to a '
        'trainable variable' % (t.name, t.loss)
      )
    with tf.control_dependencies(update_ops + list(t.train_ops) + t.update_guards):
      # Synchronous training advances the global step once per update of all workers, in its own op.
      steps = [] if self._sync else [tf.assign_add(self._global_step, 1, name='global_step_increment')]
      if cluster.enabled():
        steps.append(cluster.count_step())
    t.train_ops = update_ops + list(t.train_ops) + steps

  def _minimize(self, t, opt, var_list, scope):
    """Returns the op applying `opt` to `var_list` for task `t` (None if nothing to update)."""
    if t.loss is None:
      return None
    if is_dp_optimizer(opt):
      grads_and_vars = opt.compute_gradients(t.loss, var_list, opt_config=dict(self._opt_config))
    else:
      grads_and_vars = opt.compute_gradients(reduce_loss(t.loss, self._opt_config), var_list)
    return self._apply(t, opt, grads_and_vars)

  def _apply(self, t, opt, grads_and_vars):
    grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
    if not grads_and_vars:
      return None
    if self._sync is not None:
      grads_and_vars = sync.detached(grads_and_vars, t.update_guards)
      with tf.control_dependencies(None):
        return self._sync.apply(opt, grads_and_vars, self._global_step)
    with tf.control_dependencies(t.update_guards):
      return opt.apply_gradients(grads_and_vars)

  # ---- fit -----------------------------------------------------------------------------------------------
  def run_stage(self, name, stage_or_func, *args, **kwargs):
    """Runs a stage once per project (skipped after a restart if it had finished); returns its result."""
    if self._sess is None:
      raise RuntimeError('run_stage() is only available inside fit()')
    if isinstance(stage_or_func, LoopStage):
      stage_or_func.ran_scope = None
    result = self._stage_manager.run_stage(self._sess, name, stage_or_func, *args, **kwargs)
    scope = getattr(stage_or_func, 'ran_scope', None)
    if scope is not None:  # a loop ran (not skipped as finished before a restart): one summary line
      self.stage_summary(name, scope.mode, scope.task)
    return result

  def reset_metrics(self, sess=None):
    _raw_run(sess or self._sess, self._metric_init)

  def stage_summary(self, name, mode, task):
    logger = self._loggers.get(TaskScope(mode, task))
    if logger is not None:
      logger.stage_summary(name)

  def _make_loggers(self, log_step, summary_dir):
    for task in self.tasks:
      t = self._tasks[task]
      for mode, ops in ((MODE.TRAIN, t.train_ops), (MODE.EVAL, t.eval_ops)):
        if not ops:
          continue
        scope = TaskScope(mode, task)
        sample = t.samples.get(mode)
        logger = hooks_lib.LoggerHook(
          self._global_step,
          log_step,
          scope=scope,
          batch_size=sample.batch_size if sample is not None else None,
          summary_dir=summary_dir,
          extra_log_fn=self._extra_log_fn(scope),
        )
        loss = self._logged_loss(t) if mode == MODE.TRAIN else None
        if loss is not None and loss.dtype.is_floating:
          logger.add_metrics('loss', tf.reduce_mean(loss))
        for name, tensor in self._metrics.get(scope, {}).items():
          logger.add_metrics(name, tensor)
        self._hooks.add([logger], scope)
        self._loggers[scope] = logger

  def _logged_loss(self, t):
    """The loss shown in the training log (None: nothing meaningful to show)."""
    return t.loss

  def _extra_log_fn(self, scope):
    """For a training scope with a clipping DP optimizer: a function adding epsilon to the log line."""
    if scope.mode != MODE.TRAIN:
      return None
    opts = [
      o
      for o in self._tasks[scope.task].opt_to_vars
      if is_dp_optimizer(o) and getattr(o, 'l2_norm_clip', None) is not None
    ]
    if not opts:
      return None
    n = self._opt_config.get('NUM_EXAMPLES') or os.environ.get('EFL_DP_NUM_EXAMPLES')
    delta = float(self._opt_config.get('DELTA', 1e-5))
    if not n:
      tf.logging.info(
        'DP training: epsilon is not logged because the dataset size is unknown; pass '
        "compile(opt_config={'NUM_EXAMPLES': n}) or set EFL_DP_NUM_EXAMPLES"
      )
      return None
    from efl.privacy import analysis  # pylint: disable=g-import-not-at-top

    n, sigma = int(n), float(opts[0].noise_multiplier)
    releases = self._dp_releases_per_step(scope.task)

    def fn(gstep, batch):
      if gstep <= 0 or batch <= 0:
        return []
      eps = analysis.epsilon_after_steps(n, min(batch, n), sigma / math.sqrt(releases), gstep, delta)
      return ['epsilon=%.4g' % eps, 'delta=%g' % delta]

    return fn

  def _dp_releases_per_step(self, task):
    """How many noised gradients (each clipped to C, noised with sigma*C) one step releases from its batch.

    k releases of one sampled batch are together one Gaussian mechanism of noise multiplier sigma/sqrt(k).
    """
    return 1

  def fit(
    self,
    procedure_fn,
    log_step=100,
    project_name='default_prj',
    checkpoint_dir=None,
    save_checkpoint_steps=None,
    save_checkpoint_secs=None,
    max_checkpoints_to_keep=5,
    hooks=None,
    chief_only_hooks=None,
    scaffold=None,
    summary_dir=None,
    config=None,
    stop_grace_period_secs=120,
    save_summaries_steps=None,
    save_summaries_secs=None,
    **kwargs,
  ):
    """Runs `procedure_fn(model)` in one monitored session.

    Args:
      procedure_fn: e.g. `efl.procedure_fn.train_and_evaluate(...)`.
      log_step: log one line per scope every `log_step` runs.
      project_name: stage records in a checkpoint belong to this project; a new name starts afresh.
      checkpoint_dir: restore from and save to this dir (default: `--ckpt_dir`).
      save_checkpoint_steps: write a checkpoint every this many steps (a FederalModel's default: 1000), and at
        the end. 0 saves none; so does a `tf.train.CheckpointSaverHook` of the user's own (in `hooks`,
        `chief_only_hooks` or `add_hooks`), which then takes over.
      save_checkpoint_secs: write a checkpoint every this many seconds (a Model's default: 600).
      max_checkpoints_to_keep: the saver keeps this many recent checkpoints.
      hooks: `tf.train.SessionRunHook`s that see every run, as in `tf.train.MonitoredTrainingSession`.
      chief_only_hooks: hooks that run on the chief only (`efl.is_chief()`).
      scaffold: a `tf.train.Scaffold` used instead of efl's (its saver then writes the checkpoints).
      summary_dir: where the logged metrics are written as TensorBoard scalars (default: checkpoint_dir).
      config: a `tf.ConfigProto` for the session (default: compile's session_config).
      stop_grace_period_secs: as in `tf.train.MonitoredSession`.
      save_summaries_steps: also save the graph's `tf.summary` ops every this many steps.
      save_summaries_secs: also save the graph's `tf.summary` ops every this many seconds.
      **kwargs: `master`, `is_chief`, `log_step_count_steps` and `max_wait_secs` of
        `tf.train.MonitoredTrainingSession` are accepted; efl's own log shows the speed.
    """
    if not self._compiled:
      raise RuntimeError('fit() called before compile(); call model.compile() first')
    unknown = sorted(set(kwargs) - {'master', 'is_chief', 'log_step_count_steps', 'max_wait_secs'})
    if unknown:
      raise TypeError(
        'fit() got unexpected arguments %s; it takes those of tf.train.MonitoredTrainingSession '
        '(hooks, chief_only_hooks, scaffold, checkpoint_dir, summary_dir, config, ...)' % unknown
      )
    if kwargs.get('master'):
      raise ValueError('fit(master=%r): efl runs each party in this process; leave master unset' % (kwargs['master'],))
    checkpoint_dir = checkpoint_dir or flags.get_ckpt_dir()
    if save_checkpoint_steps is not None and save_checkpoint_secs is not None:
      raise ValueError('give save_checkpoint_steps or save_checkpoint_secs, not both')
    if save_checkpoint_steps is None and save_checkpoint_secs is None:
      save_checkpoint_steps, save_checkpoint_secs = self._default_save_schedule()
    if cluster.enabled() and flags.get_task_name() == 'ps':
      cluster.run_ps()  # a parameter server serves the workers' variables until the party's job ends
      return self
    user_hooks = list(hooks or []) + (list(chief_only_hooks or []) if flags.is_chief() else [])
    hooks_lib.HookRegistry().add(user_hooks)  # type check, before anything starts
    control = None
    failed = None  # the party's failure, when this worker finished but another task failed
    with self._graph.as_default(), cluster.placement():
      if cluster.enabled():
        self._stage_manager = StageManager(project_name, flags.get_task_index(), flags.get_worker_num())
      else:
        self._stage_manager = StageManager(project_name)
      self._make_loggers(log_step, summary_dir or checkpoint_dir)
      if scaffold is None:
        scaffold = tf.train.Scaffold(
          saver=tf.train.Saver(max_to_keep=max_checkpoints_to_keep, sharded=True, allow_empty=True)
        )
      if scaffold.saver is not None and not tf.get_collection(tf.GraphKeys.SAVERS):
        tf.add_to_collection(tf.GraphKeys.SAVERS, scaffold.saver)  # where a script's own saver hook looks
      dispatcher = hooks_lib.ScopedHookDispatcher(self._hooks)
      run_hooks = [dispatcher] + user_hooks + (self._sync.hooks() if self._sync else [])
      if cluster.enabled():
        control = cluster.JobControl()
        control_hook = cluster.JobControlHook(
          control, on_failure=self._on_cluster_failure, explain=self._outside_failure
        )
        run_hooks.insert(0, control_hook)
      own_saver = [h for h in user_hooks + self._hooks.all() if isinstance(h, tf.train.CheckpointSaverHook)]
      if own_saver:
        tf.logging.info('fit: a CheckpointSaverHook of the script saves the checkpoints; efl adds none')
      elif checkpoint_dir and (save_checkpoint_steps or save_checkpoint_secs) and flags.is_chief():
        if cluster.enabled():
          run_hooks.append(cluster.PairCheckpointSaverHook(checkpoint_dir, save_checkpoint_steps, scaffold))
        else:
          run_hooks.append(
            tf.train.CheckpointSaverHook(
              checkpoint_dir, save_steps=save_checkpoint_steps, save_secs=save_checkpoint_secs, scaffold=scaffold
            )
          )
      if (save_summaries_steps or save_summaries_secs) and (summary_dir or checkpoint_dir):
        run_hooks.append(
          tf.train.SummarySaverHook(
            save_steps=save_summaries_steps,
            save_secs=save_summaries_secs,
            output_dir=summary_dir or checkpoint_dir,
            scaffold=scaffold,
          )
        )
      error = None
      try:
        while True:
          self._failed_step = None  # the global step of a failed run (for the error's message)
          try:
            self._run_session(
              procedure_fn, scaffold, dispatcher, run_hooks, checkpoint_dir, config, stop_grace_period_secs
            )
            break
          except BaseException as e:  # pylint: disable=broad-except
            if not self._recover(e, checkpoint_dir):
              raise
      except BaseException as e:  # pylint: disable=broad-except
        error = self._explain_failure(e, checkpoint_dir)
        told = isinstance(error, failure.PeerError)  # its message is the whole story: no second account
        (tf.logging.debug if told else tf.logging.error)('training failed: %s', _summary(e if told else error))
        if error is not e:
          raise error from (None if told else e)
        raise
      finally:
        self._sess = None
        self._after_session(error)
        if control is not None:
          control_hook.stop_watch()
          if error is not None and control_hook.failure and not isinstance(error, cluster.JobStoppedError):
            # What stopped this worker was another task's failure: that is the story to tell.
            error = cluster.JobStoppedError('%s stops: %s' % (cluster.task_label(), control_hook.failure))
          failed = cluster.report_end(control, error, None if error is None else _summary(error))
          control_hook.disarm()
    if failed:
      raise cluster.JobStoppedError('%s finished its share, but the job failed: %s' % (cluster.task_label(), failed))
    return self

  def _run_session(self, procedure_fn, scaffold, dispatcher, run_hooks, checkpoint_dir, config, stop_grace_period_secs):
    """One monitored session: restore (the checkpoint _before_session picks), then run the procedure."""
    if self._graph.finalized:
      # A session again after a recovery: its hooks' begin() may look up (or build) ops, as the first time.
      self._graph._unsafe_unfinalize()  # pylint: disable=protected-access
    restore_path = self._before_session(checkpoint_dir)
    config = self._session_config_or_default(config)
    if cluster.enabled():
      # The chief initializes or restores the variables on the parameter servers; the other workers wait for it.
      config = cluster.session_config(config)
      master = cluster.server(config).target
      if flags.is_chief():
        creator = tf.train.ChiefSessionCreator(
          scaffold=scaffold, master=master, config=config, checkpoint_filename_with_path=restore_path
        )
      else:
        restore_path = None
        creator = cluster.WorkerSessionCreator(scaffold=scaffold, master=master, config=config)
    else:
      creator = tf.train.ChiefSessionCreator(
        scaffold=scaffold, config=config, checkpoint_filename_with_path=restore_path
      )
    if restore_path:
      tf.logging.info('restoring checkpoint %s', restore_path)
    grace_s = self._stop_grace_s(stop_grace_period_secs)
    with dispatcher, tf.train.MonitoredSession(
      session_creator=creator, hooks=run_hooks, stop_grace_period_secs=grace_s
    ) as sess:
      self._sess = sess
      try:
        self._stage_manager.load(sess)
        procedure_fn(self)
      except BaseException:
        self._failed_step = _global_step_of(sess, self._global_step)
        raise
      finally:
        self._sess = None

  def _stop_grace_s(self, stop_grace_period_secs):
    if self._sync is None:
      return stop_grace_period_secs
    # The chief's update thread waits for gradients that no longer come once training ends.
    return min(stop_grace_period_secs, sync.STOP_GRACE_S)

  def _on_cluster_failure(self, message):
    """Called from a watchdog thread when another task of this party failed (see cluster.JobControlHook)."""
    del message

  def _outside_failure(self):
    """Why this party's steps fail from outside it (the peer party), or None (see cluster.JobControlHook)."""
    return None

  def _recover(self, error, checkpoint_dir):
    """Whether fit() should run the procedure again in a new session after `error` (see FederalModel)."""
    del error, checkpoint_dir
    return False

  def _explain_failure(self, error, checkpoint_dir):
    """The error fit() raises for `error`: a clearer one where efl knows more (here: data readers)."""
    del checkpoint_dir
    return _clearer_data_error(error, self._graph)

  def _default_save_schedule(self):
    return None, 600

  def _session_config_or_default(self, config=None):
    return config or self._session_config

  def _before_session(self, checkpoint_dir):
    """Returns the checkpoint to restore (None: the latest one in checkpoint_dir, if any)."""
    if checkpoint_dir:
      return tf.train.latest_checkpoint(checkpoint_dir)
    return None

  def _after_session(self, error):
    pass


def __getattr__(name):
  # EFLS's `efl.framework.model.FederalModel`; it lives in federal_model, which imports this module.
  if name == 'FederalModel':
    from efl.framework.federal_model import FederalModel  # pylint: disable=g-import-not-at-top

    return FederalModel
  raise AttributeError("module 'efl.framework.model' has no attribute %r" % name)
