"""`FederalModel`: a `Model` split between two processes that exchange tensors with `send`/`recv`.

Gradient flow. A tensor sent with `require_grad=True` makes the receiver compute d(objective)/d(received
tensor) in the same training step and send it back as `<name>_grad`; the sender then trains on

    objective = own loss (if any) + sum over its require_grad sends s of <s, stop_gradient(received grad of s)>

whose gradient is the own-loss gradient plus the backward pass (VJP) of each received gradient. A party whose
loss_fn returns only a sent tensor has no own loss and trains on the VJP alone. DP optimizers get the same
objective per example; `opt_config['BACKEND_MODE']` decides whether the gradient sent back is noised
('noise', default) or plain ('unnoise').
"""

import collections
import os
import re

import tensorflow.compat.v1 as tf
from tensorflow.python.framework import tensor_util

from efl import compat
from efl import flags
from efl.framework import failure
from efl.framework.hooks import CommunicatorHook
from efl.framework.model import Model, _summary, is_dp_optimizer, reduce_loss
from efl.framework.sample import SampleIdMismatchError
from efl.mode import MODE, scope_task

_BACKEND_MODES = ('noise', 'unnoise')


class CheckpointMismatchError(RuntimeError):
  """The two parties cannot restore the same checkpoint step."""


def _found_by_both(error):
  """Whether both parties find `error` themselves (checkpoints, sample ids or worker counts that differ).

  Each then gives its own account, whether or not the peer's report of it arrives first (on TF 2, which takes
  longer to raise a failed op's error, it often does).
  """
  if isinstance(error, (CheckpointMismatchError, ClusterMismatchError)):
    return True
  return isinstance(error, tf.errors.OpError) and compat.op_error_text(error).startswith(
    SampleIdMismatchError.__name__ + ':'
  )


def _listed_path(checkpoint_dir, path):
  """Where a checkpoint listed in `checkpoint_dir`'s state file is: in that dir when it is there.

  The state file holds absolute paths, so a checkpoint dir copied or moved elsewhere still names the old place.
  """
  local = os.path.join(checkpoint_dir, os.path.basename(path))
  if tf.train.checkpoint_exists(local):
    return local
  return path if os.path.isabs(path) else os.path.join(checkpoint_dir, path)


def checkpoint_steps(checkpoint_dir):
  """Global steps of the complete checkpoints listed in `checkpoint_dir`'s state file."""
  if not checkpoint_dir:
    return []
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  if state is None:
    return []
  steps = []
  for path in state.all_model_checkpoint_paths:
    path = _listed_path(checkpoint_dir, path)
    m = re.search(r'-(\d+)$', path)
    if m and tf.train.checkpoint_exists(path):
      steps.append(int(m.group(1)))
  return sorted(set(steps))


def _inner_product(s, g):
  """<s, g> as a scalar whose gradient with respect to `s` is `g` times the upstream gradient.

  The generic gradient of reduce_sum(s * g) broadcasts, then multiplies by g: two passes over a tensor as big as
  the activations, on the critical path between receiving the peer's gradient and updating. This is one, or none
  when the upstream gradient is the constant 1 (plain training). Nothing fetches the value, so the graph prunes it.
  """

  @tf.custom_gradient
  def term(x):
    def grad(dy):
      if tensor_util.constant_value(dy) == 1:
        return g
      return dy * g

    return tf.reduce_sum(x * g), grad

  return term(s)


def _defer_until_sent(backward, peer_grads, sends):
  """Makes the ops of `backward` that the peer's gradients do not need wait until those gradients are sent.

  Otherwise this party's own weight gradients (the largest products of the backward pass) run alongside the
  path to the peer's gradient and share the cores with it while the peer waits. Only the order changes.
  """
  if not sends:
    return
  ours = set(backward)
  needed, stack = set(), [g.op for g in peer_grads if g.op in ours]
  while stack:
    op = stack.pop()
    if op not in needed:
      needed.add(op)
      stack.extend(x.op for x in op.inputs if x.op in ours)
      stack.extend(c for c in op.control_inputs if c in ours)
  rest = [op for op in backward if op not in needed]
  # pylint: disable=protected-access
  if any(op._control_flow_context is not None for op in rest):
    return  # an edge into a loop or a cond from outside is not allowed; keep the graph as it is
  later = set(rest)
  for op in rest:
    if not any(x.op in later for x in op.inputs) and not any(c in later for c in op.control_inputs):
      op._add_control_inputs(sends)


