"""EFLS's later API on efl: task scopes, stages with feed_dict, module paths, config getters, fit's session
arguments, AUTO_REUSE, string metrics, both recv forms, DP call forms. Real graphs and sessions."""

import collections
import functools
import importlib
import json

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import efl
from efl.example.multitask.procedure import iterate_train_and_eval
from efl.mode import TaskScope

N, BATCH = 256, 16


@pytest.fixture(autouse=True)
def fresh_graph():
  with tf.Graph().as_default() as g:
    yield g
  efl.flags.parse([])


def _data(seed):
  rng = np.random.RandomState(seed)
  x = rng.normal(size=(N, 3)).astype(np.float32)
  return x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32), (x[:, :1] > 0).astype(np.float32)


def input_fn_for(task, repeat=True):
  """An input_fn that reads its task's own copy of the data (labels 'a' and 'b': two tasks)."""

  def input_fn(model, mode):
    x, a, b = _data(0 if mode == efl.MODE.TRAIN else 1)
    ds = tf.data.Dataset.from_tensor_slices({'x': x, 'a': a, 'b': b}).batch(BATCH)
    if repeat:
      ds = ds.repeat()
    feats = tf.data.make_one_shot_iterator(ds).get_next()
    cols = {
      'x': [tf.feature_column.numeric_column('x', 3)],
      'a': [tf.feature_column.numeric_column('a', 1)],
      'b': [tf.feature_column.numeric_column('b', 1)],
    }
    return efl.Sample(feats, cols)

  return input_fn


def algo_loss_fn(model, sample, mode, task):
  """In the style of EFLS's algorithm library: one fn for loss_fn and eval_fn; shared bottom, one head."""
  bottom = tf.layers.dense(sample['x'], 4, activation=tf.nn.relu, name='bottom')
  logits = tf.layers.dense(bottom, 1, name='head_%s' % task)
  label = sample['a' if task == 'ta' else 'b']
  loss = tf.losses.sigmoid_cross_entropy(label, logits)
  _, auc = tf.metrics.auc(label, tf.sigmoid(logits), name='auc_%s_%s' % (task, mode.name))
  model.add_metric('auc', auc, mode=mode, task=task)
  model.add_metric('task', task, mode=mode, task=task)  # a Python string, as the algorithm library logs it
  return loss if mode == efl.MODE.TRAIN else auc


def build_two_tasks():
  model = efl.Model()
  for task in ('ta', 'tb'):
    with efl.task_scope(mode=efl.MODE.TRAIN, task=task):
      model.input_fn(input_fn_for(task))
      model.loss_fn(functools.partial(algo_loss_fn, mode=efl.MODE.TRAIN, task=task))
      model.eval_fn(functools.partial(algo_loss_fn, mode=efl.MODE.EVAL, task=task))
      model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.5)))
  return model.compile()


def test_functions_set_inside_a_task_scope_belong_to_its_task():
  model = build_two_tasks()
  assert sorted(model.tasks) == ['ta', 'tb']
  assert sorted(model.loss_fns) == ['ta', 'tb'] and sorted(model.input_fns) == ['ta', 'tb']
  assert set(model.inputs) == {TaskScope(m, t) for m in efl.MODE for t in ('ta', 'tb')}
  assert model.train_op('ta') and model.eval_op('tb')


def test_eval_fn_that_rebuilds_the_training_layers_shares_their_variables():
  build_two_tasks()
  names = sorted(v.op.name for v in tf.trainable_variables())
  # one bottom shared by both tasks and both modes, one head per task: no copies for eval
  assert names == ['bottom/bias', 'bottom/kernel', 'head_ta/bias', 'head_ta/kernel', 'head_tb/bias', 'head_tb/kernel']


def _log_lines(capsys):
  """efl's log lines (INFO to stdout, warnings to stderr), without their time and level prefix."""
  out = capsys.readouterr()
  return [ln.split('] ', 1)[-1] for ln in (out.out + out.err).splitlines()]


def test_cotrain_trains_both_tasks_and_logs_string_metrics(capsys):
  model = build_two_tasks()
  model.fit(efl.procedure_fn.cotrain({'ta': 0.5, 'tb': 0.5}, max_iter=6, train_step=20, eval_step=4), log_step=10)
  lines = _log_lines(capsys)
  for task in ('ta', 'tb'):
    assert any(ln.startswith('[train/%s]' % task) and 'task=%s' % task in ln and 'auc=' in ln for ln in lines), task
    assert any(ln.startswith('eval/%s done' % task) and 'auc=' in ln for ln in lines), task


