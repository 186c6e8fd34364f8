"""EncryptActiveLayer / EncryptPassiveLayer: two parties (two graphs and sessions in two threads) over real
gRPC communicators on 127.0.0.1. Checks the values against the plaintext computation, what crosses the
wire, and the errors for layers that do not fit together."""

import threading

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from efl.communicator import Communicator
from efl.privacy.paillier import PaillierCipher, encoding, keys
from efl.privacy.paillier.layers import EncryptActiveLayer, EncryptPassiveLayer
from efl.privacy.paillier.protocol import message_names
from ports import listening_pair

B, DA, DP, LR = 10, 4, 3, 0.05


class RecordingCommunicator(Communicator):
  """A real communicator that also keeps a copy of every message it sends."""

  def __init__(self, *args, **kwargs):
    super(RecordingCommunicator, self).__init__(*args, **kwargs)
    self.sent = []

  def send(self, name, step, array, sync=True):
    self.sent.append((name, step, np.array(array, copy=True)))
    return super(RecordingCommunicator, self).send(name, step, array, sync)


@pytest.fixture(scope='module')
def key_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('keys')
  pub, priv = str(d / 'public_key.json'), str(d / 'private_key.json')
  keys.generate_paillier_key(pub, priv, n_length=768)
  return pub, priv


def _in_threads(*fns, timeout=120):
  results, errors = [None] * len(fns), [None] * len(fns)

  def run(i):
    try:
      results[i] = fns[i]()
    except Exception as e:  # pylint: disable=broad-except
      errors[i] = e

  threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout)
    assert not t.is_alive(), 'a party hung'
  return results, errors


class Pair(object):
  """The leader's and the follower's graphs around the two layers."""

  def __init__(self, key_files, leader_public=None, recv_dim=DA, leader_lr=LR, seed=0, follower_rows=B):
    self.leader, self.follower = listening_pair(
      *(
        lambda peer, local, role=role: RecordingCommunicator(role, peer, local, default_timeout_milliseconds=60000)
        for role in ('leader', 'follower')
      )
    )
    rng = np.random.RandomState(seed)
    self.xa = rng.randn(follower_rows, DA).astype(np.float32)
    self.xp = rng.randn(B, DP).astype(np.float32)
    self.c = rng.randn(B, DP + recv_dim).astype(np.float32)
    self.ga, self.gp = tf.Graph(), tf.Graph()
    with self.ga.as_default():
      xa = tf.constant(self.xa)
      self.active = EncryptActiveLayer(
        self.follower, DA, key_files[0], key_files[1], learning_rate=LR, update_noise=False, processes=1
      )
      ya = self.active(xa)
      loss = 0.5 * tf.reduce_sum(ya * ya)
      self.fetch_a = {'dx': tf.gradients(loss, xa)[0]}
      self.noise = self.active.noise
      self.init_a = tf.global_variables_initializer()
    with self.gp.as_default():
      xp = tf.constant(self.xp)
      self.passive = EncryptPassiveLayer(
        self.leader, DP, recv_dim, leader_public or key_files[0], learning_rate=leader_lr, processes=1
      )
      out = self.passive(xp)
      # A loss whose gradient depends on the output, like a real one.
      loss = tf.reduce_sum(out * self.c) + 0.25 * tf.reduce_sum(tf.square(out))
      self.fetch_p = {'out': out, 'dout': tf.gradients(loss, out)[0], 'dx': tf.gradients(loss, xp)[0]}
      self.init_p = tf.global_variables_initializer()
    _, errors = _in_threads(self.leader.connect, self.follower.connect)
    assert errors == [None, None], errors
    self.sa, self.sp = tf.Session(graph=self.ga), tf.Session(graph=self.gp)
    self.sa.run(self.init_a)
    self.sp.run(self.init_p)

  def weights(self):
    """(w_p, the active weight W reconstructed from both shares)."""
    fn = self.sa.run(self.noise)
    wp, wa = self.sp.run([self.passive.passive_weight, self.passive.active_weight])
    return wp, encoding.ring_to_weight(fn + wa)

  def step(self):
    # Like the framework: a party that fails closes its communicator with the error, waking the peer.
    def leader():
      try:
        out = self.sp.run(self.fetch_p)
      except Exception as e:
        self.leader.close(error=e)
        raise
      self.leader.advance_step()
      return out

    def follower():
      try:
        out = self.sa.run(self.fetch_a)
      except Exception as e:
        self.follower.close(error=e)
        raise
      self.follower.advance_step()
      return out

    return _in_threads(leader, follower)

  def close(self):
    _in_threads(self.leader.close, self.follower.close, timeout=30)
    self.active.close()
    self.passive.close()
    self.sa.close()
    self.sp.close()


