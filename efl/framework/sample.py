"""`Sample`: groups of feature columns turned into dense tensors, and its federated form `FederalSample`."""

import re

import numpy as np
import tensorflow.compat.v1 as tf

from efl import compat
from efl import flags


def _column_keys(column):
  return sorted(tf.feature_column.make_parse_example_spec([column]).keys())


def _layer_name(group):
  name = re.sub(r'[^A-Za-z0-9_.\-]', '_', str(group))
  return name if re.match(r'[A-Za-z0-9.]', name) else 'g' + name


class Sample(object):
  """A batch of model inputs: each group of feature columns becomes one dense `[batch, width]` tensor.

  Args:
    features: dict feature name -> Tensor or SparseTensor (the raw batch).
    columns: dict group name -> list of dense `tf.feature_column`s (numeric, embedding, indicator, ...).
  """

  def __init__(self, features, columns):
    if not isinstance(features, dict):
      raise TypeError('Sample features must be a dict name -> Tensor, got %s' % type(features).__name__)
    if not isinstance(columns, dict):
      raise TypeError('Sample columns must be a dict group -> [feature columns], got %s' % type(columns).__name__)
    self._features = dict(features)
    self._columns = dict(columns)
    self._var_scope = tf.get_variable_scope()  # where the columns' variables live, for rebuild()
    self._groups = {}
    for group, cols in self._columns.items():
      if not isinstance(cols, (list, tuple)) or not cols:
        raise ValueError('columns[%r] must be a non-empty list of feature columns, got %r' % (group, cols))
      for col in cols:
        missing = [k for k in _column_keys(col) if k not in self._features]
        if missing:
          raise KeyError(
            'feature column %r of group %r reads feature(s) %s, which the features dict lacks '
            '(it has: %s); make the column key match a feature name'
            % (col.name, group, missing, sorted(self._features))
          )
      # The TRAIN and EVAL samples of a model use the same columns: they must share embedding variables.
      with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
        self._groups[group] = compat.dense_features(cols, _layer_name(group))(self._features)
    self._batch_size = self._infer_batch_size()

  def _infer_batch_size(self):
    for group in sorted(self._groups, key=str):
      return tf.shape(self._groups[group])[0]
    for name in sorted(self._features):
      f = self._features[name]
      if isinstance(f, tf.SparseTensor):
        return tf.cast(f.dense_shape[0], tf.int32)
      return tf.shape(f)[0]
    return tf.constant(0)

  @classmethod
  def create(cls, features, columns):
    """Same as `Sample(features, columns)`."""
    return cls(features, columns)

  @property
  def features(self):
    """The raw features dict this sample was built from."""
    return self._features

  @property
  def columns(self):
    return self._columns

  @property
  def sample_ids(self):
    """The batch's sample ids (a `[batch, 1]` or `[batch]` tensor), or None when the sample has none."""
    return None

  @property
  def sample_id_name(self):
    return None

  def rebuild(self, features):
    """A plain `Sample` of the same columns over other raw `features`, sharing this sample's variables."""
    with tf.variable_scope(self._var_scope, reuse=tf.AUTO_REUSE):
      return Sample(features, self._columns)

  @property
  def batch_size(self):
    """A scalar int32 tensor: the number of examples in the batch (used for samples/s)."""
    return self._batch_size

  def set_transformed_feature_groups(self, groups):
    """Replaces or adds group tensors, e.g. after a user transformation. `groups`: dict name -> Tensor."""
    for name, tensor in groups.items():
      self._groups[name] = tf.convert_to_tensor(tensor)

  def before_step_ops(self):
    """Ops every loss/eval op of this sample depends on (nothing for a local sample)."""
    return [tf.no_op()]

  def step_guards(self):
    """Ops every update (and eval result) of a step depends on (none for a local sample)."""
    return []

  def __getitem__(self, group):
    if group not in self._groups:
      raise KeyError('sample has no group %r; its groups are %s' % (group, sorted(self._groups, key=str)))
    return self._groups[group]

  def __contains__(self, group):
    return group in self._groups

  def __len__(self):
    return len(self._groups)

  def __iter__(self):
    return iter(self._groups)

  def items(self):
    return self._groups.items()

  def keys(self):
    return self._groups.keys()

  def to_dict(self):
    return dict(self._groups)


def _id_hashes(ids):
  """Returns the flat ids as they are, and their hashes.

  The hashes are of the ids' text, so that both parties agree even if one holds the ids as strings. The check
  gets the ids as they are: a string tensor costs the py_func a Python object per element.
  """
  ids = tf.reshape(ids, [-1])
  text = ids if ids.dtype == tf.string else tf.as_string(ids)
  return ids, tf.strings.to_hash_bucket_fast(text, 2**62)