def test_train_and_evaluate_per_task_learns(capsys):
  model = build_two_tasks()
  aucs = {}
  model.fit(
    _sequential(
      efl.procedure_fn.train_and_evaluate(train_step=150, eval_step=16, max_iter=1, task='ta'),
      efl.procedure_fn.train_and_evaluate(train_step=150, eval_step=16, max_iter=1, task='tb'),
    ),
    log_step=1000,
  )
  for line in _log_lines(capsys):
    for task in ('ta', 'tb'):
      if line.startswith('eval/%s done' % task):
        aucs[task] = float(line.split('auc=')[1].split()[0])
  assert aucs['ta'] > 0.9 and aucs['tb'] > 0.9, aucs


def _sequential(*procedures):
  def fn(model):
    for p in procedures:
      p(model)

  return fn


def test_custom_procedure_with_loop_stages_and_feed_dict(capsys):
  model = build_two_tasks()
  seen = collections.Counter()

  class FlagHook(tf.train.SessionRunHook):
    def __init__(self, task):
      self.task = task

    def before_run(self, run_context):
      return tf.train.SessionRunArgs(model.training_flag)

    def after_run(self, run_context, run_values):
      seen[(self.task, bool(run_values.results))] += 1

  for task in ('ta', 'tb'):
    model.add_hooks([FlagHook(task)], mode=efl.MODE.TRAIN, task=task)
    model.add_hooks([FlagHook(task)], mode=efl.MODE.EVAL, task=task)
  # the multitask example's procedure: LoopStages in task scopes, run with feed_dict until `finish`
  specs = {'ta': {'train_step': 3, 'eval_step': 2}, 'tb': {'train_step': 2}}
  model.fit(iterate_train_and_eval(specs, max_iter=10), log_step=1)
  # 10 iterations of 3 and 2 training runs in the tasks' scopes (flag fed True), then 2 eval runs of ta (False)
  assert seen == {('ta', True): 30, ('tb', True): 20, ('ta', False): 2}
  assert model.stage_mgr.finished_order[:2] == ['ta_train', 'tb_train']