def test_outputs_gradients_and_updates_match_plaintext(key_files):
  pair = Pair(key_files)
  try:
    for _ in range(2):
      wp, w = pair.weights()
      (p, a), errors = pair.step()
      assert errors == [None, None], errors
      dy_p, dy_a = p['dout'][:, :DP], p['dout'][:, DP:]
      np.testing.assert_allclose(p['out'], np.concatenate([pair.xp * wp, pair.xa * w], 1), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(p['dx'], dy_p * wp, rtol=1e-6, atol=1e-6)
      # The follower's input gradient: its own loss's (y = x) plus the leader's through W.
      np.testing.assert_allclose(a['dx'], pair.xa + dy_a * w, rtol=1e-5, atol=1e-5)
      wp_new, w_new = pair.weights()
      np.testing.assert_allclose(wp_new, wp - LR * np.sum(pair.xp * dy_p, 0), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(w_new, w - LR * np.sum(pair.xa * dy_a, 0), rtol=1e-5, atol=1e-6)
      assert np.abs(w_new - w).max() > 1e-3  # the active weight does train
  finally:
    pair.close()


def _contains(blob, values):
  """Whether the bytes of any float32 value of `values` (away from 0) occur in `blob`."""
  raw = np.ascontiguousarray(blob).tobytes()
  return any(np.float32(v).tobytes() in raw for v in np.ravel(values) if abs(v) > 1e-3)


def test_wire_carries_no_plaintext(key_files):
  pair = Pair(key_files, seed=1)
  try:
    wp0, w0 = pair.weights()
    steps, follower_grads = [], []
    for _ in range(2):
      (p, a), errors = pair.step()
      assert errors == [None, None], errors
      steps.append(p)
      follower_grads.append(a['dx'])
  finally:
    pair.close()
  names = message_names('hetero')
  from_follower = pair.follower.sent
  from_leader = pair.leader.sent
  assert {m[0] for m in from_follower} == {names[k] for k in ('active_meta', 'x_cipher', 'z_masked', 'fn_bases')}
  assert {m[0] for m in from_leader} == {
    names[k] for k in ('passive_meta', 'z_cipher', 'grad_meta', 'dx_cipher', 'g_cipher')
  }
  public_key, private_key = keys.load_keypair(*key_files)
  cipher = PaillierCipher(public_key, private_key, processes=0, precompute=0)
  slots = pair.active.party.slots
  x_int, kx = encoding.encode(pair.xa)

  # No float32 activation or input gradient of the follower, gradient of the leader or weight appears in any
  # message.
  secrets_values = [pair.xa, pair.xa * w0, wp0, w0] + [p['dout'] for p in steps] + follower_grads
  for name, _, array in from_follower + from_leader:
    assert not any(_contains(array, v) for v in secrets_values), name

  by_name = {}
  for name, step, array in from_follower + from_leader:
    by_name.setdefault(name, []).append(array)
  # The activation travels only encrypted: decrypting with the private key gives it back packed...
  x_blobs = by_name[names['x_cipher']]
  assert len(x_blobs) == 2
  cts0, cts1 = cipher.from_wire(x_blobs[0]), cipher.from_wire(x_blobs[1])
  assert [private_key.raw_decrypt(int(c)) for c in cts0[:3]] == [
    v % private_key.public_key.n for v in encoding.pack_columns(x_int, slots)[:3]
  ]
  # ...and the same activation encrypted twice gives entirely different ciphertexts.
  assert not set(cts0) & set(cts1)
  # The value the leader gets back is masked: it is not x * W_a (the leader's share) nor x * W.
  masked = by_name[names['z_masked']][0]
  assert masked.shape == (B, DA)
  true_ring = encoding.to_ring(x_int.astype(object) * encoding.weight_to_ring(w0).astype(object)[None, :])
  assert not np.any(masked == true_ring)
  # What the follower decrypts from the leader is masked too: its plaintexts differ from the true products.
  z_plain = encoding.unpack_columns(cipher.decrypt(cipher.from_wire(by_name[names['z_cipher']][0])), B, DA, slots)
  wa0 = encoding.weight_to_ring(np.ones(DA))
  assert not np.any(z_plain == x_int.astype(object) * wa0.astype(object)[None, :])
  assert min(abs(int(v)) for v in z_plain.ravel()) > 2**60  # the 120-bit masks dominate
  # The masks are fresh per element: no two entries share one (EFLS v1 tiled one mask row over the batch).
  masks = z_plain - x_int.astype(object) * wa0.astype(object)[None, :]
  assert len(set(masks.ravel().tolist())) == masks.size
  # The gradient message decrypts to large masked sums, never to sum(x * dy).
  g_plain = cipher.decrypt(cipher.from_wire(by_name[names['g_cipher']][0]))
  dy_a = steps[0]['dout'][:, DP:]
  dy_int, kdy = encoding.encode(dy_a)
  true_g = [int(v) for v in (x_int.astype(object) * dy_int.astype(object)).sum(0)]
  slot_values = [v for c in g_plain for v in encoding.unpack(c, slots)]
  assert not set(true_g) & set(slot_values)
  assert min(abs(v) for v in slot_values) > 2**50


def _expect_both_fail(pair, pattern):
  try:
    _, errors = pair.step()
  finally:
    pair.close()
  for role, e in zip(('leader', 'follower'), errors):
    assert e is not None, role
    assert pattern in str(e), (role, str(e))


def test_mismatched_dims_fail_clearly_on_both_sides(key_files):
  _expect_both_fail(Pair(key_files, recv_dim=DA + 1), 'dims do not match')


def test_mismatched_learning_rate_fails_clearly(key_files):
  _expect_both_fail(Pair(key_files, leader_lr=LR * 2), 'learning_rate differs')


def test_another_public_key_fails_clearly(key_files, tmp_path):
  other = str(tmp_path / 'other_public.json')
  keys.generate_paillier_key(other, str(tmp_path / 'other_private.json'), n_length=768)
  _expect_both_fail(Pair(key_files, leader_public=other), 'another Paillier public key')


def test_mismatched_batches_fail_clearly(key_files):
  # The leader detects it; the follower learns it from the leader's error.
  _expect_both_fail(Pair(key_files, follower_rows=B + 2), 'batch sizes differ')


def test_bad_key_files_fail_at_construction(key_files, tmp_path):
  comm = Communicator('follower', '127.0.0.1:1', '127.0.0.1:0')
  with tf.Graph().as_default():
    with pytest.raises(keys.PaillierKeyError, match='does not exist'):
      EncryptActiveLayer(comm, 4, str(tmp_path / 'missing.json'), key_files[1])
    other_pub, other_priv = str(tmp_path / 'pk.json'), str(tmp_path / 'sk.json')
    keys.generate_paillier_key(other_pub, other_priv, n_length=512)
    with pytest.raises(keys.PaillierKeyError, match='does not belong'):
      EncryptActiveLayer(comm, 4, key_files[0], other_priv)
    with pytest.raises(ValueError, match='dim must be a positive integer'):
      EncryptPassiveLayer(comm, 0, 4, key_files[0])
