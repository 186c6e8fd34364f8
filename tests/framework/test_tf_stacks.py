"""What efl makes the same on TensorFlow 1.15 and on TensorFlow 2 in graph mode (efl.compat)."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl
from efl import compat


def test_importing_efl_leaves_graph_mode():
  assert not tf.executing_eagerly()
  assert isinstance(tf.placeholder(tf.float32, [None]), tf.Tensor)


def test_feature_column_variables_have_the_same_names_on_both_stacks():
  # The names a checkpoint holds: DenseFeatures of TF 1.15 and of tf-keras name them alike.
  with tf.Graph().as_default():
    ids = tf.constant([[1], [2]], tf.int64)
    cat = tf.feature_column.categorical_column_with_identity('ids', 10)
    sample = efl.Sample(
      {'ids': ids, 'x': tf.constant([[1.0, 2.0], [3.0, 4.0]])},
      {
        'deep': [tf.feature_column.embedding_column(cat, 4), tf.feature_column.numeric_column('x', 2)],
        'wide': [tf.feature_column.indicator_column(cat)],
      },
    )
    tf.layers.dense(sample['deep'], 3)
    names = sorted((v.op.name, v.shape.as_list()) for v in tf.global_variables())
    assert names == [('deep/ids_embedding/embedding_weights', [10, 4]), ('dense/bias', [3]), ('dense/kernel', [6, 3])]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      deep, wide = sess.run([sample['deep'], sample['wide']])
    assert deep.shape == (2, 6) and np.array_equal(wide, np.eye(10)[[1, 2]])


def test_op_error_text_is_the_ops_own_message_first():
  # TF 2's sessions put "Graph execution error:" and the node's definition first.
  with tf.Graph().as_default():
    x = tf.placeholder(tf.int32, [])
    check = tf.debugging.assert_equal(x, 1, message='x must be 1')
    with tf.Session() as sess:
      with pytest.raises(tf.errors.InvalidArgumentError) as info:
        sess.run(check, {x: 2})
  assert compat.op_error_text(info.value).split('\n')[0].startswith('assertion failed: [x must be 1]')


def test_resource_and_reference_variables_are_variables():
  with tf.Graph().as_default():
    ref = tf.get_variable('ref', [2], use_resource=False)
    res = tf.get_variable('res', [2], use_resource=True)
    assert compat.is_variable(ref) and compat.is_variable(res)
    assert not compat.is_variable(tf.constant(1.0))
