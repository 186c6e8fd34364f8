"""The single-machine Model API on real graphs and sessions."""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl
from efl.mode import TaskScope

N, BATCH = 256, 16


def make_input(seed=0, n=N, repeat=True):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
  ids = rng.randint(0, 50, size=(n, 1)).astype(np.int64)

  def input_fn(model, mode):
    ds = tf.data.Dataset.from_tensor_slices({'x': x, 'label': y, 'id': ids}).batch(BATCH)
    if repeat:
      ds = ds.repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    cols = {
      'x': [tf.feature_column.numeric_column('x', 3)],
      'label': [tf.feature_column.numeric_column('label', 1)],
      'emb': [
        tf.feature_column.embedding_column(tf.feature_column.categorical_column_with_identity('id', 50), dimension=2)
      ],
    }
    with tf.variable_scope('input_fn', reuse=tf.AUTO_REUSE):
      return efl.Sample(feats, cols)

  return input_fn


def logits_of(sample):
  with tf.variable_scope('net', reuse=tf.AUTO_REUSE):
    return tf.layers.dense(tf.concat([sample['x'], sample['emb']], 1), 1)


def loss_fn(model, sample):
  return tf.losses.sigmoid_cross_entropy(sample['label'], logits_of(sample))


def eval_fn(model, sample):
  auc = efl.metrics.auc(sample['label'], tf.sigmoid(logits_of(sample)))
  model.add_metric('auc', auc, efl.MODE.EVAL)
  return auc


def build(input_fn=None, with_eval=True, opt=None, **compile_kw):
  m = efl.Model()
  m.input_fn(input_fn or make_input())
  m.loss_fn(loss_fn)
  if with_eval:
    m.eval_fn(eval_fn)
  m.optimizer_fn(efl.optimizer_fn.optimizer_setter(opt or tf.train.GradientDescentOptimizer(0.5)))
  return m.compile(**compile_kw)


@pytest.fixture(autouse=True)
def fresh_graph():
  with tf.Graph().as_default() as g:
    yield g


def test_setters_return_model_and_reject_duplicates():
  m = efl.Model()
  assert m.input_fn(make_input()) is m
  assert m.loss_fn(loss_fn) is m
  with pytest.raises(ValueError, match='loss_fn is already set for task None'):
    m.loss_fn(loss_fn)


def test_accessors_after_compile():
  m = build()
  assert m.training_flag.dtype == tf.bool
  assert isinstance(m.input(efl.MODE.TRAIN), efl.Sample)
  assert m.loss().shape.ndims == 0
  assert m.train_op()[-1].name.startswith('global_step_increment')
  assert m.eval_op() is not None
  opt_vars = m.opt_to_vars()
  ((opt, (var_list, scope)),) = opt_vars.items()
  assert scope is None and any('net/dense/kernel' in v.name for v in var_list)
  assert 'auc' in m.metrics(efl.MODE.EVAL)
  assert m.metric_variables_initializer is not None
  m.add_extra_data('k', 42)
  assert m.get_extra_data('k') == 42


def test_fit_trains_and_logs(capsys):
  m = build()
  m.fit(efl.procedure_fn.train_and_evaluate(train_step=40, eval_step=5, max_iter=2), log_step=20)
  out = capsys.readouterr().out
  assert out.count('[train] gstep=') >= 4 and 'auc=' in out


def test_train_reduces_loss():
  m = build(with_eval=False)
  losses = []

  class Rec(tf.train.SessionRunHook):
    def before_run(self, ctx):
      return tf.train.SessionRunArgs(m.loss())

    def after_run(self, ctx, values):
      losses.append(values.results)

  m.add_hooks([Rec()])
  m.fit(efl.procedure_fn.train(max_step=60), log_step=30)
  assert len(losses) == 60
  assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_hooks_fire_only_in_their_scope():
  m = build()
  counts = {'train': 0, 'eval': 0}

  class Count(tf.train.SessionRunHook):
    def __init__(self, key):
      self.key = key

    def after_run(self, ctx, values):
      counts[self.key] += 1

  m.add_hooks([Count('train')])
  m.add_hooks([Count('eval')], mode=efl.MODE.EVAL)
  m.fit(efl.procedure_fn.train_and_evaluate(train_step=7, eval_step=3, max_iter=2), log_step=100)
  assert counts == {'train': 14, 'eval': 6}


def test_procedures_eval_only_and_data_end():
  m = build(input_fn=make_input(repeat=False), with_eval=True)
  seen = []

  class Rec(tf.train.SessionRunHook):
    def after_run(self, ctx, values):
      seen.append(1)

  m.add_hooks([Rec()])
  m.fit(efl.procedure_fn.train(), log_step=100)  # runs until the data ends
  assert len(seen) == N // BATCH


