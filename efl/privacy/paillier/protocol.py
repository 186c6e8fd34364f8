"""The two-party forward-encryption protocol (after arXiv 2007.06849, EFLS v1's Encrypt layers), made secure.

Roles: the ACTIVE party (the follower, A) holds the Paillier private key and its activation x [B, d]; the
PASSIVE party (the leader, P) holds the public key, its own activation x_p, its weight w_p and a share of the
active weight. The layer computes, for the leader,

    output = concat(x_p * w_p, x * W)            W: the active weight, one scalar per column of x

and trains w_p and W by SGD with the layer's learning rate. W is never held by anyone: it is
secret-shared, W = Wa + FN modulo 2**56 in fixed point (2**-24), with Wa held by P (variable
`{name}_active_weight`) and FN by A (variable `{name}_dense_noise`). At the start W = P's initializer + A's
noise initializer.

What each party sees:
  * P: ciphertexts of x, and z = x * W (its output, which it must have); never x, FN, W, the gradient of W,
    nor A's input gradient. What z reveals is inherent to the layer: x up to an unknown scale per column.
  * A: values masked by P's fresh uniform masks (SIGMA = 40 bits of statistical hiding): x * Wa + U, the
    batch sums of x * dy + M; and its own input gradient dx = dy * W (which it must have); never dy, Wa or W
    alone. (With P's default ones initializer, W at step 0 is 1 + A's noise, known to A: pass P a random
    initializer to hide W from the first step on.)
  * Every encryption is randomised (fresh obfuscator), every mask is fresh per element and per step.

Fixed point (see `encoding`): x -> X = round(x * 2**kx), dy -> DY = round(dy * 2**kdy), one exponent per
tensor per step, |X|, |DY| <= 2**24. Plaintexts pack S slots of 124 bits (S = 8 for 1024-bit keys,
16 for 2048-bit keys); A packs S rows of one column per plaintext, so P multiplies a whole ciphertext by
one weight. Limits: |W| < 128 (the shared weight has 24 fractional bits in a 56-bit ring; neither party
can see W, so this is not checked); every entry of x and dy has an absolute error of at most 2**-24 of the
largest entry of its tensor.

Messages of one step (names are prefixed with the layer name; ints are int64 arrays):

  Forward
    A -> P  `_paillier_active_meta`   [version, B, d, n mod 2**62, S, kx, round(lr * 2**40)]
    P -> A  `_paillier_passive_meta`  [version, recv_dim, dim, n mod 2**62, round(lr * 2**40)]
            Both sides check the other's meta (dims, key, learning rate, version) and fail with a clear
            error on a mismatch.
    A -> P  `_encrypt_x`        uint8 blob: Enc(pack(X[t*S:(t+1)*S, j])) for every column j, group t
    P -> A  `_encrypt_dense`    uint8 blob: Enc(X*Wa_j + U) per slot, U uniform < 2**120, re-randomised
    A -> P  `_activate_dense`   int64 [B, d]: (X*Wa + U + X*FN) mod 2**56
            P removes U: X*W mod 2**56 -> z = X*W * 2**-(kx+24).
  Backward (P holds dy = [dy_p, dy_a], the gradient of its output)
    P -> A  `_grad_meta`         [kdy, B]
    A -> P  `_acc_noise`         uint8 blob: Enc(FN_j * 2**(124*s)) for every column j and slot s
    P -> A  `_active_weight_grad` uint8 blob: per column j and slot s, Enc(sum_t X[t,s',j]*DY[t,s,j] + M_s')
                                 for all slots s' (M fresh, uniform); A keeps slot s of output s and sums:
                                 G_j + U_j with G_j = sum_b X[b,j]*DY[b,j] and U_j = sum_s M_s.
    P -> A  `_active_grad`       uint8 blob: Enc(pack(DY*(FN_j+Wa_j) + 2**56*r)) per column j, group t
                                 (r uniform < 2**65 hides everything above the ring); A takes it modulo
                                 2**56: dx = DY*W * 2**-(kdy+24), added to the gradient of A's output.
            Update without anyone seeing G (g = G * 2**-(kx+kdy), c = lr * 2**(24-kx-kdy)):
              A: FN_j -= floor((G_j + U_j) * c)     P: Wa_j += floor(U_j * c)     (both mod 2**56)
            so W moves by -lr * g (within one fixed-point unit). P also updates w_p -= lr * sum(dy_p * x_p)
            and passes dy_p * w_p back to its own input.
"""