def test_loop_stage_finish_at_end_of_data():
  model = efl.Model()
  model.input_fn(input_fn_for('ta', repeat=False))
  model.loss_fn(lambda m, s: algo_loss_fn(m, s, efl.MODE.TRAIN, 'ta'))
  model.optimizer_fn(efl.optimizer_fn.optimizer_setter(tf.train.GradientDescentOptimizer(0.1)))
  model.compile()
  stage = efl.stage.LoopStage(model.train_op(), True)
  result = {}

  def proc(m):
    m.run_stage('train', stage, feed_dict={m.training_flag: True})
    result['finish'], result['lstep'] = stage.finish, stage.lstep

  model.fit(proc, log_step=100)
  assert result == {'finish': True, 'lstep': N // BATCH}


def test_stage_name_reused_for_another_kind_of_stage_is_refused():
  model = build_two_tasks()

  def proc(m):
    m.run_stage('warmup', efl.stage.LoopStage(m.train_op('ta'), True, 1, task='ta'))
    m.run_stage('warmup', lambda sess: None)

  with pytest.raises(
    ValueError,
    match=r"run_stage\('warmup'\): the name was used for a LoopStage stage and now "
    r'for a function',
  ):
    model.fit(proc)


def test_bad_metric_value_and_task_without_input_fn():
  model = efl.Model()
  with pytest.raises(TypeError, match=r"add_metric\('bad'\): the value must be a tensor.*object"):
    model.add_metric('bad', object())
  with efl.task_scope(task='lonely'):
    model.loss_fn(lambda m, s: tf.constant(0.0))
  with pytest.raises(ValueError, match="task 'lonely' has no input_fn; call model.input_fn"):
    model.compile()


def test_with_tmp_hooks_sees_only_runs_inside_the_block():
  model = build_two_tasks()
  counts = collections.Counter()

  class Count(tf.train.SessionRunHook):
    def begin(self):
      counts['begin'] += 1
      self.step = tf.train.get_global_step()  # begin may read the graph, as with a MonitoredSession

    def after_run(self, run_context, run_values):
      counts['run'] += 1

  hook = Count()

  def proc(m):
    efl.procedure_fn.train(max_step=3, task='ta')(m)
    with efl.with_tmp_hooks([hook]):
      m.run_stage('inside', efl.stage.LoopStage(m.train_op('tb'), True, 4, task='tb'))
    m.run_stage('after', efl.stage.LoopStage(m.train_op('tb'), True, 2, task='tb'))

  model.fit(proc)
  assert counts == {'begin': 1, 'run': 4}
  with pytest.raises(RuntimeError, match='with_tmp_hooks\\(\\) needs a running session'):
    with efl.with_tmp_hooks([hook]):
      pass


def test_fit_takes_monitored_session_arguments(tmp_path):
  model = build_two_tasks()
  seen = collections.Counter()

  class Count(tf.train.SessionRunHook):
    def __init__(self, key):
      self.key = key

    def after_run(self, run_context, run_values):
      seen[self.key] += 1

  scaffold = tf.train.Scaffold(saver=tf.train.Saver(max_to_keep=2))
  model.fit(
    efl.procedure_fn.train(max_step=5, task='ta'),
    checkpoint_dir=str(tmp_path / 'ckpt'),
    hooks=[Count('hooks')],
    chief_only_hooks=[Count('chief')],
    scaffold=scaffold,
    summary_dir=str(tmp_path / 'summary'),
    log_step=1,
    stop_grace_period_secs=5,
  )
  assert seen == {'hooks': 5, 'chief': 5}
  assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-5')
  assert tf.gfile.Glob(str(tmp_path / 'summary' / 'events.out.tfevents.*'))
  with pytest.raises(TypeError, match=r"fit\(\) got unexpected arguments \['no_such'\]"):
    model.fit(efl.procedure_fn.train(max_step=1), no_such=1)


def test_a_saver_hook_of_the_script_or_zero_steps_replaces_efls_own(tmp_path):
  own_dir, efl_dir, none_dir = (str(tmp_path / d) for d in ('own', 'efl', 'none'))
  model = build_two_tasks()
  saver_hook = tf.train.CheckpointSaverHook(own_dir, save_steps=2)
  model.fit(efl.procedure_fn.train(max_step=5, task='ta'), checkpoint_dir=efl_dir, hooks=[saver_hook])
  assert tf.train.latest_checkpoint(efl_dir) is None  # efl added no saver of its own
  steps = sorted(int(p.rsplit('-', 1)[1]) for p in tf.train.get_checkpoint_state(own_dir).all_model_checkpoint_paths)
  assert steps == [0, 2, 4, 5]  # the hook's own schedule: at the start, every 2 steps, at the end
  with tf.Graph().as_default():
    model = build_two_tasks()
    model.fit(efl.procedure_fn.train(max_step=3, task='ta'), checkpoint_dir=none_dir, save_checkpoint_steps=0)
  assert tf.train.latest_checkpoint(none_dir) is None


def test_efls_module_paths_and_top_level_names():
  for path, names in {
    'efl.framework.task_scope': ['task_scope', 'current_task_scope', 'TaskScope'],
    'efl.framework.common_define': ['MODE'],
    'efl.framework.hook_manager': ['with_tmp_hooks'],
    'efl.framework.model': ['Model', 'FederalModel'],
    'efl.framework.sample': ['Sample', 'FederalSample'],
    'efl.framework.stage': ['Stage'],
    'efl.framework.stage_manager': ['StageManager'],
    'efl.framework.stage_combiner': ['First', 'Last', 'Chief', 'Mean', 'Sum', 'List'],
    'efl.framework.communicator': ['Communicator', 'CommunicatorHook'],
    'efl.stage': ['LoopStage', 'ModelBank'],
    'efl.stage.loop': ['LoopStage'],
    'efl.stage.model_bank': ['ModelBank', 'ConfigItem'],
    'efl.model_fn.procedure_fn': ['train', 'eval', 'train_and_evaluate', 'cotrain'],
    'efl.model_fn.optimizer_fn': ['optimizer_setter', 'scope_optimizer', 'config_optimizer'],
    'efl.hooks.logger_hook': ['LoggerHook'],
    'efl.utils.config': ['get_task_index', 'get_worker_num', 'get_server_num', 'is_chief', 'get_config'],
    'efl.utils.metrics': ['auc', 'gauc'],
    'efl.utils.column_util': ['make_parse_example_spec', 'input_layer', 'get_feature_key'],
    'efl.dataio.dataio': ['DataIO', 'FederalDataIO'],
    'efl.privacy': ['DPGradientDescentGaussianOptimizer', 'compute_dp_sgd_privacy', 'Role'],
  }.items():
    module = importlib.import_module(path)
    for name in names:
      assert getattr(module, name) is not None, (path, name)
  for name in (
    'get_app_id',
    'get_federal_role',
    'get_task_name',
    'get_task_index',
    'get_peer_addr',
    'get_local_addr',
    'get_cluster',
    'get_ckpt_dir',
    'get_zk_addr',
    'local_mode',
    'dist_mode',
    'get_config_str',
    'is_chief',
    'get_config',
    'get_worker_num',
    'get_server_num',
    'get_ps_num',
    'with_tmp_hooks',
    'make_parse_example_spec',
    'efl_version',
    'tf_version',
    'task_scope',
    'current_task_scope',
    'MODE',
    'Stage',
  ):
    assert callable(getattr(efl, name)) or name == 'MODE', name


def test_config_getters_read_the_flags(monkeypatch):
  cluster = {'worker': ['127.0.0.1:1', '127.0.0.1:2'], 'ps': ['127.0.0.1:3']}
  efl.flags.parse(
    [
      '--federal_role=follower',
      '--app_id=job7',
      '--ps_num=1',
      '--worker_num=2',
      '--task_name=worker',
      '--task_index=1',
      '-c',
      json.dumps({'cluster': cluster, 'k': {'x': 3}}),
    ]
  )
  assert (
    efl.get_federal_role(),
    efl.get_app_id(),
    efl.get_ps_num(),
    efl.get_server_num(),
    efl.get_worker_num(),
    efl.get_task_name(),
    efl.get_task_index(),
  ) == ('follower', 'job7', 1, 1, 2, 'worker', 1)
  assert not efl.is_chief() and efl.dist_mode() and not efl.local_mode()
  assert efl.get_cluster() == cluster and efl.get_config('k', 'x') == 3
  assert json.loads(efl.get_config_str())['k'] == {'x': 3}
  efl.flags.parse([])
  assert efl.is_chief() and efl.local_mode() and efl.get_server_num() == 0
  with pytest.raises(ValueError, match='no cluster is configured'):
    efl.get_cluster()
  monkeypatch.setenv('TF_CONFIG', json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': 0}}))
  assert efl.get_cluster() == cluster


def test_make_parse_example_spec_merges_and_names_conflicts():
  a = tf.feature_column.numeric_column('x', 3)
  b = tf.feature_column.embedding_column(tf.feature_column.categorical_column_with_identity('id', 10), 2)
  spec = efl.make_parse_example_spec([a, b])
  assert set(spec) == {'x', 'id'}
  with pytest.raises(ValueError, match="feature 'x' is read with two different specs"):
    efl.make_parse_example_spec([a, tf.feature_column.numeric_column('x', 4)])


def test_gauc_takes_efls_signature():
  labels, preds, users = [1, 0, 1, 0, 1, 1], [0.9, 0.1, 0.2, 0.8, 0.7, 0.6], [1, 1, 2, 2, 3, 3]
  value, update = efl.metrics.gauc(
    tf.constant(labels),
    tf.constant(preds),
    tf.constant(users),
    metrics_collections=['m'],
    updates_collections=['u'],
    name='g',
  )
  assert tf.get_collection('m') == [value] and tf.get_collection('u') == [update]
  with tf.Session() as sess:
    sess.run(tf.local_variables_initializer())
    sess.run(update)
    assert sess.run(value) == pytest.approx(0.5)  # user 1: 1.0, user 2: 0.0, user 3: no negative


def test_dp_optimizer_call_forms(capsys):
  unclipped = efl.privacy.DPGradientDescentGaussianOptimizer(noise_multiplier=1.0, learning_rate=0.25)
  assert unclipped.l2_norm_clip is None and unclipped.noise_multiplier == 1.0
  assert unclipped._learning_rate == 0.25  # pylint: disable=protected-access
  assert any('This is NOT differential privacy' in ln for ln in _log_lines(capsys))
  clipped = efl.DPGradientDescentGaussianOptimizer(1.5, 1.3, learning_rate=0.1)
  assert (clipped.l2_norm_clip, clipped.noise_multiplier) == (1.5, 1.3)


def test_federal_model_recv_forms_and_grad_views():
  efl.flags.parse(['--federal_role=leader', '--local_addr=127.0.0.1:1', '--peer_addr=127.0.0.1:2'])
  model = efl.FederalModel()
  first = model.recv('a', tf.float32, True, shape=[-1, 4])  # the first release's order
  later = model.recv('b', [-1, 2], tf.float32, True)  # the later (name, shape, dtype, ...) order
  plain = model.recv('c', dtype=tf.int64)
  with efl.task_scope(task='t2'):
    scoped = model.recv('d', shape=[-1, 3], dtype=tf.float32, require_grad=True)
  assert first.shape.as_list() == [None, 4] and later.shape.as_list() == [None, 2]
  assert plain.dtype == tf.int64 and scoped.shape.as_list() == [None, 3]
  assert model.recv_grad_ops == {None: [('a', first), ('b', later)], 't2': [('d', scoped)]}
  assert model.require_grad_ops == {}
  sent = tf.ones([2, 4])
  model.send('s', sent, True)
  ((tensor, grad),) = model.require_grad_ops[None]
  assert tensor is sent and grad.shape.as_list() == [2, 4]
  with pytest.raises(TypeError, match=r"recv\('x'\) got 'dtype' twice"):
    model.recv('x', tf.float32, dtype=tf.float32)
  with pytest.raises(TypeError, match=r"recv\('x'\) got an unexpected argument 'bogus'"):
    model.recv('x', bogus=1)
