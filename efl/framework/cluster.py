"""A party's TensorFlow cluster: parameter servers hold the variables, each worker trains with its own peer.

Configured by EFLS's flags `--ps_num`, `--worker_num`, `--task_name ps|worker`, `--task_index` and the party's
addresses: the "cluster" key of `-c/--config` or of $TF_CONFIG, `{"ps": [...], "worker": [...]}`. Worker i of
one party talks only to worker i of the other: its communicator addresses are `--local_addr`/`--peer_addr`, else
entry i of the config's "local_addrs"/"peer_addrs" lists.

With `--ps_num 0 --worker_num 1` (the default) there is no cluster and nothing here changes how a party runs.
"""

import atexit
import contextlib
import json
import os
import socket
import sys
import threading
import time

import tensorflow.compat.v1 as tf

from efl import flags

# Job-wide signals kept on ps 0, outside checkpoints: workers that finished, and the first failure.
_CONTROL_SCOPE = 'efl_cluster'
# How long a session op may wait on another task before it fails (a dead parameter server otherwise hangs it).
DEFAULT_OPERATION_TIMEOUT_MS = 30000

_server = None


class ClusterConfigError(ValueError):
  """The cluster flags or addresses are inconsistent."""


def enabled():
  """True when the party runs as a cluster (parameter servers or several workers)."""
  return flags.get_ps_num() > 0 or flags.get_worker_num() > 1 or flags.get_task_name() == 'ps'


def spec():
  """The checked `tf.train.ClusterSpec` of this party; raises ClusterConfigError naming the problem and the fix."""
  ps_num, worker_num = flags.get_ps_num(), flags.get_worker_num()
  name, index = flags.get_task_name(), flags.get_task_index()
  if name not in ('ps', 'worker'):
    raise ClusterConfigError("--task_name must be 'ps' or 'worker', got %r" % (name,))
  if worker_num < 1:
    raise ClusterConfigError('--worker_num must be at least 1, got %d' % worker_num)
  if ps_num < 0:
    raise ClusterConfigError('--ps_num must be 0 or more, got %d' % ps_num)
  if name == 'ps' and ps_num == 0:
    raise ClusterConfigError(
      '--task_name=ps needs parameter servers, but --ps_num is 0; pass --ps_num >= 1 '
      '(and the "ps" addresses in the cluster spec)'
    )
  if worker_num > 1 and ps_num == 0:
    raise ClusterConfigError(
      '--worker_num=%d workers share their variables on parameter servers, but --ps_num '
      'is 0; pass --ps_num >= 1' % worker_num
    )
  count = ps_num if name == 'ps' else worker_num
  if not 0 <= index < count:
    raise ClusterConfigError(
      '--task_index=%d is out of range for --task_name=%s: the party has %d %s task(s), '
      'indices 0 to %d' % (index, name, count, name, count - 1)
    )
  try:
    cluster = flags.get_cluster()
  except ValueError as e:
    raise ClusterConfigError(str(e))
  for job, want in (('ps', ps_num), ('worker', worker_num)):
    have = cluster.get(job) or []
    if not isinstance(have, list) or len(have) != want:
      raise ClusterConfigError(
        'the cluster spec lists %d "%s" address(es) but --%s_num is %d; give one address per task '
        '(cluster: %s)' % (len(have) if isinstance(have, list) else 0, job, job, want, json.dumps(cluster))
      )
  own = cluster[name][index]
  if not own or not isinstance(own, str) or ':' not in own:
    raise ClusterConfigError(
      'the cluster spec has no address for this task (%s %d): put its "host:port" at '
      'index %d of the "%s" list' % (name, index, index, name)
    )
  return tf.train.ClusterSpec({'ps': cluster['ps'], 'worker': cluster['worker']})


def server(config=None):
  """This process's `tf.train.Server` (started on first use, once per process; `config` sets its thread pools)."""
  global _server
  if _server is None:
    _server = tf.train.Server(
      spec(),
      job_name=flags.get_task_name(),
      task_index=flags.get_task_index(),
      config=session_config(config),
      start=True,
    )
    atexit.register(_drop_server)
  return _server


def _drop_server():
  # Stopping the server while TensorFlow's modules are still loaded: at interpreter teardown its destructor
  # prints a spurious traceback.
  global _server
  _server = None


def worker_device():
  return '/job:worker/task:%d' % flags.get_task_index()


def operation_timeout_ms():
  return int(flags.get_config('operation_timeout_in_ms', default=DEFAULT_OPERATION_TIMEOUT_MS))