import secrets

import numpy as np

from efl.privacy.paillier import encoding
from efl.privacy.paillier.cipher import PaillierCipher
from efl.privacy.paillier.encoding import RING, RING_BITS, SIGMA, SLOT_BITS, WEIGHT_BITS

VERSION = 1
LR_BITS = 40
_OFFSET_BITS = encoding.PRECISION  # exponents dy + 2**24 are non-negative
_EXP_BITS = encoding.PRECISION + 2
_FP_MASK = (1 << 62) - 1


class ProtocolError(ValueError):
  """The two layers do not fit together (dims, key, learning rate, version) or a message is malformed."""


def message_names(name):
  """Every message name of a layer, as {key: wire name}."""
  keys = (
    'active_meta',
    'passive_meta',
    'x_cipher',
    'z_cipher',
    'z_masked',
    'grad_meta',
    'fn_bases',
    'dx_cipher',
    'g_cipher',
  )
  wire = (
    '_paillier_active_meta',
    '_paillier_passive_meta',
    '_encrypt_x',
    '_encrypt_dense',
    '_activate_dense',
    '_grad_meta',
    '_acc_noise',
    '_active_grad',
    '_active_weight_grad',
  )
  return {k: name + w for k, w in zip(keys, wire)}


ACTIVE_SENDS = ('active_meta', 'x_cipher', 'z_masked', 'fn_bases')
PASSIVE_SENDS = ('passive_meta', 'z_cipher', 'grad_meta', 'dx_cipher', 'g_cipher')


def _fixed_lr(learning_rate):
  lr = float(learning_rate)
  if not np.isfinite(lr) or lr < 0:
    raise ValueError('learning_rate must be a finite number >= 0, got %r' % (learning_rate,))
  return int(round(lr * (1 << LR_BITS)))


def _shift(value, bits):
  """floor(value * 2**-bits) for any sign of bits."""
  return value >> bits if bits >= 0 else value << (-bits)


class _Party(object):
  def __init__(self, comm, name, public_key, private_key, learning_rate, processes, djn, timeout_s):
    self.comm = comm
    self.name = name
    self.names = message_names(name)
    self.lr_fixed = _fixed_lr(learning_rate)
    self.learning_rate = float(learning_rate)
    self.cipher = PaillierCipher(public_key, private_key, processes=processes, djn=djn)
    self.slots = encoding.slots_per_plaintext(self.cipher.n_bits)
    self.n_fingerprint = int(self.cipher.n) & _FP_MASK
    self.timeout_s = timeout_s
    self._state = {}

  def register(self, sends):
    for key, wire in self.names.items():
      if key in sends:
        self.comm.register_send(wire)
      else:
        self.comm.register_recv(wire)

  def _send(self, key, step, array):
    self.comm.send(self.names[key], step, array)

  def _recv(self, key, step):
    if self.timeout_s is None:
      return self.comm.recv(self.names[key], step)
    return self.comm.recv(self.names[key], step, timeout_s=self.timeout_s)

  def _check_common(self, meta, version, fingerprint, lr_fixed, peer):
    if int(version) != VERSION:
      raise ProtocolError(
        'layer %r: the %s speaks Paillier protocol version %d, this side %d; run the same '
        'efl version on both parties' % (self.name, peer, int(version), VERSION)
      )
    if int(fingerprint) != self.n_fingerprint:
      raise ProtocolError(
        'layer %r: the %s uses another Paillier public key than this side; copy the '
        "follower's public_key.json to the leader" % (self.name, peer)
      )
    if int(lr_fixed) != self.lr_fixed:
      raise ProtocolError(
        'layer %r: learning_rate differs: %g here, %g on the %s; pass the same learning_rate to '
        'EncryptActiveLayer and EncryptPassiveLayer (the shared active weight is updated by both)'
        % (self.name, self.learning_rate, int(lr_fixed) / float(1 << LR_BITS), peer)
      )

  def close(self):
    self.cipher.close()


