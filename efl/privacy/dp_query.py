"""The interface of differentially private queries.

Vocabulary: a *record* is the contribution of one unit of privacy (here: the
gradient of one microbatch, a nested structure of tensors). A *sample* is the
set of records of one training step. A *query* turns the records of a sample
into one noised result: each record is preprocessed (e.g. clipped), the
preprocessed records are accumulated into a *sample state*, and
`get_noised_result` releases the accumulated state with noise.

A query may keep a *global state* across samples (e.g. the clip norm); the
*sample params* are what one sample needs from it. The DP optimizers only call
this interface, so they never know which mechanism is used.
"""

import abc
import collections

import tensorflow.compat.v1 as tf


class DPQuery(metaclass=abc.ABCMeta):
  """A mechanism that aggregates records and releases a noised result."""

  def initial_global_state(self):
    """Returns the global state before the first sample (default: `()`)."""
    return ()

  def derive_sample_params(self, global_state):
    """Returns the parameters one sample needs, given the global state.

    Args:
      global_state: the current global state.

    Returns:
      The sample params passed to `preprocess_record` (default: `()`).
    """
    del global_state
    return ()

  @abc.abstractmethod
  def initial_sample_state(self, template):
    """Returns the empty sample state.

    Args:
      template: a nested structure of tensors with the shapes and dtypes of
        one record.
    """

  def preprocess_record(self, params, record):
    """Returns the record as it enters the aggregation (default: unchanged).

    Must depend on this record only: the optimizers may call it inside
    `tf.vectorized_map` or a `tf.while_loop`.

    Args:
      params: the sample params from `derive_sample_params`.
      record: a nested structure of tensors.
    """
    del params
    return record

  def record_scales(self, params, record_norms):
    """The factors `preprocess_record` scales records by, from their global L2 norms; None if it does not.

    A query whose preprocessing only scales each record by a function of its norm says so here, and a
    `SumAggregationDPQuery` that does lets the optimizers sum scaled per-example gradients without forming
    them one by one (`efl.privacy.per_layer`). Default: None.

    Args:
      params: the sample params from `derive_sample_params`.
      record_norms: `[n]` float32, the global L2 norm of each of n records.

    Returns:
      `[n]` factors, or None.
    """
    del params, record_norms
    return None

  @abc.abstractmethod
  def accumulate_preprocessed_record(self, sample_state, preprocessed_record):
    """Returns the sample state with one preprocessed record added."""

  def accumulate_record(self, params, sample_state, record):
    """Preprocesses one record and adds it to the sample state.

    Args:
      params: the sample params from `derive_sample_params`.
      sample_state: the current sample state.
      record: a nested structure of tensors.

    Returns:
      The new sample state.
    """
    preprocessed = self.preprocess_record(params, record)
    return self.accumulate_preprocessed_record(sample_state, preprocessed)

  def accumulate_preprocessed_records(self, sample_state, stacked_records):
    """Adds many preprocessed records, stacked along axis 0, to the state.

    The default adds them one by one in a `tf.while_loop`; aggregations that
    can do it in one op override it.

    Args:
      sample_state: the current sample state.
      stacked_records: the structure of one record, each tensor with an extra
        leading dimension that indexes the records.

    Returns:
      The new sample state.
    """
    flat = tf.nest.flatten(stacked_records)
    count = tf.shape(flat[0])[0]

    def body(i, state):
      record = tf.nest.pack_sequence_as(stacked_records, [tf.gather(t, i) for t in flat])
      return i + 1, self.accumulate_preprocessed_record(state, record)

    _, state = tf.while_loop(lambda i, _: i < count, body, [tf.constant(0), sample_state])
    return state

  @abc.abstractmethod
  def merge_sample_states(self, sample_state_1, sample_state_2):
    """Returns the union of two sample states."""

  @abc.abstractmethod
  def get_noised_result(self, sample_state, global_state):
    """Releases the aggregated sample with noise.

    Args:
      sample_state: the sample state after all records were accumulated.
      global_state: the current global state.

    Returns:
      `(result, new_global_state)`: the noised result, with the structure of
      a record, and the global state for the next sample.
    """

  def derive_metrics(self, global_state):
    """Returns an ordered dict of metrics about the global state (default: none)."""
    del global_state
    return collections.OrderedDict()


class SumAggregationDPQuery(DPQuery):
  """A `DPQuery` whose sample state is the sum of the preprocessed records.

  Subclasses only define how records are preprocessed and how the sum is
  noised.
  """

  def initial_sample_state(self, template):
    """Implements `efl.privacy.DPQuery.initial_sample_state`."""
    return tf.nest.map_structure(lambda t: tf.zeros_like(t, dtype=t.dtype), template)

  def accumulate_preprocessed_record(self, sample_state, preprocessed_record):
    """Implements `efl.privacy.DPQuery.accumulate_preprocessed_record`."""
    return tf.nest.map_structure(tf.add, sample_state, preprocessed_record)

  def accumulate_preprocessed_records(self, sample_state, stacked_records):
    """Implements `efl.privacy.DPQuery.accumulate_preprocessed_records`."""
    return tf.nest.map_structure(lambda s, r: s + tf.reduce_sum(r, axis=0), sample_state, stacked_records)

  def merge_sample_states(self, sample_state_1, sample_state_2):
    """Implements `efl.privacy.DPQuery.merge_sample_states`."""
    return tf.nest.map_structure(tf.add, sample_state_1, sample_state_2)