def session_config(config=None):
  """`config` (copied) for a session of this task.

  It sees only the parameter servers and its own worker (the
  workers never wait for each other), and its ops fail instead of hanging when another task is gone.
  """
  out = tf.ConfigProto()
  if config is not None:
    out.CopyFrom(config)
  if flags.get_task_name() == 'worker':
    del out.device_filters[:]
    out.device_filters.extend(['/job:ps', worker_device()])
  # A distributed session has no per-session pools: the server's inter-op pool (sized from this config when
  # the server starts) must hold the threads that receives block while they wait for the peer.
  out.use_per_session_threads = False
  if out.session_inter_op_thread_pool:
    threads = max(p.num_threads for p in out.session_inter_op_thread_pool)
    out.inter_op_parallelism_threads = max(out.inter_op_parallelism_threads, threads)
    del out.session_inter_op_thread_pool[:]
  if not out.operation_timeout_in_ms:
    out.operation_timeout_in_ms = operation_timeout_ms()
  return out


def _local_variables_on_worker(next_creator, **kwargs):
  # Local variables (metrics, ...) belong to one worker: shared on a parameter server, the workers' local
  # initializers would reset each other's.
  collections = kwargs.get('collections')
  if collections and tf.GraphKeys.LOCAL_VARIABLES in collections and tf.GraphKeys.GLOBAL_VARIABLES not in collections:
    with tf.device(worker_device()):
      return next_creator(**kwargs)
  return next_creator(**kwargs)


@contextlib.contextmanager
def placement():
  """Builds the graph for this worker.

  Global variables on the parameter servers (round robin; partitioned
  variables spread over them), other ops and local variables on the worker. Nothing without a cluster.
  """
  if not enabled():
    yield
    return
  setter = tf.train.replica_device_setter(ps_tasks=flags.get_ps_num(), worker_device=worker_device(), cluster=spec())
  with tf.device(setter), tf.variable_creator_scope(_local_variables_on_worker):
    yield


class JobControl(object):
  """A party's job-wide state on ps 0: how many workers finished, and the first failure (empty: none).

  Every task builds the same two variables; the parameter server initializes them before any worker uses them.
  They are in no collection, so checkpoints and the chief's initializer leave them alone.
  """

  def __init__(self):
    worker_num = flags.get_worker_num()
    with tf.device('/job:ps/task:0'), tf.name_scope(None):
      # done[i] is 1 once worker i finished: the ps tells a finished worker from a dead one.
      self.done = tf.Variable(
        tf.zeros([worker_num], tf.int32), trainable=False, collections=[], name=_CONTROL_SCOPE + '_done'
      )
      self.error = tf.Variable(b'', dtype=tf.string, trainable=False, collections=[], name=_CONTROL_SCOPE + '_error')
      self.initializer = tf.group(self.done.initializer, self.error.initializer)
      self.ready = tf.logical_and(tf.is_variable_initialized(self.done), tf.is_variable_initialized(self.error))
      self.finish = tf.scatter_update(self.done, [min(flags.get_task_index(), worker_num - 1)], [1])
      self._message = tf.placeholder(tf.string, [])
      # The first failure stays: later ones are its consequences.
      self.fail = self.error.assign(tf.where(tf.equal(self.error, b''), self._message, self.error))

  def report_failure(self, sess, message):
    sess.run(self.fail, feed_dict={self._message: message.encode('utf-8')})


def _answers(address, timeout_s=3.0):
  """Whether a TCP connection to `address` ("host:port") opens: a task's server listens until its process ends."""
  host, port = address.rsplit(':', 1)
  try:
    socket.create_connection((host.strip('[]'), int(port)), timeout=timeout_s).close()
    return True
  except (OSError, ValueError):
    return False


