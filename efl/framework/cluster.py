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
    raise ClusterConfigError('--task_name=ps needs parameter servers, but --ps_num is 0; pass --ps_num >= 1 '
                             '(and the "ps" addresses in the cluster spec)')
  if worker_num > 1 and ps_num == 0:
    raise ClusterConfigError('--worker_num=%d workers share their variables on parameter servers, but --ps_num '
                             'is 0; pass --ps_num >= 1' % worker_num)
  count = ps_num if name == 'ps' else worker_num
  if not 0 <= index < count:
    raise ClusterConfigError('--task_index=%d is out of range for --task_name=%s: the party has %d %s task(s), '
                             'indices 0 to %d' % (index, name, count, name, count - 1))
  try:
    cluster = flags.get_cluster()
  except ValueError as e:
    raise ClusterConfigError(str(e))
  for job, want in (('ps', ps_num), ('worker', worker_num)):
    have = cluster.get(job) or []
    if not isinstance(have, list) or len(have) != want:
      raise ClusterConfigError(
          'the cluster spec lists %d "%s" address(es) but --%s_num is %d; give one address per task '
          '(cluster: %s)' % (len(have) if isinstance(have, list) else 0, job, job, want, json.dumps(cluster)))
  own = cluster[name][index]
  if not own or not isinstance(own, str) or ':' not in own:
    raise ClusterConfigError('the cluster spec has no address for this task (%s %d): put its "host:port" at '
                             'index %d of the "%s" list' % (name, index, index, name))
  return tf.train.ClusterSpec({'ps': cluster['ps'], 'worker': cluster['worker']})


def server(config=None):
  """This process's `tf.train.Server` (started on first use, once per process; `config` sets its thread pools)."""
  global _server
  if _server is None:
    _server = tf.train.Server(spec(), job_name=flags.get_task_name(), task_index=flags.get_task_index(),
                              config=session_config(config), start=True)
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
  setter = tf.train.replica_device_setter(ps_tasks=flags.get_ps_num(), worker_device=worker_device(),
                                          cluster=spec())
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
      self.done = tf.Variable(tf.zeros([worker_num], tf.int32), trainable=False, collections=[],
                              name=_CONTROL_SCOPE + '_done')
      self.error = tf.Variable(b'', dtype=tf.string, trainable=False, collections=[],
                               name=_CONTROL_SCOPE + '_error')
      self.initializer = tf.group(self.done.initializer, self.error.initializer)
      self.ready = tf.logical_and(tf.is_variable_initialized(self.done), tf.is_variable_initialized(self.error))
      self.finish = tf.scatter_update(self.done, [min(flags.get_task_index(), worker_num - 1)], [1])
      self._message = tf.placeholder(tf.string, [])
      # The first failure stays: later ones are its consequences.
      self.fail = self.error.assign(tf.where(tf.equal(self.error, b''), self._message, self.error))

  def report_failure(self, sess, message):
    sess.run(self.fail, feed_dict={self._message: message.encode('utf-8')})


def run_ps(poll_s=0.5, max_wait_s=None):
  """The body of a `--task_name=ps` process.

  Serves variables until every worker of the party finished (returns
  0) or one reported a failure (raises RuntimeError naming it). Only ps 0 holds the job's state; the others
  watch it there.
  """
  import time  # pylint: disable=g-import-not-at-top
  srv = server()
  graph = tf.Graph()
  with graph.as_default():
    control = JobControl()
    # Ps 0 asks each running worker's server for a trivial op: one that answered before and no longer does died
    # without telling (kill -9, a lost host).
    feed = tf.placeholder(tf.int32, [])
    probes = []
    for i in range(flags.get_worker_num()):
      with tf.device('/job:worker/task:%d' % i):
        probes.append(tf.identity(feed))
  probe_options = tf.RunOptions(timeout_in_ms=3000)
  seen = set()
  worker_num = flags.get_worker_num()
  index = flags.get_task_index()
  tf.logging.info('parameter server %d of %d serving at %s; waiting for %d worker(s)', index,
                  flags.get_ps_num(), srv.target, worker_num)
  started = time.time()
  with tf.Session(srv.target, graph=graph, config=session_config()) as sess:
    if index == 0:
      sess.run(control.initializer)
    while True:
      try:
        if sess.run(control.ready):
          done, error = sess.run([control.done, control.error])
          if error:
            raise RuntimeError('the job failed: %s' % error.decode('utf-8', 'replace'))
          if index == 0:
            for i in range(worker_num):
              if done[i]:
                continue
              try:
                sess.run(probes[i], feed_dict={feed: i}, options=probe_options)
                seen.add(i)
              except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
                if i in seen:
                  label = '%sworker %d' % (_role_prefix(), i)
                  message = '%s (%s) is gone: its process died or its host is unreachable (%s)' % (
                      label, spec().task_address('worker', i), str(e).split('\n')[0][:200])
                  control.report_failure(sess, message)
                  raise RuntimeError('the job failed: %s' % message)
          done = int(sum(done))
          if done >= worker_num:
            tf.logging.info('parameter server %d: all %d worker(s) finished; exiting', index, worker_num)
            return 0
      except tf.errors.UnavailableError as e:
        raise RuntimeError('parameter server %d lost parameter server 0 (%s); the job cannot go on'
                           % (index, str(e).split('\n')[0]))
      except tf.errors.DeadlineExceededError as e:
        raise RuntimeError('parameter server %d: parameter server 0 does not answer (%s)'
                           % (index, str(e).split('\n')[0]))
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


