"""The TF send/recv ops: two graphs, each with its own session and Communicator, run in two threads."""

import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl.communicator import Communicator
from efl.lib import ops
from comm_helpers import close_all, connect_both
from ports import pair

# Every test runs on both transports: native kernels and py_funcs.
pytestmark = pytest.mark.usefixtures('transport')

_VALUES = {
  tf.float16: np.array([1.5, -2.25], np.float16),
  tf.float32: np.array([[0.1, 0.2], [0.3, 0.4]], np.float32),
  tf.float64: np.array([np.pi], np.float64),
  tf.int32: np.array([-7, 2**31 - 1], np.int32),
  tf.int64: np.array([2**62], np.int64),
  tf.bool: np.array([True, False, True]),
  tf.uint8: np.array([0, 255], np.uint8),
  tf.string: np.array([b'id-1', b'', b'\xff'], dtype=object),
}

_BIG = np.random.RandomState(0).standard_normal((300, 100)).astype(np.float32)


def _run_in_threads(*fns):
  errors = []

  def wrap(fn):
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert not any(t.is_alive() for t in threads), 'the sessions stalled'
  if errors:
    raise errors[0]


def test_send_recv_ops_between_two_sessions(monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  leader, follower = pair()

  leader_graph, follower_graph = tf.Graph(), tf.Graph()
  with leader_graph.as_default():
    step_input = tf.placeholder(tf.float32, [None, 4])
    send_ops = [ops.send(leader, 'act', step_input)]
    for dtype, value in _VALUES.items():
      send_ops.append(ops.send(leader, 'v_' + dtype.name, tf.constant(value, dtype=dtype)))
    send_ops.append(ops.send(leader, 'side', tf.constant([b'block'], tf.string), sync=False))
    # Over 64 KB: the native kernel hands the tensor's own buffer to gRPC.
    send_ops.append(ops.send(leader, 'big', tf.constant(_BIG)))
    send_ops.append(ops.send(leader, 'seq', step_input[:1] + 1.0, sync=False))
    grad = ops.recv(leader, 'act_grad', tf.float32, shape=[-1, 4])
    with tf.control_dependencies(send_ops):
      leader_out = tf.identity(grad)
  with follower_graph.as_default():
    act = ops.recv(follower, 'act', tf.float32, shape=[-1, 4])
    assert act.shape.as_list() == [None, 4]
    received = {dtype: ops.recv(follower, 'v_' + dtype.name, dtype) for dtype in _VALUES}
    received['side'] = ops.recv(follower, 'side', tf.string, sync=False)
    received['big'] = ops.recv(follower, 'big', tf.float32, shape=_BIG.shape)
    received['seq'] = ops.recv(follower, 'seq', tf.float32, sync=False)
    follower_send = ops.send(follower, 'act_grad', act * 2.0)

  assert connect_both(leader, follower) == [{}, {}]
  leader_results, follower_results = [], []

  def run_leader():
    with tf.Session(graph=leader_graph, config=ops.session_config(comm=leader)) as sess:
      for step in range(3):
        feed = np.full((2, 4), step, np.float32)
        leader_results.append(sess.run(leader_out, {step_input: feed}))
        leader.advance_step()

  def run_follower():
    with tf.Session(graph=follower_graph, config=ops.session_config(comm=follower)) as sess:
      for _ in range(3):
        follower_results.append(sess.run([received, follower_send])[0])
        follower.advance_step()

  try:
    _run_in_threads(run_leader, run_follower)
  finally:
    close_all(leader, follower)
  for step, out in enumerate(leader_results):
    np.testing.assert_array_equal(out, np.full((2, 4), 2.0 * step, np.float32))
  assert [r['side'].tolist() for r in follower_results] == [[b'block']] * 3
  assert [r['seq'].tolist() for r in follower_results] == [[[1.0] * 4], [[2.0] * 4], [[3.0] * 4]]
  for r in follower_results:
    assert r['big'].tobytes() == _BIG.tobytes()
  for dtype, value in _VALUES.items():
    got = follower_results[-1][dtype]
    assert got.dtype == value.dtype and got.tolist() == value.tolist(), dtype


def test_recv_dtype_mismatch_is_reported(monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  leader, follower = pair()
  with tf.Graph().as_default():
    wrong = ops.recv(follower, 'x', tf.int32)
    leader.register_send('x')
    try:
      assert connect_both(leader, follower) == [{}, {}]
      leader.send('x', 0, np.zeros(3, np.float32))
      with tf.Session() as sess:
        with pytest.raises(tf.errors.InvalidArgumentError, match='expects int32 but the peer sent float32'):
          sess.run(wrong)
    finally:
      close_all(leader, follower)


def test_unsupported_dtype_is_refused_at_graph_build():
  comm = Communicator('leader', '127.0.0.1:1', '127.0.0.1:2')
  with tf.Graph().as_default():
    with pytest.raises(TypeError, match='complex64'):
      ops.recv(comm, 'x', tf.complex64)


def test_send_op_over_the_size_limit_names_the_variable(monkeypatch):
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  monkeypatch.setenv('EFL_CLIENT_MAX_SEND_MESSAGE_SIZE', '4096')
  leader, follower = pair()
  with tf.Graph().as_default():
    send = ops.send(leader, 'x', tf.zeros([2048], tf.float32))
    follower.register_recv('x')
    try:
      assert connect_both(leader, follower) == [{}, {}]
      with tf.Session() as sess:
        with pytest.raises(
          tf.errors.InvalidArgumentError, match='over the limit of 4096 bytes; raise EFL_CLIENT_MAX_SEND_MESSAGE_SIZE'
        ):
          sess.run(send)
    finally:
      close_all(leader, follower)


def test_a_waiting_native_recv_holds_no_thread(monkeypatch, transport):
  # The leader's run receives x0..x3 and sends 'y'; the follower sends the x's only after it received 'y'. On
  # one inter-op thread, receives that held their thread while they waited would keep the send from running.
  if transport != 'native':
    pytest.skip('a py_func receive holds its thread; session_config() counts it')
  monkeypatch.setenv('EFL_CLOSE_TIMEOUT_S', '3')
  leader, follower = pair(default_timeout_milliseconds=20000)  # a stall fails within 20 s
  names = ['x%d' % i for i in range(4)]
  leader_graph, follower_graph = tf.Graph(), tf.Graph()
  with leader_graph.as_default():
    # The send waits for an op that the one thread takes up after the receives (its queue is last in, first out).
    late = tf.py_func(lambda: time.sleep(0.2), [], [], stateful=True)
    xs = [ops.recv(leader, n, tf.float32) for n in names]
    with tf.control_dependencies([late]):
      send_y = ops.send(leader, 'y', tf.constant([1.0, 2.0]))
  with follower_graph.as_default():
    y = ops.recv(follower, 'y', tf.float32)
    send_xs = [ops.send(follower, n, y * i) for i, n in enumerate(names)]
  # The native receives need no thread of the pool; strings and the Python transport's do.
  assert ops.session_config(comm=leader).inter_op_parallelism_threads == 2
  one_thread = tf.ConfigProto(inter_op_parallelism_threads=1, use_per_session_threads=True)
  assert connect_both(leader, follower) == [{}, {}]
  got = {}

  def run_leader():
    with tf.Session(graph=leader_graph, config=one_thread) as sess:
      got['xs'] = sess.run([xs, send_y])[0]

  def run_follower():
    with tf.Session(graph=follower_graph) as sess:
      sess.run(send_xs)

  try:
    _run_in_threads(run_leader, run_follower)
  finally:
    close_all(leader, follower)
  assert [x.tolist() for x in got['xs']] == [[1.0 * i, 2.0 * i] for i in range(4)]