def test_task_scope_nesting():
  assert efl.current_task_scope() == TaskScope(efl.MODE.TRAIN, None)
  with efl.task_scope(efl.MODE.EVAL, 'a'):
    assert efl.current_task_scope() == TaskScope(efl.MODE.EVAL, 'a')
    with efl.task_scope(task='b'):
      assert efl.current_task_scope() == TaskScope(efl.MODE.EVAL, 'b')
  assert efl.current_task_scope().task is None


def test_multi_task_and_cotrain():
  m = efl.Model()
  m.input_fn(make_input())
  runs = {'a': 0, 'b': 0}

  def task_loss(name):
    def fn(model, sample):
      with tf.variable_scope(name):
        return tf.losses.sigmoid_cross_entropy(sample['label'], tf.layers.dense(sample['x'], 1))

    return fn

  class Count(tf.train.SessionRunHook):
    def __init__(self, key):
      self.key = key

    def after_run(self, ctx, values):
      runs[self.key] += 1

  for t in ('a', 'b'):
    m.loss_fn(task_loss(t), task=t)
    m.optimizer_fn(efl.optimizer_fn.scope_optimizer({t: tf.train.GradientDescentOptimizer(0.1)}), task=t)
    m.add_hooks([Count(t)], task=t)
  m.compile()
  assert set(m.tasks) == {'a', 'b'}
  assert m.train_op('a') is not None and m.train_op('b') is not None
  with pytest.raises(KeyError, match="unknown task 'c'"):
    m.train_op('c')
  m.fit(efl.procedure_fn.cotrain({'a': 0.5, 'b': 0.5}, max_iter=6, train_step=3), log_step=100)
  assert runs['a'] + runs['b'] == 18 and runs['a'] > 0 and runs['b'] > 0


def test_cotrain_ratios_must_sum_to_one():
  with pytest.raises(ValueError, match='sum to 1'):
    efl.procedure_fn.cotrain({'a': 0.5, 'b': 0.4})


def test_sample_api():
  feats = {'d': tf.constant([[1.0, 2.0]]), 's': tf.SparseTensor([[0, 0]], tf.constant([3], tf.int64), [1, 2])}
  cols = {
    'deep': [tf.feature_column.numeric_column('d', 2)],
    'emb': [
      tf.feature_column.embedding_column(tf.feature_column.categorical_column_with_identity('s', 10), dimension=4)
    ],
  }
  s = efl.Sample.create(feats, cols)
  assert 'deep' in s and len(s) == 2 and set(s.to_dict()) == {'deep', 'emb'}
  assert s['emb'].shape.as_list() == [1, 4]
  assert s.features is not None and len(s.before_step_ops()) == 1
  s.set_transformed_feature_groups({'deep2': s['deep'] * 2})
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    assert sess.run(s['deep2']).tolist() == [[2.0, 4.0]]
  assert dict(s.items())['deep'] is s['deep']


def test_sample_missing_feature_key_is_named():
  with pytest.raises(KeyError, match="reads feature\\(s\\) \\['nope'\\]"):
    efl.Sample({'d': tf.constant([[1.0]])}, {'g': [tf.feature_column.numeric_column('nope', 1)]})


def test_input_fn_must_return_sample():
  m = efl.Model()
  m.input_fn(lambda model, mode: {'x': tf.constant([1.0])})
  m.loss_fn(loss_fn)
  m.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  with pytest.raises(TypeError, match='input_fn must return an efl.Sample .* returned dict'):
    m.compile()


def test_none_loss_with_nothing_to_train():
  m = efl.Model()
  m.input_fn(make_input())
  m.loss_fn(lambda model, sample: None)
  m.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  with pytest.raises(ValueError, match='nothing to train'):
    m.compile()


def test_fit_before_compile():
  m = efl.Model()
  with pytest.raises(RuntimeError, match='before compile'):
    m.fit(efl.procedure_fn.train(1))


def test_opt_config_not_mutated_and_reduce_sum():
  cfg = {'REDUCE': 'sum'}
  m = efl.Model()
  m.input_fn(make_input())
  m.loss_fn(
    lambda model, sample: tf.reshape(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=sample['label'], logits=logits_of(sample)), [-1]
    )
  )
  m.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  m.compile(opt_config=cfg)
  assert cfg == {'REDUCE': 'sum'}


def test_gauc_matches_numpy():
  labels = np.array([1, 0, 1, 0, 1, 1, 0, 0], np.float32)
  preds = np.array([0.9, 0.1, 0.4, 0.6, 0.8, 0.7, 0.2, 0.3], np.float32)
  groups = np.array([1, 1, 1, 1, 2, 2, 2, 3])
  value, update = efl.metrics.gauc(tf.constant(labels), tf.constant(preds), tf.constant(groups))
  with tf.Session() as sess:
    sess.run(tf.local_variables_initializer())
    sess.run(update)
    got = sess.run(value)
  # group 1: pairs (0.9,0.4 vs 0.1,0.6) -> 3/4; group 2: 1.0; group 3 has one class and is skipped.
  assert got == pytest.approx((0.75 * 4 + 1.0 * 3) / 7, abs=1e-6)


