"""The leader's backward pass: its own weight gradients wait until the peer's gradient is sent."""

import numpy as np
import tensorflow.compat.v1 as tf

from efl.framework.federal_model import _defer_until_sent

tf.disable_eager_execution()


def _ancestors(tensors_or_ops):
  seen, stack = set(), [getattr(x, 'op', x) for x in tensors_or_ops]
  while stack:
    op = stack.pop()
    if op not in seen:
      seen.add(op)
      stack.extend(t.op for t in op.inputs)
      stack.extend(op.control_inputs)
  return seen


def _split_head(defer):
  """A leader-like head on its own features `x` and a received tensor `r`; returns the gradients and the send."""
  graph = tf.Graph()
  with graph.as_default():
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(8, 5).astype(np.float32))
    r = tf.constant(rng.randn(8, 3).astype(np.float32))  # stands for the peer's activation
    w_own = tf.Variable(rng.randn(5, 4).astype(np.float32))
    w_head = tf.Variable(rng.randn(7, 2).astype(np.float32))
    logits = tf.matmul(tf.concat([tf.tanh(tf.matmul(x, w_own)), r], axis=1), w_head)
    loss = tf.reduce_mean(tf.square(logits))
    opt = tf.train.GradientDescentOptimizer(0.1)
    first = len(graph.get_operations())
    both = opt.compute_gradients(loss, [w_own, w_head, r], gate_gradients=opt.GATE_NONE)
    backward = graph.get_operations()[first:]
    peer_grad = both[2][0]
    send = tf.identity(peer_grad, name='send').op  # stands for the send op
    if defer:
      _defer_until_sent(backward, [peer_grad], [send])
    own_grads = [both[0][0], both[1][0]]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      values = sess.run(own_grads + [peer_grad])
  return own_grads, peer_grad, send, values


def test_own_gradients_wait_for_the_send_and_stay_exact():
  own, peer, send, deferred = _split_head(defer=True)
  assert send not in _ancestors([peer])  # the peer's gradient never waits for anything of this party's
  for g in own:
    assert send in _ancestors([g]), g.name
  _, _, _, plain = _split_head(defer=False)
  for a, b in zip(deferred, plain):
    np.testing.assert_array_equal(a, b)


def test_without_sends_nothing_changes():
  graph = tf.Graph()
  with graph.as_default():
    w = tf.Variable(1.0)
    first = len(graph.get_operations())
    g = tf.gradients(w * w, [w])[0]
    backward = graph.get_operations()[first:]
    before = [list(op.control_inputs) for op in backward]
    _defer_until_sent(backward, [g], [])
    assert [list(op.control_inputs) for op in backward] == before