def _row_sums(x):
  """`[B, ...]` -> `[B]`, the sum of each example's row; the rank may be unknown (e.g. a received tensor)."""
  if x.shape.ndims == 1:
    return x
  if x.shape.ndims is not None:
    return tf.reduce_sum(x, axis=list(range(1, x.shape.ndims)))
  return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


class ClusterMismatchError(ValueError):
  """The two parties run different numbers of workers, or worker i talks to the peer's worker j != i."""


def _check_peer_cluster(role, own, peer):
  """Worker i of one party pairs with worker i of the other, so both parties need the same --worker_num."""
  peer_num, peer_index = peer.get('worker_num', 1), peer.get('task_index', 0)
  if peer_num != own['worker_num']:
    raise ClusterMismatchError(
      'the parties run different numbers of workers: this %s has --worker_num=%d, the %s has --worker_num=%d; '
      'start both parties with the same --worker_num' % (role, own['worker_num'], flags.peer_role(role), peer_num)
    )
  if peer_index != own['task_index']:
    raise ClusterMismatchError(
      "this %s worker %d is connected to the %s's worker %d; worker i of a party must talk to worker i of the "
      'other: check the peer addresses ("peer_addrs" in -c/--config, or --peer_addr)'
      % (role, own['task_index'], flags.peer_role(role), peer_index)
    )


def _checkpoint_path(checkpoint_dir, step):
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  for path in state.all_model_checkpoint_paths:
    if path.endswith('-%d' % step):
      return _listed_path(checkpoint_dir, path)
  raise CheckpointMismatchError('checkpoint of step %d vanished from %s' % (step, checkpoint_dir))


_RECV_ORDER_FIRST_RELEASE = ('dtype', 'require_grad', 'task', 'shape')
_RECV_ORDER_LATER = ('shape', 'dtype', 'require_grad', 'task')


def _is_shape(value):
  return isinstance(value, (list, tuple, tf.TensorShape, tf.Tensor))


def _recv_arguments(name, args, kwargs):
  """Maps `recv`'s arguments to {dtype, require_grad, task, shape}, in either of EFLS's two orders."""
  order = _RECV_ORDER_LATER if args and (_is_shape(args[0]) or args[0] is None) else _RECV_ORDER_FIRST_RELEASE
  if len(args) > len(order):
    raise TypeError(
      'recv(%r) takes at most %d positional arguments after the name, got %d' % (name, len(order), len(args))
    )
  params = dict(zip(order, args))
  for key, value in kwargs.items():
    if key not in order:
      raise TypeError('recv(%r) got an unexpected argument %r; it takes %s' % (name, key, ', '.join(order)))
    if key in params:
      raise TypeError(
        'recv(%r) got %r twice (positionally and by keyword); positional arguments after the '
        'name are %s' % (name, key, ', '.join(order[: len(args)]))
      )
    params[key] = value
  params.setdefault('dtype', tf.float32)
  params.setdefault('require_grad', False)
  params.setdefault('task', None)
  params.setdefault('shape', None)
  return params