def run_ps(poll_s=0.5, max_wait_s=None, linger_s=3.0):
  """The body of a `--task_name=ps` process.

  Serves variables until every worker of the party finished (returns 0) or one reported a failure (raises
  RuntimeError naming it). Only ps 0 holds the job's state; the others watch it there. After a failure ps 0
  serves `linger_s` longer, so that the workers read the failure rather than find ps 0 gone.
  """
  srv = server()
  graph = tf.Graph()
  with graph.as_default():
    control = JobControl()
  worker_num = flags.get_worker_num()
  index = flags.get_task_index()
  addresses = spec().job_tasks('worker')
  seen = set()
  tf.logging.info(
    'parameter server %d of %d serving at %s; waiting for %d worker(s)',
    index,
    flags.get_ps_num(),
    srv.target,
    worker_num,
  )
  started = time.time()
  # The session touches parameter servers only: closing a session also closes its state on every task it ran
  # ops on, and a worker that is exiting may never answer that. Workers are watched with plain TCP connects.
  config = session_config()
  del config.device_filters[:]
  config.device_filters.extend(['/job:ps/task:0', '/job:ps/task:%d' % index])
  with tf.Session(srv.target, graph=graph, config=config) as sess:
    if index == 0:
      sess.run(control.initializer)
    while True:
      try:
        if sess.run(control.ready):
          done, error = sess.run([control.done, control.error])
          if error:
            if index == 0:
              time.sleep(linger_s)
            raise RuntimeError('the job failed: %s' % error.decode('utf-8', 'replace'))
          if index == 0:
            for i in range(worker_num):
              if done[i]:
                continue
              if _answers(addresses[i]):
                seen.add(i)
              elif i in seen and not sess.run(control.done)[i]:  # not a worker that finished meanwhile
                message = '%sworker %d (%s) is gone: its process died or its host is unreachable' % (
                  _role_prefix(),
                  i,
                  addresses[i],
                )
                control.report_failure(sess, message)
                time.sleep(linger_s)
                raise RuntimeError('the job failed: %s' % message)
          if int(sum(done)) >= worker_num:
            tf.logging.info('parameter server %d: all %d worker(s) finished; exiting', index, worker_num)
            return 0
      except tf.errors.UnavailableError as e:
        raise RuntimeError(
          'parameter server %d lost parameter server 0 (%s); the job cannot go on' % (index, str(e).split('\n')[0])
        )
      except tf.errors.DeadlineExceededError as e:
        raise RuntimeError(
          'parameter server %d: parameter server 0 does not answer (%s)' % (index, str(e).split('\n')[0])
        )
      if max_wait_s is not None and time.time() - started > max_wait_s:
        raise RuntimeError('parameter server %d: the workers did not finish within %g s' % (index, max_wait_s))
      time.sleep(poll_s)  # polling a variable on the server itself: cheap, and bounded by the checks above


def task_label():
  """'leader worker 1', 'follower ps 0', ...: how logs and errors name this task."""
  try:
    role = flags.get_federal_role() + ' '
  except ValueError:
    role = ''
  return '%s%s %d' % (role, flags.get_task_name(), flags.get_task_index())


class JobStoppedError(RuntimeError):
  """This worker stopped because another task of its party failed (that task's error says why)."""


def _peer_label():
  try:
    return '%s worker %d' % (flags.peer_role(flags.get_federal_role()), flags.get_task_index())
  except ValueError:
    return None


def _role_prefix():
  try:
    return flags.get_federal_role() + ' '
  except ValueError:
    return ''


def _dead_ps(seen):
  """The first parameter server that accepted a TCP connection before (`seen`, updated) and refuses one now."""
  for i, address in enumerate(spec().job_tasks('ps')):
    if _answers(address, timeout_s=2.0):
      seen.add(i)
    elif i in seen:
      return i, address
  return None


def _exit_after(delay_s, message):
  """Ends the process with status 1 after `delay_s` unless it ended before (see JobControlHook)."""

  def expire():
    tf.logging.error('%s; TensorFlow still waits on the dead task after %g s: exiting with status 1', message, delay_s)
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    os._exit(1)  # pylint: disable=protected-access

  timer = threading.Timer(delay_s, expire)
  timer.daemon = True
  timer.start()
  return timer


