"""Streaming metrics: `auc` and `gauc` (AUC averaged over groups, e.g. per user)."""

import numpy as np
import tensorflow.compat.v1 as tf


def auc(
  labels,
  predictions,
  weights=None,
  num_thresholds=200,
  metrics_collections=None,
  updates_collections=None,
  curve='ROC',
  name=None,
  summation_method='trapezoidal',
):
  """Streaming AUC, as `tf.metrics.auc`: returns `(auc, update_op)`; labels are cast to bool."""
  labels = tf.cast(tf.reshape(labels, [-1]), tf.bool)
  predictions = tf.reshape(tf.cast(predictions, tf.float32), [-1])
  return tf.metrics.auc(
    labels,
    predictions,
    weights=weights,
    num_thresholds=num_thresholds,
    metrics_collections=metrics_collections,
    updates_collections=updates_collections,
    curve=curve,
    name=name,
    summation_method=summation_method,
  )


def _exact_auc(labels, scores):
  """Exact ROC AUC with ties counted half (Mann-Whitney U)."""
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores), dtype=np.float64)
  sorted_scores = scores[order]
  i = 0
  while i < len(scores):
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i : j + 1]] = (i + j) / 2.0 + 1
    i = j + 1
  pos = labels > 0.5
  n_pos, n_neg = pos.sum(), (~pos).sum()
  return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def gauc_value(labels, predictions, groups):
  """Group AUC in numpy: the AUC of each group that has both classes, weighted by the group's size."""
  labels = np.asarray(labels, dtype=np.float64).reshape(-1)
  predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
  groups = np.asarray(groups).reshape(-1)
  total, weight = 0.0, 0
  for g in np.unique(groups):
    idx = groups == g
    lab = labels[idx]
    if lab.min() == lab.max():
      continue  # AUC is undefined for a group with one class
    total += _exact_auc(lab, predictions[idx]) * idx.sum()
    weight += idx.sum()
  return np.float64(total / weight if weight else 0.0)


def gauc(labels, predictions, indicators, metrics_collections=None, updates_collections=None, name=None):
  """Streaming group AUC: returns `(gauc, update_op)` like `tf.metrics.*` (EFLS's signature).

  `indicators` are the group ids (e.g. user ids). Every batch's labels, predictions and group ids are kept in
  metric variables (reset by `model.metric_variables_initializer`), so the value is exact over everything seen
  since the last reset. (EFLS's own `gauc` cannot run: it calls an op its library lacks.)
  """
  groups = indicators
  with tf.variable_scope(name, default_name='gauc'):
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.float32), [-1])
    groups = tf.reshape(groups, [-1])
    if groups.dtype != tf.string:
      groups = tf.as_string(groups)
    store = {}
    for key, tensor in (('labels', labels), ('predictions', predictions), ('groups', groups)):
      store[key] = tf.get_variable(
        key,
        initializer=tf.zeros([0], dtype=tensor.dtype),
        validate_shape=False,
        trainable=False,
        collections=[tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.METRIC_VARIABLES],
      )
    updates = [
      tf.assign(store[k], tf.concat([store[k], t], 0), validate_shape=False)
      for k, t in (('labels', labels), ('predictions', predictions), ('groups', groups))
    ]

    def value_of(tensors):
      return tf.py_func(gauc_value, tensors, tf.float64, stateful=True)

    value = tf.cast(
      value_of([store['labels'].read_value(), store['predictions'].read_value(), store['groups'].read_value()]),
      tf.float32,
    )
    value.set_shape([])
    update_op = tf.cast(value_of(updates), tf.float32)
    update_op.set_shape([])
    for collection, tensor in ((metrics_collections, value), (updates_collections, update_op)):
      for key in collection or ():
        tf.add_to_collection(key, tensor)
    return value, update_op