def _id_text(sample_id):
  return sample_id.decode('utf-8', 'replace') if isinstance(sample_id, bytes) else str(sample_id)


class SampleIdMismatchError(ValueError):
  """The two parties hold different samples in the same step."""


class FederalSample(Sample):
  """A `Sample` whose sample ids are checked against the peer's every step, by both parties.

  In every step each party sends a hash of its batch's sample ids and compares the peer's hashes with its own
  (`step_guards`). The forward and backward passes do not wait for the exchange, but every variable update of
  the step does: a mismatch fails the step on both parties before either changes a variable, with an error
  naming the step and the first differing ids. Both parties hold the same samples only if they read the same
  blocks in the same order, which `efl.data.FederalDataIO` guarantees.
  """

  def __init__(self, features, columns, federal_role, communicator, sample_id_name=None, verify_id=True, name='sample'):
    super(FederalSample, self).__init__(features, columns)
    self._role = flags.check_role(federal_role)
    self._communicator = communicator
    self._name = name
    self._send_op = self._check_op = None
    self._verify = bool(verify_id) and sample_id_name is not None
    self._sample_id_name = sample_id_name
    self._sample_ids = None
    if sample_id_name is None:
      tf.logging.info('FederalSample %r: no sample_id_name given, sample ids are not verified', name)
      return
    if sample_id_name not in self._features:
      raise KeyError('sample_id_name %r is not a feature; features are %s' % (sample_id_name, sorted(self._features)))
    if communicator is None:
      raise ValueError('FederalSample %r needs a communicator to verify sample ids (pass model.communicator)' % name)
    self._sample_ids = self._features[sample_id_name]
    if isinstance(self._sample_ids, tf.SparseTensor):
      raise TypeError('sample id feature %r must be a fixed-length feature, got a SparseTensor' % sample_id_name)

  @property
  def federal_role(self):
    return self._role

  @property
  def sample_ids(self):
    return self._sample_ids

  @property
  def sample_id_name(self):
    return self._sample_id_name

  def before_step_ops(self):
    """An op that runs once this party's batch is read; the step's ops wait for it, its receives too.

    Without it a receive starts with the run and, at the end of the data, waits for a peer that has stopped
    (and fails once the peer closes) while the reader's OutOfRange already ends the run. The forward pass does
    not wait for the sample-id exchange.
    """
    batch = [x.values if isinstance(x, tf.SparseTensor) else x for x in self._features.values()]
    return [tf.group(*[x for x in batch if isinstance(x, tf.Tensor)], name=self._name + '_batch_read')]

  def step_guards(self):
    """Sends this party's sample-id hashes and checks the peer's; every update of the step depends on both."""
    if not self._verify:
      return []
    self._build()
    return [self._send_op, self._check_op]

  def _build(self):
    if self._send_op is not None:
      return
    from efl.communicator import ops  # pylint: disable=g-import-not-at-top

    channel = '_verify_sample_ids_' + self._name
    ids, hashes = _id_hashes(self._sample_ids)
    comm = self._communicator
    self._send_op = ops.send(comm, channel, hashes)
    comm.register_recv(channel)
    name, role = self._name, self._role
    peer_role = 'follower' if role == 'leader' else 'leader'

    def check(own_ids, own_hashes):
      # Receiving inside the check saves an op per step. It runs only once this party's batch exists: at the
      # end of the data the reader's OutOfRange ends the stage before this could wait for a stopped peer.
      peer_hashes = comm.recv(channel, comm.step)
      if own_hashes.shape == peer_hashes.shape and np.array_equal(own_hashes, peer_hashes):
        return np.int64(0)
      if own_hashes.shape != peer_hashes.shape:
        detail = 'the %s has %d samples in this batch, the %s %d' % (role, own_hashes.size, peer_role, peer_hashes.size)
      else:
        bad = np.nonzero(own_hashes != peer_hashes)[0]
        shown = ', '.join('position %d: %s id %s' % (i, role, _id_text(own_ids[i])) for i in bad[:5])
        detail = '%d of %d ids differ (%s)' % (bad.size, own_hashes.size, shown)
      raise SampleIdMismatchError(
        'sample ids of FederalSample %r differ between leader and follower at step %d: %s. Both parties '
        'must read the same samples in the same order: check that their data dirs hold the same blocks '
        'with the same sample_id order.' % (name, max(comm.step, 0), detail)
      )

    self._check_op = tf.py_func(check, [ids, hashes], tf.int64, stateful=True, name='verify_sample_ids').op