class JobControlHook(tf.train.SessionRunHook):
  """Stops this worker when another task of its party failed; waits at the start for the job's state on ps 0.

  A watchdog thread runs from the monitored session's start: a step may be blocked on the peer when the failure
  happens, so `on_failure(message)` (e.g. closing the communicator with that message, which the peer party then
  reports) is called when ps 0 reports a failure or a parameter server is gone. Ps 0's state is read through a
  session made while ps 0 answered (creating a session waits for every parameter server without a deadline);
  parameter servers are watched with TCP connects.

  A dead parameter server can leave TensorFlow itself waiting without a deadline (creating, running or closing a
  session). So once one is gone the process ends with status 1 if fit() has not returned `exit_grace_s` later:
  the failure is logged and already told to the peer party; nothing else could end the wait.
  """

  def __init__(self, control, wait_s=60.0, on_failure=None, poll_s=1.0, exit_grace_s=10.0, explain=None):
    self._control = control
    self._explain = explain  # () -> why this worker's steps fail from outside its party (the peer), or None
    self._wait_s = wait_s
    self._on_failure = on_failure
    self._poll_s = poll_s
    self._exit_grace_s = exit_grace_s
    self._stop = None
    self._session = None  # ps 0's state, for the watchdog
    self._exit_timer = None
    self.failure = None
    self.ps_lost = False

  def begin(self):
    if self._stop is None:
      self._stop = threading.Event()
      threading.Thread(target=self._watch, args=(self._stop,), name='efl-cluster-watch', daemon=True).start()

  def _read_error(self, options):
    session = self._session
    if session is None:
      return b''
    try:
      return session.run(self._control.error, options=options)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as e:
      self.ps_lost = True
      return (
        '%sps 0 (%s) does not answer: %s' % (_role_prefix(), spec().task_address('ps', 0), str(e).split('\n')[0][:200])
      ).encode('utf-8')

  def _watch(self, stop):
    options = tf.RunOptions(timeout_in_ms=int(self._poll_s * 5000))
    seen = set()
    try:
      # The first probe at once: a parameter server killed within the first poll interval would otherwise never
      # have been seen answering, and so never be reported.
      wait_s = 0
      while not stop.wait(wait_s):
        wait_s = self._poll_s
        dead = _dead_ps(seen)
        if dead is not None:
          self.ps_lost = True
          error = (
            '%sps %d (%s) is gone: its process died or its host is unreachable' % (_role_prefix(), dead[0], dead[1])
          ).encode('utf-8')
        else:
          error = self._read_error(options)
        if stop.is_set():
          return
        if error:
          self._fail(error.decode('utf-8', 'replace'))
          return
    except Exception as e:  # pylint: disable=broad-except
      if not stop.is_set():  # else stop_watch() closed the session under a read
        tf.logging.warning('%s: the watch of the parameter servers ended: %s', task_label(), e)

  def _fail(self, failure):
    self.failure = self.failure or failure
    message = '%s stops: %s' % (task_label(), self.failure)
    tf.logging.error(message)
    if self.ps_lost and self._exit_timer is None:
      self._exit_timer = _exit_after(self._exit_grace_s, message)
    if self._on_failure is not None:
      self._on_failure(message)

  def stop_watch(self):
    """Stops the watchdog (fit() calls it when the session ended)."""
    if self._stop is not None:
      self._stop.set()
    session, self._session = self._session, None
    if session is not None and not self.ps_lost:
      session.close()

  def disarm(self):
    """fit() ends: its caller decides what comes next, unless a parameter server is gone.

    Then TensorFlow may still wait on it when the session objects are closed later, so the timer stays armed.
    """
    if self._exit_timer is not None and not self.ps_lost:
      self._exit_timer.cancel()

  def after_create_session(self, session, coord):
    del coord
    options = tf.RunOptions(timeout_in_ms=5000)
    if self._session is not None:
      # TF's monitored session creates a new session after a task became unavailable: in a federated job that
      # task's peer has lost its counterpart, so this worker stops instead of waiting for it.
      failure = self._read_error(options).decode('utf-8', 'replace')
      outside = self._explain() if self._explain is not None else None
      self._fail(failure or outside or 'a task of the %sparty became unavailable mid-training' % _role_prefix())
      self.stop_watch()
      raise JobStoppedError('%s stops: %s' % (task_label(), self.failure))
    deadline = time.time() + self._wait_s
    while not session.run(self._control.ready, options=options):
      if time.time() > deadline:
        raise RuntimeError(
          "parameter server 0 did not set up the job state within %g s; start the party's "
          '--task_name=ps processes with the same cluster spec' % self._wait_s
        )
      time.sleep(0.1)
    watch = tf.Session(server().target, graph=self._control.done.graph, config=session_config())
    watch.run(self._control.error, options=options)  # sets the session up while ps 0 answers
    self._session = watch

  def end(self, session):
    del session
    self.stop_watch()
    self._stop = None  # a later session (after a recovery) starts afresh

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._control.error)

  def after_run(self, run_context, run_values):
    if run_values.results:
      raise JobStoppedError('%s stops: %s' % (task_label(), run_values.results.decode('utf-8', 'replace')))


