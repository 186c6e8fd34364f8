"""TensorFlow layers of the forward-encryption protocol: `EncryptActiveLayer` and `EncryptPassiveLayer`.

The follower builds `EncryptActiveLayer` (it holds the private key), the leader `EncryptPassiveLayer` with
the same `name`, dims that fit (the follower's `dim` is the leader's `recv_dim`) and the same
`learning_rate`. The protocol (see `efl.privacy.paillier.protocol`) runs inside `tf.py_func`s: the forward
exchange when the layer's output is computed, the backward exchange inside the layer's gradient, so both
parties must compute the gradient of a loss that depends on the layer's output (the leader: through its
output; the follower: through its output, which equals its input) exactly once per training run. The layers
update their weights themselves (SGD with `learning_rate`); their variables are not trainable, so the
model's optimizer leaves them alone, and they are saved in checkpoints like any variable.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from efl.privacy.paillier import encoding
from efl.privacy.paillier import keys
from efl.privacy.paillier.protocol import ActiveParty, PassiveParty


def _ring_initializer(initializer):
  """Wraps a float initializer into one producing fixed-point ring elements (int64)."""

  def init(shape, dtype=None, partition_info=None):  # pylint: disable=unused-argument
    values = initializer(shape, dtype=tf.float64)
    fixed = tf.cast(tf.round(values * float(1 << encoding.WEIGHT_BITS)), tf.int64)
    return tf.bitwise.bitwise_and(fixed, encoding.RING - 1)

  return init


def _check_dim(value, what):
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError('%s must be a positive integer, got %r' % (what, value))
  return int(value)


def _input_2d(inputs, dim, layer):
  x = tf.convert_to_tensor(inputs)
  if x.dtype != tf.float32:
    x = tf.cast(x, tf.float32)
  if x.shape.ndims is not None and x.shape.ndims != 2:
    raise ValueError('%s takes a [batch, %d] input, got shape %s' % (layer, dim, x.shape))
  if x.shape.ndims == 2 and x.shape[1].value is not None and x.shape[1].value != dim:
    raise ValueError(
      "%s(dim=%d) got an input with %d columns (shape %s); its dim must be the input's "
      'last dimension' % (layer, dim, x.shape[1].value, x.shape)
    )
  return x


class EncryptActiveLayer(object):
  """The follower's half of the encrypted concat layer. Its output is its input.

  Its gradient is the gradient of the follower's own loss plus the gradient that flows back from the
  leader through the shared active weight.

  Args:
      communicator: the follower's `efl.Communicator` (e.g. `model.communicator`).
      dim: columns of the input.
      public_file: path of `public_key.json`.
      private_file: path of `private_key.json`.
      learning_rate: SGD learning rate of the active weight; must equal the leader's.
      noise_initializer: initializer of this party's share of the active weight (the "noise"); the active
          weight starts at the leader's initializer value plus this noise, and the noise is what hides the
          active weight from the leader. Default: uniform in [-0.5, 0.5).
      update_noise: accepted for compatibility with EFLS. In efl the noise share always absorbs the masked
          weight updates (that is how the leader never learns the active weight's gradient), so there is
          nothing to switch off.
      name: prefix of the variables and messages; must equal the leader's layer name.
      processes: worker processes for the Paillier arithmetic (None: one per core).

  Raises:
      PaillierKeyError: a key file is missing, malformed, or the two files do not belong together.
  """

  def __init__(
    self,
    communicator,
    dim,
    public_file,
    private_file,
    learning_rate=0.01,
    noise_initializer=None,
    update_noise=True,
    name='hetero',
    processes=None,
  ):
    self.dim = _check_dim(dim, 'dim')
    public_key, private_key = keys.load_keypair(public_file, private_file)
    self.name = name
    self.update_noise = bool(update_noise)
    self.noise_initializer = noise_initializer or tf.random_uniform_initializer(-0.5, 0.5)
    self.party = ActiveParty(communicator, self.dim, public_key, private_key, learning_rate, name, processes=processes)
    self.communicator = communicator
    self.noise = None
    self._built = False

  def _forward(self, x, fn):
    step = self.communicator.step
    self.party.forward(x, fn, step)
    return np.int64(step)

  def _backward(self, fn, token):
    return self.party.backward(fn, int(token))

  def __call__(self, inputs):
    if self._built:
      raise ValueError(
        'EncryptActiveLayer %r is already used in this graph; create one layer per use, '
        'each with its own name (and the same name on the leader)' % self.name
      )
    self._built = True
    x = _input_2d(inputs, self.dim, 'EncryptActiveLayer')
    self.noise = tf.get_variable(
      self.name + '_dense_noise',
      [self.dim],
      tf.int64,
      initializer=_ring_initializer(self.noise_initializer),
      trainable=False,
      use_resource=True,
    )
    fn = tf.identity(self.noise)

    @tf.custom_gradient
    def _active(x):
      token = tf.py_func(self._forward, [x, fn], tf.int64, stateful=True, name=self.name + '_forward')
      with tf.control_dependencies([token]):
        y = tf.identity(x)

      def grad(dy):
        dx_peer, new_fn = tf.py_func(
          self._backward, [fn, token], [tf.float32, tf.int64], stateful=True, name=self.name + '_backward'
        )
        dx_peer.set_shape(x.shape)
        with tf.control_dependencies([tf.assign(self.noise, new_fn)]):
          return dy + dx_peer

      return y, grad

    return _active(x)

  def close(self):
    """Stops the worker processes (also done at exit)."""
    self.party.close()


class EncryptPassiveLayer(object):
  """The leader's half: output = concat(inputs * w_p, follower's x * W), shape [batch, dim + recv_dim].

  w_p (`{name}_passive_weight`) is the leader's own per-column weight; W is the follower's active weight,
  secret-shared between the parties (this side holds `{name}_active_weight`). Both are trained by SGD with
  `learning_rate` on the gradient of the loss.

  Args:
      communicator: the leader's `efl.Communicator`.
      dim: columns of the leader's input.
      recv_dim: columns of the follower's activation (its EncryptActiveLayer's dim).
      public_file: path of `public_key.json` (the follower's public key).
      learning_rate: SGD learning rate of both weights; must equal the follower's.
      initializer: initializer of w_p and of this side's share of W.
      name: prefix of the variables and messages; must equal the follower's layer name.
      processes: worker processes for the Paillier arithmetic (None: one per core).

  Raises:
      PaillierKeyError: the public key file is missing or malformed.
  """

  def __init__(
    self, communicator, dim, recv_dim, public_file, learning_rate=0.01, initializer=None, name='hetero', processes=None
  ):
    self.dim = _check_dim(dim, 'dim')
    self.recv_dim = _check_dim(recv_dim, 'recv_dim')
    public_key = keys.load_public_key(public_file)
    self.name = name
    self.learning_rate = float(learning_rate)
    self.initializer = initializer or tf.ones_initializer()
    self.party = PassiveParty(
      communicator, self.dim, self.recv_dim, public_key, learning_rate, name, processes=processes
    )
    self.communicator = communicator
    self.passive_weight = None
    self.active_weight = None
    self._built = False

  def _forward(self, wa, batch):
    step = self.communicator.step
    z = self.party.forward(wa, step, int(batch))
    return z, np.int64(step)

  def _backward(self, dy, wa, token):
    return self.party.backward(dy, wa, int(token))

  def __call__(self, inputs):
    if self._built:
      raise ValueError(
        'EncryptPassiveLayer %r is already used in this graph; create one layer per use, '
        'each with its own name (and the same name on the follower)' % self.name
      )
    self._built = True
    x = _input_2d(inputs, self.dim, 'EncryptPassiveLayer')
    self.passive_weight = tf.get_variable(
      self.name + '_passive_weight',
      [self.dim],
      tf.float32,
      initializer=self.initializer,
      trainable=False,
      use_resource=True,
    )
    self.active_weight = tf.get_variable(
      self.name + '_active_weight',
      [self.recv_dim],
      tf.int64,
      initializer=_ring_initializer(self.initializer),
      trainable=False,
      use_resource=True,
    )
    wp = tf.identity(self.passive_weight)
    wa = tf.identity(self.active_weight)
    dim, lr = self.dim, self.learning_rate

    @tf.custom_gradient
    def _passive(x):
      z, token = tf.py_func(
        self._forward, [wa, tf.shape(x)[0]], [tf.float32, tf.int64], stateful=True, name=self.name + '_forward'
      )
      z.set_shape([x.shape[0], self.recv_dim])
      out = tf.concat([x * wp, z], axis=1)

      def grad(dout):
        dy_p, dy_a = dout[:, :dim], dout[:, dim:]
        new_wa = tf.py_func(self._backward, [dy_a, wa, token], tf.int64, stateful=True, name=self.name + '_backward')
        dx = dy_p * wp
        step_p = lr * tf.reduce_sum(dy_p * x, axis=0)
        # The weights change only after every use of their old values in this run.
        with tf.control_dependencies([out, dx, step_p]):
          updates = [tf.assign(self.active_weight, new_wa), tf.assign_sub(self.passive_weight, step_p)]
        with tf.control_dependencies(updates):
          return tf.identity(dx)

      return out, grad

    return _passive(x)

  def close(self):
    """Stops the worker processes (also done at exit)."""
    self.party.close()