class ActiveParty(_Party):
  """The follower's half: holds the private key, its activation x and the weight share FN.

  Args:
      comm: an `efl.Communicator` (or anything with register_send/register_recv/send/recv).
      dim: columns of x.
      public_key, private_key: `phe` keys.
      learning_rate: must equal the passive side's.
      name: prefix of the message names; must equal the passive side's.
      processes, djn: see `PaillierCipher`.
      timeout_s: recv timeout (None: the communicator's default).
  """

  def __init__(
    self,
    comm,
    dim,
    public_key,
    private_key,
    learning_rate=0.01,
    name='hetero',
    processes=None,
    djn=True,
    timeout_s=None,
  ):
    super(ActiveParty, self).__init__(comm, name, public_key, private_key, learning_rate, processes, djn, timeout_s)
    self.dim = int(dim)
    self.register(ACTIVE_SENDS)

  def forward(self, x, fn, step):
    """Runs the forward exchange for activation x [B, dim]; fn is the weight share [dim] (int64 ring)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ProtocolError(
        'layer %r: EncryptActiveLayer(dim=%d) got an input of shape %s; expected '
        '[batch, %d]' % (self.name, self.dim, list(x.shape), self.dim)
      )
    batch = x.shape[0]
    X, kx = encoding.encode(x, "the follower's activation of layer %r" % self.name)
    self._send(
      'active_meta',
      step,
      np.array([VERSION, batch, self.dim, self.n_fingerprint, self.slots, kx, self.lr_fixed], np.int64),
    )
    # Encrypt while the leader's meta travels.
    cts = self.cipher.encrypt(encoding.pack_columns(X, self.slots))
    meta = self._recv('passive_meta', step)
    version, recv_dim, _, fingerprint, lr_fixed = [int(v) for v in meta[:5]]
    self._check_common(meta, version, fingerprint, lr_fixed, 'leader')
    if recv_dim != self.dim:
      raise ProtocolError(
        "layer %r: dims do not match: the follower's EncryptActiveLayer has dim=%d but the leader's "
        'EncryptPassiveLayer expects recv_dim=%d; make them equal' % (self.name, self.dim, recv_dim)
      )
    self._send('x_cipher', step, self.cipher.to_wire(cts))
    groups = -(-batch // self.slots)
    z_cts = self.cipher.from_wire(
      self._recv('z_cipher', step), groups * self.dim, 'layer %r: %s' % (self.name, self.names['z_cipher'])
    )
    masked = encoding.unpack_columns(self.cipher.decrypt(z_cts), batch, self.dim, self.slots)
    fn = np.asarray(fn, dtype=np.int64).reshape(-1)
    own = X.astype(object) * fn.astype(object)[None, :]
    self._send('z_masked', step, encoding.to_ring(masked + own))
    self._state = {'step': step, 'X': X, 'kx': kx, 'batch': batch}

  def backward(self, fn, step):
    """Runs the backward exchange. Returns (dx [B, dim] float32, the new weight share fn [dim] int64)."""
    st = self._state
    if st.get('step') != step:
      raise ProtocolError(
        'layer %r: backward of step %s without its forward (last forward: step %s)' % (self.name, step, st.get('step'))
      )
    fn = np.asarray(fn, dtype=np.int64).reshape(-1) & (RING - 1)
    batch, slots, dim = st['batch'], self.slots, self.dim
    meta = self._recv('grad_meta', step)
    kdy, peer_batch = int(meta[0]), int(meta[1])
    if peer_batch != batch:
      raise ProtocolError(
        "layer %r: the leader's gradient has batch %d, the forward had %d" % (self.name, peer_batch, batch)
      )
    bases = [int(f) << (s * SLOT_BITS) for f in fn for s in range(slots)]
    self._send('fn_bases', step, self.cipher.to_wire(self.cipher.encrypt(bases)))
    # The weight-gradient sums come first: the leader computes them while these bases travel.
    g_cts = self.cipher.from_wire(
      self._recv('g_cipher', step), slots * dim, 'layer %r: %s' % (self.name, self.names['g_cipher'])
    )
    g_plain = self.cipher.decrypt(g_cts)
    groups = -(-batch // slots)
    dx_cts = self.cipher.from_wire(
      self._recv('dx_cipher', step), groups * dim, 'layer %r: %s' % (self.name, self.names['dx_cipher'])
    )
    dx_ring = encoding.to_ring(encoding.unpack_columns(self.cipher.decrypt(dx_cts), batch, dim, slots))
    dx = encoding.decode(encoding.ring_to_signed(dx_ring), kdy + WEIGHT_BITS).astype(np.float32)
    shift = LR_BITS + st['kx'] + kdy - WEIGHT_BITS
    new_fn = np.empty(dim, np.int64)
    for j in range(dim):
      masked_sum = 0
      for s in range(slots):
        masked_sum += encoding.unpack(g_plain[j * slots + s], slots)[s]
      new_fn[j] = (int(fn[j]) - _shift(masked_sum * self.lr_fixed, shift)) & (RING - 1)
    return dx, new_fn


class PassiveParty(_Party):
  """The leader's half: holds the public key and the weight share Wa of the active weight.

  Args:
      comm: an `efl.Communicator`.
      dim: columns of the leader's own input (for the dims check only).
      recv_dim: columns of the follower's activation.
      public_key: a `phe` public key.
      learning_rate, name, processes, djn, timeout_s: see `ActiveParty`.
  """

  def __init__(
    self, comm, dim, recv_dim, public_key, learning_rate=0.01, name='hetero', processes=None, djn=True, timeout_s=None
  ):
    super(PassiveParty, self).__init__(comm, name, public_key, None, learning_rate, processes, djn, timeout_s)
    self.dim = int(dim)
    self.recv_dim = int(recv_dim)
    self.register(PASSIVE_SENDS)

  def forward(self, wa, step, own_batch=None):
    """Runs the forward exchange; wa is the weight share [recv_dim]. Returns z = x * W [B, recv_dim].

    Args:
        wa: this side's share of the active weight, int64 [recv_dim].
        step: the run counter.
        own_batch: the batch size of the leader's own input, checked against the follower's (None: no
            check).
    """
    wa = np.asarray(wa, dtype=np.int64).reshape(-1) & (RING - 1)
    self._send(
      'passive_meta', step, np.array([VERSION, self.recv_dim, self.dim, self.n_fingerprint, self.lr_fixed], np.int64)
    )
    meta = self._recv('active_meta', step)
    version, batch, peer_dim, fingerprint, peer_slots, kx, lr_fixed = [int(v) for v in meta[:7]]
    self._check_common(meta, version, fingerprint, lr_fixed, 'follower')
    if peer_dim != self.recv_dim:
      raise ProtocolError(
        "layer %r: dims do not match: the leader's EncryptPassiveLayer has recv_dim=%d but the follower's "
        'EncryptActiveLayer sends dim=%d; make them equal' % (self.name, self.recv_dim, peer_dim)
      )
    if own_batch is not None and int(own_batch) != batch:
      raise ProtocolError(
        "layer %r: batch sizes differ: the leader's input has %d rows, the follower's %d; both parties "
        'must read the same samples in the same batches' % (self.name, int(own_batch), batch)
      )
    if peer_slots != self.slots:
      raise ProtocolError(
        'layer %r: the follower packs %d slots per ciphertext, this side %d' % (self.name, peer_slots, self.slots)
      )
    slots, cols = self.slots, self.recv_dim
    groups = -(-batch // slots)
    cts = self.cipher.from_wire(
      self._recv('x_cipher', step), groups * cols, 'layer %r: %s' % (self.name, self.names['x_cipher'])
    )
    mask_bits = encoding.PRECISION + RING_BITS + SIGMA
    masks = np.array([[secrets.randbits(mask_bits) for _ in range(cols)] for _ in range(groups * slots)], dtype=object)
    adds = encoding.pack_columns(masks, slots)
    scalars = [int(wa[j]) for j in range(cols) for _ in range(groups)]
    self._send('z_cipher', step, self.cipher.to_wire(self.cipher.scale_add(cts, scalars, adds)))
    reply = np.asarray(self._recv('z_masked', step), dtype=np.int64)
    if reply.shape != (batch, cols):
      raise ProtocolError(
        'layer %r: %s has shape %s, expected %s' % (self.name, self.names['z_masked'], list(reply.shape), [batch, cols])
      )
    z_ring = (reply - encoding.to_ring(masks[:batch])) & (RING - 1)
    z = encoding.decode(encoding.ring_to_signed(z_ring), kx + WEIGHT_BITS)
    self._state = {'step': step, 'cts': cts, 'kx': kx, 'batch': batch}
    return z.astype(np.float32)

  def backward(self, dy, wa, step):
    """Runs the backward exchange for dy = d loss / d z [B, recv_dim]. Returns the new share wa."""
    st = self._state
    if st.get('step') != step:
      raise ProtocolError(
        'layer %r: backward of step %s without its forward (last forward: step %s)' % (self.name, step, st.get('step'))
      )
    wa = np.asarray(wa, dtype=np.int64).reshape(-1) & (RING - 1)
    batch, slots, cols, cts = st['batch'], self.slots, self.recv_dim, st['cts']
    dy = np.asarray(dy)
    if dy.shape != (batch, cols):
      raise ProtocolError('layer %r: gradient of shape %s, expected %s' % (self.name, list(dy.shape), [batch, cols]))
    DY, kdy = encoding.encode(dy, 'the gradient of layer %r' % self.name)
    self._send('grad_meta', step, np.array([kdy, batch], np.int64))
    groups = -(-batch // slots)
    offset = 1 << _OFFSET_BITS
    padded = np.zeros((groups * slots, cols), dtype=np.int64)
    padded[:batch] = DY
    shifted = padded + offset  # non-negative exponents; the offset is removed in the worker
    # Weight gradient: per column j, output s = sum_t DY[t*S+s, j] * [X[t*S.., j] packed] + fresh masks.
    mask_bits = 2 * encoding.PRECISION + max(1, groups.bit_length()) + SIGMA
    g_columns, mask_sums = [], []
    for j in range(cols):
      bases = cts[j * groups : (j + 1) * groups]
      exps = [[int(shifted[t * slots + s, j]) for t in range(groups)] for s in range(slots)]
      masks = [[secrets.randbits(mask_bits) for _ in range(slots)] for _ in range(slots)]
      mask_sums.append(sum(masks[s][s] for s in range(slots)))
      g_columns.append((bases, exps, [encoding.pack_rows(m) for m in masks]))
    g_cts = [c for col in self.cipher.column_products(g_columns, _OFFSET_BITS, _EXP_BITS) for c in col]
    self._send('g_cipher', step, self.cipher.to_wire(g_cts))
    # dx: per column j, output t = sum_s DY[t*S+s, j] * [FN_j << s*L] + (DY * Wa_j + 2^56 * r) packed.
    fn_bases = self.cipher.from_wire(
      self._recv('fn_bases', step), cols * slots, 'layer %r: %s' % (self.name, self.names['fn_bases'])
    )
    high_bits = encoding.PRECISION + 1 + SIGMA
    dx_columns = []
    for j in range(cols):
      bases = fn_bases[j * slots : (j + 1) * slots]
      exps = [[int(shifted[t * slots + s, j]) for s in range(slots)] for t in range(groups)]
      adds = [
        encoding.pack_rows(
          [
            int(padded[t * slots + s, j]) * int(wa[j]) + (secrets.randbits(high_bits) << RING_BITS)
            for s in range(slots)
          ]
        )
        for t in range(groups)
      ]
      dx_columns.append((bases, exps, adds))
    dx_cts = [c for col in self.cipher.column_products(dx_columns, _OFFSET_BITS, _EXP_BITS) for c in col]
    self._send('dx_cipher', step, self.cipher.to_wire(dx_cts))
    shift = LR_BITS + st['kx'] + kdy - WEIGHT_BITS
    new_wa = np.array(
      [(int(wa[j]) + _shift(mask_sums[j] * self.lr_fixed, shift)) & (RING - 1) for j in range(cols)], np.int64
    )
    return new_wa