def test_logging_lines_and_tensorboard(tmp_path, capsys):
  m = build()
  m.fit(
    efl.procedure_fn.train_and_evaluate(train_step=20, eval_step=4, max_iter=1),
    log_step=10,
    checkpoint_dir=str(tmp_path),
  )
  out = capsys.readouterr().out
  assert '[train] gstep=10 lstep=10 steps/s=' in out and 'samples/s=' in out and 'loss=' in out
  assert '[eval] gstep=20 lstep=4' in out and 'auc=' in out
  assert 'train done:' in out and 'eval done:' in out
  events = [f for f in os.listdir(str(tmp_path)) if f.startswith('events.out.tfevents')]
  assert events
  tags = set()
  for f in events:
    for e in tf.train.summary_iterator(os.path.join(str(tmp_path), f)):
      tags.update(v.tag for v in e.summary.value)
  assert {'train/loss', 'eval/auc'} <= tags


class Crash(Exception):
  pass


def test_restart_resumes_at_checkpoint_and_skips_finished_stages(tmp_path):
  ckpt = str(tmp_path)
  ran = []

  def procedure(crash):
    def fn(model):
      for i in range(3):
        model.run_stage('stage%d' % i, lambda sess, i=i: ran.append(i))
        efl.procedure_fn._run_loop(model, 'train%d' % i, efl.MODE.TRAIN, None, step=10)
        if crash and i == 1:
          raise Crash()

    return fn

  m = build(with_eval=False)
  with pytest.raises(Crash):
    m.fit(procedure(True), log_step=100, checkpoint_dir=ckpt, save_checkpoint_steps=5)
  assert ran == [0, 1]
  assert tf.train.latest_checkpoint(ckpt).endswith('-20')
  with tf.Graph().as_default():
    m2 = build(with_eval=False)
    gsteps = []

    class Rec(tf.train.SessionRunHook):
      def before_run(self, ctx):
        return tf.train.SessionRunArgs(m2.global_step)

      def after_run(self, ctx, values):
        gsteps.append(values.results)

    m2.add_hooks([Rec()])
    m2.fit(procedure(False), log_step=100, checkpoint_dir=ckpt, save_checkpoint_steps=5)
  assert ran == [0, 1, 2]  # stages 0 and 1 were skipped
  assert gsteps == list(range(21, 31))  # resumed at step 20, ran only stage 2's training
  assert tf.train.latest_checkpoint(ckpt).endswith('-30')


def test_model_bank_loads_variables(tmp_path):
  m = build(with_eval=False)
  m.fit(efl.procedure_fn.train(max_step=5), log_step=100, checkpoint_dir=str(tmp_path / 'src'))
  src = tf.train.latest_checkpoint(str(tmp_path / 'src'))
  kernel = tf.train.load_checkpoint(src).get_tensor('net/dense/kernel')
  with tf.Graph().as_default():
    m2 = build(with_eval=False)
    bank = efl.stage.ModelBank(True, {'pre': {'path': str(tmp_path / 'src'), 'load': ['net/*'], 'exclude': ['*bias*']}})
    got = {}

    def fn(model):
      model.run_stage('bank', bank)
      got['kernel'], got['bias'] = model._sess.run_step_fn(
        lambda step_context: step_context.session.run(
          [
            tf.get_default_graph().get_tensor_by_name('net/dense/kernel:0'),
            tf.get_default_graph().get_tensor_by_name('net/dense/bias:0'),
          ]
        )
      )

    m2.fit(fn, log_step=100)
  np.testing.assert_array_equal(got['kernel'], kernel)
  assert np.all(got['bias'] == 0)  # excluded: still its initial value


def test_config_optimizer_from_flags():
  efl.flags.parse(['-c', json.dumps({'optimizer': {'name': 'adam', 'params': {'learning_rate': 0.01}}})])
  try:
    opts = efl.optimizer_fn.config_optimizer(None, None)
    assert isinstance(list(opts)[0], tf.train.AdamOptimizer)
  finally:
    efl.flags.parse([])


def test_wrong_role_is_a_clear_error():
  with pytest.raises(ValueError, match='--federal_role=leader or --federal_role=follower'):
    efl.flags.check_role('boss')


def test_train_and_eval_samples_share_embeddings():
  cols = {
    'emb': [
      tf.feature_column.embedding_column(tf.feature_column.categorical_column_with_hash_bucket('c', 100), dimension=4)
    ]
  }
  a = efl.Sample({'c': tf.constant([['x']])}, cols)
  b = efl.Sample({'c': tf.constant([['x']])}, cols)
  assert len(tf.global_variables()) == 1
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    va, vb = sess.run([a['emb'], b['emb']])
  np.testing.assert_array_equal(va, vb)
