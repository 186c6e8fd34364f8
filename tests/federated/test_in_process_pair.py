"""Both parties in one process (two threads, two graphs): FederalModel takes its role and addresses as
arguments, so a test needs no command line. Real gRPC on 127.0.0.1."""

import queue
import threading

import numpy as np
import tensorflow.compat.v1 as tf

import efl
from ports import ANY_PORT

N, BATCH, H = 256, 32, 3


def _party(role, leader_port, results):
  rng = np.random.RandomState(0)
  x = rng.normal(size=(N, 6)).astype(np.float32)
  y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
  mine = x[:, :3] if role == 'leader' else x[:, 3:]
  losses = []

  class Losses(tf.train.SessionRunHook):
    def __init__(self, loss):
      self.loss = loss

    def before_run(self, run_context):
      return tf.train.SessionRunArgs(self.loss)

    def after_run(self, run_context, run_values):
      losses.append(float(run_values.results))

  def input_fn(model, mode):
    ds = tf.data.Dataset.from_tensor_slices({'x': mine, 'label': y, 'id': np.arange(N)}).batch(BATCH).repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    return efl.FederalSample(
      feats,
      {'x': [tf.feature_column.numeric_column('x', 3)], 'label': [tf.feature_column.numeric_column('label', 1)]},
      model.federal_role,
      model.communicator,
      sample_id_name='id',
    )

  def loss_fn(model, sample):
    h = tf.layers.dense(sample['x'], H, name='own')
    if role == 'follower':
      model.send('h', h, require_grad=True)
      return h
    logits = tf.layers.dense(tf.concat([h, tf.reshape(model.recv('h', require_grad=True), [-1, H])], 1), 1, name='head')
    loss = tf.losses.sigmoid_cross_entropy(sample['label'], logits)
    model.add_hooks([Losses(loss)])
    return loss

  try:
    with tf.Graph().as_default():
      # The leader listens on a port it picks and learns the follower's from its Hello (peer port 0); the
      # follower is given the leader's port.
      peer = ANY_PORT if role == 'leader' else '127.0.0.1:%d' % leader_port.get(timeout=120)
      model = efl.FederalModel(federal_role=role, local_addr=ANY_PORT, peer_addr=peer)
      assert model.federal_role == role and model.communicator.local_addr == ANY_PORT
      if role == 'leader':
        leader_port.put(model.communicator.listen())
      model.input_fn(input_fn).loss_fn(loss_fn)
      model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.5)))
      model.compile()
      model.fit(efl.procedure_fn.train(max_step=40), log_step=100)
    results[role] = losses
  except Exception as e:  # pylint: disable=broad-except
    results[role] = e


def test_both_parties_in_one_process():
  leader_port = queue.Queue()
  results = {}
  threads = [threading.Thread(target=_party, args=(role, leader_port, results)) for role in ('leader', 'follower')]
  for t in threads:
    t.start()
  for t in threads:
    t.join(180)
  assert not any(t.is_alive() for t in threads)
  for role in ('leader', 'follower'):
    assert not isinstance(results[role], Exception), results[role]
  losses = results['leader']
  assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]) * 0.8, losses