class FederalModel(Model):
  """A model whose graph is one party's half of a split network.

  The role and addresses come from the command line (`--federal_role`, `--peer_addr`, `--local_addr`) or from
  the constructor's arguments.
  """

  def __init__(
    self,
    client_thread_num=None,
    server_thread_num=None,
    scanning_interval_milliseconds=None,
    default_timeout_milliseconds=None,
    federal_role=None,
    peer_addr=None,
    local_addr=None,
    app_id=None,
  ):
    """A model of one party of a federated job.

    The role, the addresses and the job id come from the flags (`--federal_role`, `--peer_addr`, `--local_addr`,
    `--app_id`) unless given here, e.g. to run both parties in one process.
    """
    super(FederalModel, self).__init__()
    from efl.communicator import Communicator  # pylint: disable=g-import-not-at-top

    self._role = flags.check_role(federal_role) if federal_role else flags.get_federal_role()
    self._communicator = Communicator(
      self._role,
      peer_addr or flags.get_peer_addr(self._role),
      local_addr or flags.get_local_addr(self._role),
      client_thread_num=client_thread_num,
      server_thread_num=server_thread_num,
      scanning_interval_milliseconds=scanning_interval_milliseconds,
      default_timeout_milliseconds=default_timeout_milliseconds,
      app_id=app_id if app_id is not None else flags.get_app_id(),
    )
    self._sent_with_grad = collections.defaultdict(list)  # task -> [(name, sent tensor, received grad)]
    self._recv_with_grad = collections.defaultdict(list)  # task -> [(name, received tensor)]
    self._grads_sent = collections.defaultdict(set)  # task -> names whose gradient is already sent
    self._connect_timeout_s = None  # after a recovery: how long to wait for the peer's new process
    self.add_global_hooks([CommunicatorHook(self._communicator)])
    failure.install_excepthook()

  @property
  def federal_role(self):
    return self._role

  @property
  def communicator(self):
    return self._communicator

  # ---- send / recv ---------------------------------------------------------------------------------------
  def send(self, name, tensor, require_grad=False, mode=MODE.TRAIN, task=None):
    """Sends `tensor` to the peer in every run of `mode`; with `require_grad`, trains on the peer's gradient."""
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    tensor = tf.convert_to_tensor(tensor)
    if self._export is not None:
      self._export.add_output(name, tensor, 'send')  # what this party's serving model answers with
      return tf.no_op()
    task = scope_task(task)
    if require_grad and mode != MODE.TRAIN:
      raise ValueError(
        'send(%r): require_grad=True needs mode=TRAIN (gradients only flow in training), got mode=%s' % (name, mode)
      )
    if require_grad and not tensor.dtype.is_floating:
      raise TypeError('send(%r): require_grad=True needs a floating tensor, got %s' % (name, tensor.dtype.name))
    op = ops.send(self._communicator, name, tensor)
    if mode == MODE.TRAIN:
      self.add_train_op(op, task)
    else:
      self.add_eval_op(op, task)
    if require_grad:
      # The gradient can only arrive after the peer got the tensor: order the recv after the send so that
      # it never holds an executor thread while the send waits.
      with tf.control_dependencies([op]):
        grad = ops.recv(self._communicator, name + '_grad', tensor.dtype)
      grad = tf.reshape(grad, tf.shape(tensor))
      grad.set_shape(tensor.shape)
      self._sent_with_grad[task].append((name, tensor, grad))
    return op

  def recv(self, name, *args, **kwargs):
    """Receives the peer's tensor `name`; with `require_grad`, sends d(objective)/d(tensor) back.

    Takes both of EFLS's forms: the first release's `recv(name, dtype=tf.float32, require_grad=False,
    task=None, shape=None)` and the later `recv(name, shape=None, dtype=tf.float32, require_grad=False,
    task=None)`; a second positional argument that is a shape (list, tuple, TensorShape) selects the later one.
    """
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    params = _recv_arguments(name, args, kwargs)
    dtype, require_grad, shape = params['dtype'], params['require_grad'], params['shape']
    if self._export is not None:  # the peer's part arrives as an input of the serving model
      if isinstance(shape, tf.TensorShape):
        shape = shape.as_list() if shape.ndims is not None else None
      elif not isinstance(shape, (list, tuple)):
        shape = None  # unknown, or given as a tensor
      tensor = tf.placeholder(
        dtype,
        shape=None if shape is None else [None if d == -1 else d for d in shape],
        name=re.sub(r'[^A-Za-z0-9_.\-/]', '_', name),
      )
      self._export.add_input(name, tensor)
      return tensor
    task = scope_task(params['task'])
    tensor = ops.recv(self._communicator, name, dtype, shape=shape)
    if require_grad:
      if not tf.as_dtype(dtype).is_floating:
        raise TypeError('recv(%r): require_grad=True needs a floating dtype, got %s' % (name, dtype))
      self._recv_with_grad[task].append((name, tensor))
    return tensor

  @property
  def recv_grad_ops(self):
    """EFLS's view: {task: [(name, received tensor)]} of the receives whose gradient is sent back."""
    return {task: list(pairs) for task, pairs in self._recv_with_grad.items()}

  @property
  def require_grad_ops(self):
    """EFLS's view: {task: [(sent tensor, the gradient received for it)]} of the require_grad sends."""
    return {task: [(t, g) for _, t, g in sent] for task, sent in self._sent_with_grad.items()}

  # ---- gradients -----------------------------------------------------------------------------------------
  def _objective(self, t, per_example):
    """The task's objective: own loss plus the VJP terms of require_grad sends (see module docstring)."""
    sent = self._sent_with_grad.get(t.name, [])
    own = t.loss
    if own is not None and any(own is s for _, s, _ in sent):
      own = None  # loss_fn returned a sent tensor: this party has no loss of its own
    terms = []
    if own is not None:
      if per_example:
        if own.shape.ndims == 0:
          raise ValueError(
            'DP optimizers need a per-example loss of shape [batch]; loss_fn of task %r returned '
            'a scalar (return the loss before tf.reduce_mean)' % (t.name,)
          )
        terms.append(_row_sums(own))
      else:
        terms.append(reduce_loss(own, self._opt_config))
    for _, s, g in sent:
      if per_example:
        terms.append(_row_sums(s * tf.stop_gradient(g)))
      else:
        terms.append(_inner_product(s, tf.stop_gradient(g)))
    if not terms:
      return None
    return tf.add_n(terms) if len(terms) > 1 else terms[0]

  def _minimize(self, t, opt, var_list, scope):
    dp = is_dp_optimizer(opt)
    objective = self._objective(t, per_example=dp)
    if objective is None:
      return None
    pending = [
      (n, x)
      for n, x in self._recv_with_grad.get(t.name, [])
      if n not in self._grads_sent[t.name] and (scope is None or re.match(scope, x.name))
    ]
    tensors = [x for _, x in pending]
    var_list = list(var_list)
    if dp:
      peer_grads = self._dp_peer_gradients(opt, objective, tensors) if tensors else []
      grads_and_vars = opt.compute_gradients(objective, var_list, opt_config=dict(self._opt_config)) if var_list else []
    elif var_list or tensors:
      # One backward pass for both; the optimizer takes tensors as well as variables in var_list. Ungated, so
      # that the peer's gradient is sent as soon as it exists, not after every gradient of the same ops.
      graph = tf.get_default_graph()
      first = len(graph.get_operations())
      both = opt.compute_gradients(objective, var_list + tensors, gate_gradients=opt.GATE_NONE)
      backward = graph.get_operations()[first:]
      grads_and_vars, peer_grads = both[: len(var_list)], [g for g, _ in both[len(var_list) :]]
    else:
      return None
    peer_grads, sends = self._send_gradients_back(t, pending, peer_grads)
    if not dp:
      _defer_until_sent(backward, peer_grads, sends)
    if not var_list:
      return None
    # Variables are updated in place: every gradient (the peer's too) must be computed before any update. This
    # is what gating would ensure, without holding back the gradient for the peer.
    with tf.control_dependencies(peer_grads + [g for g, _ in grads_and_vars if g is not None]):
      return self._apply(t, opt, grads_and_vars)

  def _dp_peer_gradients(self, opt, objective, tensors):
    backend = self._opt_config.get('BACKEND_MODE', 'noise')
    if backend not in _BACKEND_MODES:
      raise ValueError("opt_config['BACKEND_MODE'] must be 'noise' or 'unnoise', got %r" % (backend,))
    if backend == 'unnoise':
      return opt.compute_plain_gradients(objective, tensors)
    return [g for g, _ in opt.compute_gradients(objective, tensors, opt_config=dict(self._opt_config))]

  def _send_gradients_back(self, t, pending, grads):
    """Sends the gradient of each pending require_grad recv to the peer; returns (gradients, send ops)."""
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    sent, sends = [], []
    for (name, x), g in zip(pending, grads):
      if g is None:
        tf.logging.warning('recv(%r, require_grad=True): the objective does not depend on it; sending zeros', name)
        g = tf.zeros_like(x)
      g = tf.convert_to_tensor(g)
      sends.append(ops.send(self._communicator, name + '_grad', g))
      self.add_train_op(sends[-1], t.name)
      self._grads_sent[t.name].add(name)
      sent.append(g)
    return sent, sends

  def _logged_loss(self, t):
    # A loss_fn that returns a sent tensor has no loss of its own: the mean activation means nothing.
    if t.loss is not None and any(t.loss is s for _, s, _ in self._sent_with_grad.get(t.name, [])):
      return None
    return t.loss

  def _dp_releases_per_step(self, task):
    # With BACKEND_MODE 'noise' the gradient sent back is a second noised release of the same batch.
    noised_back = self._recv_with_grad.get(task) and self._opt_config.get('BACKEND_MODE', 'noise') == 'noise'
    return 2 if noised_back else 1

  # ---- session -------------------------------------------------------------------------------------------
  def _default_save_schedule(self):
    # Both parties must save the same global steps, so that a restart finds a common checkpoint.
    return 1000, None

  def _session_config_or_default(self, config=None):
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    config = config or self._session_config
    user_config = config
    # Receives block an executor thread until the peer's message arrives: leave threads for the rest.
    config = ops.session_config(config, self._communicator)
    # Two parties on one machine (the launcher, tests) split its cores instead of both using all of them.
    intra = os.environ.get('EFL_INTRA_OP_THREADS')
    if intra and not config.intra_op_parallelism_threads:
      try:
        config.intra_op_parallelism_threads = int(intra)
      except ValueError:
        raise ValueError('EFL_INTRA_OP_THREADS must be a whole number of threads, got %r' % (intra,))
    if user_config is None:
      # A party waits for the peer much of a step; a spinning idle pool takes the cores that the transport's
      # threads (and, on a shared machine, the peer) need then.
      config.experimental.disable_thread_spinning = True
    return config

  def _recover(self, error, checkpoint_dir):
    """With EFL_RECOVERY_TIMEOUT_S: after a lost or failed peer, reset the communicator and say to run again.

    The next session waits for the peer's new process, agrees the checkpoint with it and restores it (model,
    stages, readers): nothing the script wrote changes.
    """
    from efl.communicator import settings  # pylint: disable=g-import-not-at-top

    timeout_s = settings.recovery_timeout_s()
    if timeout_s is None:
      return False
    cause = self._communicator.failure(
      wait_for_detail_s=self._communicator.peer_timeout_s
    ) or failure.communicator_cause(error)
    if cause is None or cause[0] not in ('ConnectionLostError', 'PeerFailedError'):
      return False
    steps = checkpoint_steps(checkpoint_dir)
    what = failure.message(
      cause[0],
      cause[1],
      self._role,
      flags.peer_role(self._role),
      self._communicator.peer_addr,
      self._failed_step,
      steps[-1] if steps else None,
      checkpoint_dir,
      self._communicator.peer_timeout_s,
    ).split(';')[0]
    tf.logging.warning(
      '%s; recovering: waiting up to %g s for the %s to start again (EFL_RECOVERY_TIMEOUT_S)',
      what,
      timeout_s,
      flags.peer_role(self._role),
    )
    self._communicator.reset()
    self._connect_timeout_s = timeout_s
    return True

  def _before_session(self, checkpoint_dir):
    own = checkpoint_steps(checkpoint_dir)
    info = {'checkpoint_steps': own, 'worker_num': flags.get_worker_num(), 'task_index': flags.get_task_index()}
    peer_info = self._communicator.connect(timeout_s=self._connect_timeout_s, info=info) or {}
    _check_peer_cluster(self._role, info, peer_info)
    peer = peer_info.get('checkpoint_steps', [])
    if not own and not peer:
      return None
    common = sorted(set(own) & set(peer))
    if not common:
      raise CheckpointMismatchError(
        'the parties cannot restore the same checkpoint: this %s has steps %s in %r, the peer has steps %s. '
        'Give both parties the checkpoints of the same run (or empty checkpoint dirs to start afresh).'
        % (self._role, own, checkpoint_dir, peer)
      )
    step = common[-1]
    if step != own[-1]:
      tf.logging.warning(
        'restoring step %d, the newest step both parties have (this %s also has %s)', step, self._role, own
      )
    return _checkpoint_path(checkpoint_dir, step)

  def _explain_failure(self, error, checkpoint_dir):
    error = super(FederalModel, self)._explain_failure(error, checkpoint_dir)
    if _found_by_both(error):
      return error
    cause = self._communicator.failure(
      wait_for_detail_s=self._communicator.peer_timeout_s
    ) or failure.communicator_cause(error)
    if cause is None:
      return error
    steps = checkpoint_steps(checkpoint_dir)
    kind, text = cause
    return failure.PeerError(
      failure.message(
        kind,
        text,
        self._role,
        flags.peer_role(self._role),
        self._communicator.peer_addr,
        self._failed_step,
        steps[-1] if steps else None,
        checkpoint_dir,
        self._communicator.peer_timeout_s,
      ),
      kind,
    )

  def _on_cluster_failure(self, message):
    # A step blocked on the peer ends at once, and the peer's worker learns why and stops its own party.
    self._communicator.close(error=message)

  def _outside_failure(self):
    failure = self._communicator.failure()
    return failure[1] if failure else None

  def _after_session(self, error):
    self._communicator.close(error=None if error is None else _summary(error))
