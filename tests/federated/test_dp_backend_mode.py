"""DP optimizers in federated training, with two real processes over gRPC on 127.0.0.1.

BACKEND_MODE decides what the leader sends back for a received tensor: 'unnoise' the plain gradient of its
summed per-example loss, 'noise' (the default) the clipped and noised one. The follower, whose loss is the sent
tensor, trains through its own DP optimizer on what it receives.
"""

import math
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import dp_party  # noqa: E402
from proc_helpers import run_pair  # noqa: E402

from efl.privacy import analysis  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, 'dp_party.py')


def _run(tmp_path, leader_args, follower_args, env=None):
  out = ['--out', str(tmp_path)]
  res = run_pair(
    SCRIPT, SCRIPT, out + leader_args, out + follower_args, cwd=HERE, timeout=150, env=env, tmp_path=tmp_path
  )
  for role, (rc, log) in res.items():
    assert rc == 0, '%s failed:\n%s' % (role, log[-3000:])
  leader = np.load(os.path.join(str(tmp_path), 'leader.npz'))
  follower = np.load(os.path.join(str(tmp_path), 'follower.npz'))
  return res, leader, follower


def _softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def _follower_weights(w0, xs, grads, clip, microbatches, lr):
  """The follower's W after DP-SGD steps with noise 0: per microbatch mean VJP, clipped, summed, averaged."""
  w = w0.astype(np.float64)
  for x, g in zip(xs, grads):
    b = x.shape[0]
    m = microbatches or b
    per_example = np.einsum('bd,bh->bdh', x.astype(np.float64), g.astype(np.float64))
    records = per_example.reshape(m, b // m, *per_example.shape[1:]).mean(axis=1)
    norms = np.sqrt((records**2).sum(axis=(1, 2)))
    clipped = records * np.minimum(1.0, clip / np.maximum(norms, 1e-30))[:, None, None]
    w -= lr * clipped.sum(axis=0) / m
  return w


def _logged_epsilon(log, gstep):
  m = re.search(r'\[train\] gstep=%d .*epsilon=(\S+)' % gstep, log)
  assert m, 'no epsilon at gstep %d in:\n%s' % (gstep, log[-2000:])
  return m.group(1)


def test_unnoise_sends_the_plain_gradient_back(tmp_path):
  steps, batch = 3, 256
  # The seed's setting: DP optimizers on both sides, BACKEND_MODE='unnoise'; epsilon from the environment.
  common = ['--steps', str(steps), '--batch', str(batch), '--backend', 'unnoise']
  res, leader, follower = _run(
    tmp_path, common + ['--leader_loss', 'ce'], common + ['--lr', '0.5'], env={'EFL_DP_NUM_EXAMPLES': str(dp_party.N)}
  )
  assert follower['grad'].shape == (steps, batch, dp_party.H)
  # The leader trains too; the recorded weights are the ones each step used (before its update).
  np.testing.assert_array_equal(leader['used'][0], dp_party.init_weights()['v'])
  assert not np.allclose(leader['used'][1], leader['used'][0])
  for t in range(steps):
    h = leader['h'][t].astype(np.float64)
    v = leader['used'][t].astype(np.float64)
    onehot = np.eye(dp_party.C)[leader['label'][t]]
    # d(sum_i CE_i)/dh, from the values the leader used in this step.
    expected = (_softmax(h.dot(v)) - onehot).dot(v.T)
    # float32 on the wire and in TF: absolute error ~1e-6 per unit of magnitude over a 32-wide dot product.
    np.testing.assert_allclose(follower['grad'][t], expected, rtol=1e-4, atol=2e-5)
  # The follower trained on it (noise 1: its update is noised, but it moved).
  assert not np.allclose(follower['var:w'], dp_party.init_weights()['w'])
  # Unnoised gradients back are not a second release: one noised release per step.
  eps = analysis.epsilon_after_steps(dp_party.N, batch, 1.0, steps)
  for role in ('leader', 'follower'):
    assert _logged_epsilon(res[role][1], steps) == '%.4g' % eps


NOISE = dict(
  steps=4, batch=256, micro=32, clip=1.0, sigma=1.0, c=0.01, follower_clip=0.05, follower_micro=64, follower_lr=0.5
)


@pytest.fixture(scope='module')
def noise_run(tmp_path_factory):
  """One run in the default BACKEND_MODE ('noise'), shared by the tests below."""
  p = NOISE
  # Leader: linear loss (gradient c on every row, below the clip), so the noise is all that varies.
  leader_args = [
    '--steps',
    str(p['steps']),
    '--batch',
    str(p['batch']),
    '--leader_loss',
    'linear',
    '--linear_c',
    str(p['c']),
    '--clip',
    str(p['clip']),
    '--sigma',
    str(p['sigma']),
    '--microbatches',
    str(p['micro']),
    '--lr',
    '0.0',
    '--num_examples',
    str(dp_party.N),
  ]
  # Follower: noise 0 and a small clip, so that its update is exactly the clipped per-microbatch VJPs.
  follower_args = [
    '--steps',
    str(p['steps']),
    '--batch',
    str(p['batch']),
    '--clip',
    str(p['follower_clip']),
    '--sigma',
    '0',
    '--microbatches',
    str(p['follower_micro']),
    '--lr',
    str(p['follower_lr']),
  ]
  return _run(tmp_path_factory.mktemp('noise'), leader_args, follower_args)


def test_noise_sends_gradients_with_calibrated_noise(noise_run):
  _, leader, follower = noise_run
  p = NOISE
  received = follower['grad'].astype(np.float64)
  plain = leader['plain'].astype(np.float64)
  np.testing.assert_allclose(plain, np.broadcast_to(leader['used'][:, None, :], plain.shape), rtol=1e-6)
  assert not np.allclose(received, plain, atol=1e-3)
  # Each microbatch's record is the mean of its rows, c / k per row (norm well under the clip); the query sums
  # the records, adds N(0, (clip * sigma)^2) and divides by the number of microbatches.
  residual = received - plain / p['batch']
  expected_std = p['sigma'] * p['clip'] / p['micro']
  n = residual.size
  assert n >= 60000
  assert abs(residual.std() / expected_std - 1) < 0.03, (residual.std(), expected_std)
  assert abs(residual.mean()) < 5 * expected_std / np.sqrt(n)
  # Relative to the plain gradient the difference has a constant offset: its spread is the noise too.
  assert abs((received - plain).std() / expected_std - 1) < 0.03


def test_follower_update_is_the_dp_processed_vjp(noise_run):
  _, _, follower = noise_run
  p = NOISE
  # The follower's loss is the sent tensor: with noise 0 its update is exactly the clipped, averaged VJPs of
  # the gradients it received.
  w0 = dp_party.init_weights()['w']
  expected_w = _follower_weights(
    w0, follower['x'], follower['grad'], p['follower_clip'], p['follower_micro'], p['follower_lr']
  )
  assert not np.allclose(follower['var:w'], w0)
  np.testing.assert_allclose(follower['var:w'], expected_w, rtol=1e-4, atol=1e-5)
  # Clipping was active, or the check would not see it.
  x0, g0 = follower['x'][0].astype(np.float64), follower['grad'][0].astype(np.float64)
  records = np.einsum('bd,bh->bdh', x0, g0).reshape(p['follower_micro'], -1, dp_party.D, dp_party.H).mean(axis=1)
  assert (np.sqrt((records**2).sum(axis=(1, 2))) > p['follower_clip']).mean() > 0.5


def test_noise_epsilon_accounts_for_both_releases(noise_run):
  res, _, _ = noise_run
  p = NOISE
  # Each step releases two noised gradients of the same sampled batch (the leader's update and the gradient
  # sent back), each clipped to `clip` with noise sigma * clip: together one sampled Gaussian mechanism with
  # sensitivity sqrt(2) * clip, i.e. noise multiplier sigma / sqrt(2), per step. (Counting them as two
  # independently sampled steps would understate epsilon.)
  eps = analysis.epsilon_after_steps(dp_party.N, p['batch'], p['sigma'] / math.sqrt(2), p['steps'])
  assert _logged_epsilon(res['leader'][1], p['steps']) == '%.4g' % eps


def test_per_example_objective_accepts_unknown_rank():
  # A loss built on received tensors may have an unknown rank; each example's objective is its row's sum.
  import tensorflow.compat.v1 as tf
  from efl.framework import federal_model

  with tf.Graph().as_default(), tf.Session() as sess:
    x = tf.placeholder(tf.float32, shape=None)
    value = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    for fed in (value, value[:, :, 0].reshape(4, 3), value[:, 0, 0]):
      got = sess.run(federal_model._row_sums(x), {x: fed})  # pylint: disable=protected-access
      np.testing.assert_allclose(got, fed.reshape(4, -1).sum(axis=1))
