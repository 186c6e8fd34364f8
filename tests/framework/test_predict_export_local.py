"""Prediction and export on one machine: file formats, every example once, bad input. Real graphs, sessions,
checkpoints and SavedModels (the federated case: tests/federated/test_predict_export.py)."""

import csv
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl

N, BATCH = 100, 32  # the last batch holds 4 examples


@pytest.fixture(autouse=True)
def fresh_graph():
  with tf.Graph().as_default() as g:
    yield g


def data():
  rng = np.random.RandomState(0)
  x = rng.normal(size=(N, 3)).astype(np.float32)
  return x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32), np.arange(1000, 1000 + N).reshape(-1, 1)


def build(predict=True):
  x, y, ids = data()

  def input_fn(model, mode):
    ds = tf.data.Dataset.from_tensor_slices({'x': x, 'y': y, 'id': ids}).batch(BATCH)
    feats = tf.data.make_one_shot_iterator(ds.repeat() if mode == efl.MODE.TRAIN else ds).get_next()
    return efl.Sample(
      feats, {'x': [tf.feature_column.numeric_column('x', 3)], 'y': [tf.feature_column.numeric_column('y', 1)]}
    )

  def logits(sample):
    return tf.layers.dense(sample['x'], 1, name='out')

  def eval_fn(model, sample):
    p = tf.sigmoid(logits(sample))
    model.add_metric('auc', efl.metrics.auc(sample['y'], p), efl.MODE.EVAL)
    if predict:
      model.add_prediction('score', p)
      model.add_prediction('two', tf.concat([p, 1 - p], axis=1))
    return p

  model = efl.Model()
  model.input_fn(input_fn)
  model.loss_fn(lambda m, s: tf.losses.sigmoid_cross_entropy(s['y'], logits(s)))
  model.eval_fn(eval_fn)
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.5)))
  return model.compile()


def test_predict_writes_every_example_once_as_csv_and_tfrecord(tmp_path):
  model = build()
  model.fit(efl.procedure_fn.train(max_step=30), checkpoint_dir=str(tmp_path / 'ckpt'))
  model.fit(efl.procedure_fn.predict(str(tmp_path / 'p.csv')), checkpoint_dir=str(tmp_path / 'ckpt'))
  with open(str(tmp_path / 'p.csv')) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['row', 'score', 'two_0', 'two_1']  # no sample ids in a plain Sample: the row number
  assert [int(r[0]) for r in rows[1:]] == list(range(N))
  scores = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
  np.testing.assert_allclose(scores[:, 1], scores[:, 0], atol=1e-7)
  np.testing.assert_allclose(scores[:, 1] + scores[:, 2], 1, atol=1e-6)
  model.fit(efl.procedure_fn.predict(str(tmp_path / 'p.tfrecord')), checkpoint_dir=str(tmp_path / 'ckpt'))
  examples = [tf.train.Example.FromString(r) for r in tf.io.tf_record_iterator(str(tmp_path / 'p.tfrecord'))]
  assert len(examples) == N
  assert [e.features.feature['row'].int64_list.value[0] for e in examples] == list(range(N))
  np.testing.assert_allclose(
    [e.features.feature['score'].float_list.value[0] for e in examples], scores[:, 0], atol=1e-6
  )
  assert not [n for n in os.listdir(str(tmp_path)) if '.partial-' in n]


def test_export_loads_in_stock_tensorflow_and_matches_prediction(tmp_path):
  model = build()
  model.fit(efl.procedure_fn.train(max_step=30), checkpoint_dir=str(tmp_path / 'ckpt'))
  model.fit(efl.procedure_fn.predict(str(tmp_path / 'p.csv')), checkpoint_dir=str(tmp_path / 'ckpt'))
  path = model.export_saved_model(str(tmp_path / 'export'), checkpoint_dir=str(tmp_path / 'ckpt'))
  assert path == str(tmp_path / 'export' / '30')
  with open(str(tmp_path / 'p.csv')) as f:
    predicted = np.array([float(r[1]) for r in list(csv.reader(f))[1:]])
  with tf.Graph().as_default(), tf.Session() as sess:
    sig = tf.saved_model.loader.load(sess, ['serve'], path).signature_def['serving_default']
    assert sorted(sig.inputs) == ['x'] and sorted(sig.outputs) == ['score', 'two']  # no label needed to serve
    served = sess.run(sig.outputs['score'].name, {sig.inputs['x'].name: data()[0]})
  np.testing.assert_allclose(served[:, 0], predicted, atol=1e-6)
  # exported again from the same checkpoint: replaced in place
  assert model.export_saved_model(str(tmp_path / 'export'), checkpoint_dir=str(tmp_path / 'ckpt')) == path


def test_output_path_is_checked_before_anything_runs(tmp_path):
  with pytest.raises(ValueError, match='the directory of output_path .* does not exist; create'):
    efl.procedure_fn.predict(str(tmp_path / 'missing' / 'p.csv'))
  (tmp_path / 'p.csv').mkdir()
  with pytest.raises(ValueError, match="output_path .*p.csv' is a directory; give a file path"):
    efl.procedure_fn.predict(str(tmp_path / 'p.csv'))


def test_predict_without_predictions_and_export_without_checkpoint(tmp_path):
  model = build(predict=False)
  with pytest.raises(
    ValueError,
    match=r'predict: task None declares no prediction; call '
    r'model.add_prediction\(name, tensor\) in its eval_fn',
  ):
    model.fit(efl.procedure_fn.predict(str(tmp_path / 'p.csv')))
  assert not os.path.exists(str(tmp_path / 'p.csv'))
  with pytest.raises(ValueError, match='export: no checkpoint to export in .*; train first'):
    model.export_saved_model(str(tmp_path / 'export'), checkpoint_dir=str(tmp_path / 'empty'))
  model.fit(efl.procedure_fn.train(max_step=2), checkpoint_dir=str(tmp_path / 'ckpt'))
  with pytest.raises(ValueError, match='sends nothing and declares no prediction; declare the outputs'):
    model.export_saved_model(str(tmp_path / 'export'), checkpoint_dir=str(tmp_path / 'ckpt'))