class JobControlHook(tf.train.SessionRunHook):
  """Stops this worker when another task of its party failed; waits at the start for the job's state on ps 0.

  A watchdog thread also polls ps 0 every `poll_s`: a step may be blocked on the peer when the failure happens,
  so `on_failure(message)` (e.g. closing the communicator with that message, which the peer party then reports)
  is called when ps 0 reports a failure or stops answering.
  """

  def __init__(self, control, wait_s=60.0, on_failure=None, poll_s=1.0):
    self._control = control
    self._wait_s = wait_s
    self._on_failure = on_failure
    self._poll_s = poll_s
    self._stop = None
    self.failure = None

  def _watch(self, stop):
    options = tf.RunOptions(timeout_in_ms=int(self._poll_s * 5000))
    try:
      with tf.Session(server().target, graph=self._control.done.graph, config=session_config()) as sess:
        while not stop.wait(self._poll_s):
          try:
            error = sess.run(self._control.error, options=options)
          except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as e:
            if stop.is_set():
              return
            error = ('%sps 0 (%s) is unreachable: %s' % (_role_prefix(), spec().task_address('ps', 0),
                                                        str(e).split('\n')[0])).encode('utf-8')
          if error:
            self.failure = error.decode('utf-8', 'replace')
            tf.logging.error('%s stops: %s', task_label(), self.failure)
            if self._on_failure is not None:
              self._on_failure('%s stops: %s' % (task_label(), self.failure))
            return
    except Exception as e:  # pylint: disable=broad-except
      tf.logging.warning('%s: the watch of parameter server 0 ended: %s', task_label(), e)

  def stop_watch(self):
    if self._stop is not None:
      self._stop.set()

  def after_create_session(self, session, coord):
    import time  # pylint: disable=g-import-not-at-top
    del coord
    options = tf.RunOptions(timeout_in_ms=5000)
    if self._stop is not None:
      # TF's monitored session creates a new session after a task became unavailable: in a federated job that
      # task's peer has lost its counterpart, so this worker stops instead of waiting for it.
      self.stop_watch()
      try:
        failure = session.run(self._control.error, options=options).decode('utf-8', 'replace')
      except tf.errors.OpError as e:
        failure = '%sps 0 (%s) is unreachable: %s' % (_role_prefix(), spec().task_address('ps', 0),
                                                     str(e).split('\n')[0][:200])
      self.failure = self.failure or failure or ('a task of the %sparty became unavailable mid-training'
                                                 % _role_prefix())
      if self._on_failure is not None:
        self._on_failure('%s stops: %s' % (task_label(), self.failure))
      raise JobStoppedError('%s stops: %s' % (task_label(), self.failure))
    deadline = time.time() + self._wait_s
    while not session.run(self._control.ready, options=options):
      if time.time() > deadline:
        raise RuntimeError('parameter server 0 did not set up the job state within %g s; start the party\'s '
                           '--task_name=ps processes with the same cluster spec' % self._wait_s)
      time.sleep(0.1)
    import threading  # pylint: disable=g-import-not-at-top
    self.stop_watch()
    self._stop = threading.Event()
    threading.Thread(target=self._watch, args=(self._stop,), name='efl-cluster-watch', daemon=True).start()

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
  if isinstance(error, JobStoppedError):
    return  # a consequence of a failure already reported (or of ps 0's loss: nobody to tell)
  try:
    with tf.Session(server().target, graph=control.done.graph, config=session_config()) as sess:
      if error is None:
        sess.run(control.finish)
        failed = sess.run(control.error)
        if failed:
          # This worker's share is done, but the party's job failed meanwhile: the job did not succeed.
          return failed.decode('utf-8', 'replace')
        tf.logging.info('%s finished', task_label())
      elif not isinstance(error, JobStoppedError):  # that one is a consequence of a failure already reported
        peer = _peer_label()
        control.report_failure(sess, '%s failed%s: %s' % (
            task_label(), ' (paired with the %s)' % peer if peer else '', summary or error))
  except tf.errors.OpError as e:
    tf.logging.warning('%s could not report its end to parameter server 0: %s', task_label(),
                       str(e).split('\n')[0])
  return None


class WorkerSessionCreator(tf.train.WorkerSessionCreator):
  """A non-chief worker's session.

  It checks every half second (not TF's 30 s) whether the chief has
  initialized or restored the variables.
  """

  def _get_session_manager(self):
    if self._session_manager is None:
      self._session_manager = tf.train.SessionManager(
          local_init_op=self._scaffold.local_init_op, ready_op=self._scaffold.ready_op,
          ready_for_local_init_op=self._scaffold.ready_for_local_init_op, graph=tf.get_default_graph(),
          recovery_wait_secs=0.5)
    return self._session_manager