def report_end(control, error=None, summary=None):
  """Tells ps 0 that this worker finished (`error` None) or failed (`error`, `summary` its one-line account).

  Best effort: when ps 0 itself is gone there is nobody to tell. Returns the party's failure when this worker
  finished but another task failed, else None.
  """
  if not _answers(spec().task_address('ps', 0)):
    tf.logging.warning(
      '%s could not report its end: parameter server 0 (%s) is gone', task_label(), spec().task_address('ps', 0)
    )
    return None
  try:
    with tf.Session(server().target, graph=control.done.graph, config=session_config()) as sess:
      if error is None:
        sess.run(control.finish)
        failed = sess.run(control.error)
        if failed:
          # This worker's share is done, but the party's job failed meanwhile: the job did not succeed.
          return failed.decode('utf-8', 'replace')
        tf.logging.info('%s finished', task_label())
      elif isinstance(error, JobStoppedError):
        # Usually a consequence of the failure ps 0 already holds (the first one stays); else its cause came
        # from the peer party, and the other workers must learn it.
        control.report_failure(sess, str(error))
      else:
        peer = _peer_label()
        control.report_failure(
          sess, '%s failed%s: %s' % (task_label(), ' (paired with the %s)' % peer if peer else '', summary or error)
        )
  except tf.errors.OpError as e:
    tf.logging.warning('%s could not report its end to parameter server 0: %s', task_label(), str(e).split('\n')[0])
  return None


_WORKER_STEPS = 'efl_worker_steps'


def worker_steps():
  """Each worker's count of its training steps: an int64 vector on the parameter servers, saved in checkpoints.

  Worker 0 of the leader and worker 0 of the follower run the same steps (every step exchanges tensors), so
  worker 0's count names the party's checkpoints identically on both sides; the global step, which every
  worker advances asynchronously, would not.
  """
  graph = tf.get_default_graph()
  found = graph.get_collection(_WORKER_STEPS)
  if found:
    return found[0]
  # Created where a train op is built: its initializer must not inherit that op's control dependencies.
  with tf.name_scope(None), tf.control_dependencies(None):
    steps = tf.Variable(tf.zeros([flags.get_worker_num()], tf.int64), trainable=False, name=_WORKER_STEPS)
  graph.add_to_collection(_WORKER_STEPS, steps)
  return steps


def count_step():
  """The op adding this worker's training step to `worker_steps()`."""
  return tf.scatter_add(worker_steps(), [flags.get_task_index()], tf.ones([1], tf.int64))


class PairCheckpointSaverHook(tf.train.SessionRunHook):
  """The chief's checkpoints in a cluster, every `save_steps` steps of worker pair 0, named by that count.

  Like `tf.train.CheckpointSaverHook` it saves when the session starts, every `save_steps` steps, and at the
  end; both parties' chiefs thus hold checkpoints of the same numbers, which is what a restart agrees on. Every
  worker's reader position is a variable on the parameter servers, so each checkpoint holds them all.
  """

  def __init__(self, checkpoint_dir, save_steps, scaffold):
    if not save_steps or save_steps < 1:
      raise ValueError(
        'a party running as a cluster saves every N steps of worker pair 0, so that both '
        'parties save the same steps: give save_checkpoint_steps >= 1, got %r' % (save_steps,)
      )
    self._path = os.path.join(checkpoint_dir, 'model.ckpt')
    self._save_steps = int(save_steps)
    self._scaffold = scaffold
    self._last = None

  def begin(self):
    self._count = worker_steps()[0]

  def _save(self, session, count):
    if count == self._last:
      return
    tf.logging.info('saving checkpoint %d (steps of worker pair 0) to %s', count, self._path)
    self._scaffold.saver.save(session, self._path, global_step=count, write_meta_graph=self._last is None)
    self._last = count

  def after_create_session(self, session, coord):
    del coord
    self._save(session, int(session.run(self._count)))

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._count)

  def after_run(self, run_context, run_values):
    # The count fetched before this run; the steps of this run show in the next one.
    count = int(run_values.results)
    if count >= self._last + self._save_steps:
      self._save(run_context.session, count)

  def end(self, session):
    self._save(session, int(session.run(self._count)))


class WorkerSessionCreator(tf.train.WorkerSessionCreator):
  """A non-chief worker's session.

  It checks every half second (not TF's 30 s) whether the chief has
  initialized or restored the variables.
  """

  def _get_session_manager(self):
    if self._session_manager is None:
      self._session_manager = tf.train.SessionManager(
        local_init_op=self._scaffold.local_init_op,
        ready_op=self._scaffold.ready_op,
        ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
        graph=tf.get_default_graph(),
        recovery_wait_secs=0.5,
      )
    return self._session_manager
