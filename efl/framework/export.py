"""SavedModel export of one party's evaluation graph: `model.export_saved_model(export_dir, task=None)`.

The task's `eval_fn` is built again in a fresh graph, on placeholders for the party's raw features (what its
data holds, before feature columns) instead of its readers. Each `recv` becomes a named input and each `send` a
named output of the `serving_default` signature, next to the predictions of `add_prediction`; metrics and hooks
are left out. The variables are restored from a checkpoint by name, so the layers `eval_fn` builds must be the
ones training built (named layers, as `tf.layers.dense(..., name='fc1')`): a variable the checkpoint lacks is an
error naming it. The SavedModel is written to `export_dir/<global step>`, the layout TensorFlow Serving reads.
"""

import collections
import contextlib
import os
import shutil
import tempfile

import tensorflow.compat.v1 as tf

from efl import flags
from efl.mode import MODE, task_scope


class ExportState(object):
  """What the model's methods record while `eval_fn` is built for export (instead of what they do in fit)."""

  def __init__(self):
    self.inputs = collections.OrderedDict()  # name -> placeholder (raw features, then receives)
    self.outputs = collections.OrderedDict()  # name -> tensor (sends, then predictions)

  def add_input(self, name, tensor):
    if name in self.inputs:
      raise ValueError('export: two inputs are named %r (a raw feature and a recv, or two recvs); rename one' % (name,))
    self.inputs[name] = tensor

  def add_output(self, name, tensor, kind):
    if name in self.outputs:
      raise ValueError('export: two outputs are named %r (a send and a prediction?); rename the %s' % (name, kind))
    self.outputs[name] = tensor


def _placeholder(name, tensor):
  shape = tensor.shape
  if shape.ndims:
    shape = tf.TensorShape([None]).concatenate(shape[1:])  # any batch size
  if isinstance(tensor, tf.SparseTensor):
    return tf.sparse_placeholder(tensor.dtype, name=name)
  return tf.placeholder(tensor.dtype, shape=shape, name=name)


def _ancestors(tensors):
  seen, stack = set(), [t.op for t in tensors]
  while stack:
    op = stack.pop()
    if op not in seen:
      seen.add(op)
      stack.extend(x.op for x in op.inputs)
      stack.extend(op.control_inputs)
  return seen


def _needed_inputs(inputs, outputs):
  """The inputs the outputs depend on (a label feature, say, is not needed to serve)."""
  used = _ancestors(outputs.values())

  def ops_of(t):
    return [t.indices.op, t.values.op, t.dense_shape.op] if isinstance(t, tf.SparseTensor) else [t.op]

  return collections.OrderedDict((n, t) for n, t in inputs.items() if any(o in used for o in ops_of(t)))


def _checkpoint(checkpoint_path, checkpoint_dir):
  if checkpoint_path:
    if not tf.train.checkpoint_exists(checkpoint_path):
      raise ValueError('export: checkpoint %r does not exist' % (checkpoint_path,))
    return checkpoint_path
  checkpoint_dir = checkpoint_dir or flags.get_ckpt_dir()
  path = tf.train.latest_checkpoint(checkpoint_dir) if checkpoint_dir else None
  if not path:
    raise ValueError(
      'export: no checkpoint to export in %r; train first (fit with checkpoint_dir or '
      '--ckpt_dir), or pass checkpoint_path' % (checkpoint_dir,)
    )
  return path


def _restore(sess, checkpoint_path):
  reader = tf.train.load_checkpoint(checkpoint_path)
  saved = reader.get_variable_to_shape_map()
  variables = tf.global_variables()
  missing = [v.op.name for v in variables if v.op.name not in saved]
  if missing:
    raise ValueError(
      'export: checkpoint %s lacks variables %s that eval_fn builds; give eval_fn the layers '
      'training built (name them, e.g. tf.layers.dense(x, 10, name="fc1"))' % (checkpoint_path, missing)
    )
  if variables:
    tf.train.Saver(variables).restore(sess, checkpoint_path)
  return int(reader.get_tensor('global_step')) if reader.has_tensor('global_step') else 0


@contextlib.contextmanager
def _exporting(model, graph):
  """Makes `model` build into `graph`, recording sends, receives and predictions in an ExportState."""
  # pylint: disable=protected-access
  saved = (model._graph, model._training_flag, model._global_step, model._export)
  with graph.as_default():
    model._graph = graph
    model._training_flag = tf.placeholder_with_default(False, shape=[], name='is_training_flag')
    model._global_step = tf.train.get_or_create_global_step()
    model._export = ExportState()
    try:
      yield model._export
    finally:
      model._graph, model._training_flag, model._global_step, model._export = saved


def export_saved_model(model, export_dir, task=None, checkpoint_path=None, checkpoint_dir=None):
  """Writes the task's serving model; returns the version directory (see the module doc)."""
  t = model._compiled_task(task)  # pylint: disable=protected-access
  eval_fn = t.fns.get('eval_fn')
  sample = t.samples.get(MODE.EVAL)
  if eval_fn is None or sample is None:
    raise ValueError(
      'export: task %r needs an eval_fn and an EVAL input (input_fn returning a Sample for '
      'MODE.EVAL): the serving model is the evaluation graph' % (task,)
    )
  checkpoint_path = _checkpoint(checkpoint_path, checkpoint_dir)
  graph = tf.Graph()
  with _exporting(model, graph) as state:
    features = collections.OrderedDict()
    for name, tensor in sorted(sample.features.items()):
      features[name] = _placeholder(name, tensor)
      state.add_input(name, features[name])
    with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE), task_scope(MODE.EVAL, task):
      eval_fn(model, sample.rebuild(features))
    if not state.outputs:
      raise ValueError(
        'export: eval_fn of task %r sends nothing and declares no prediction; declare the outputs '
        'with model.add_prediction(name, tensor) (or send them)' % (task,)
      )
    inputs = _needed_inputs(state.inputs, state.outputs)
    signature = tf.saved_model.signature_def_utils.predict_signature_def(inputs, state.outputs)
    init = tf.group(tf.local_variables_initializer(), tf.tables_initializer(), name='serving_init')
    with tf.Session(graph=graph) as sess:
      sess.run(init)
      step = _restore(sess, checkpoint_path)
      target = os.path.join(export_dir, str(step))
      os.makedirs(export_dir, exist_ok=True)
      tmp = tempfile.mkdtemp(prefix='.export-', dir=export_dir)
      try:
        staging = os.path.join(tmp, 'model')
        builder = tf.saved_model.builder.SavedModelBuilder(staging)
        builder.add_meta_graph_and_variables(
          sess,
          [tf.saved_model.tag_constants.SERVING],
          signature_def_map={tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature},
          main_op=init,
          strip_default_attrs=True,
        )
        builder.save()
        if os.path.isdir(target):
          shutil.rmtree(target)  # the same checkpoint exported again
        os.rename(staging, target)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
  tf.logging.info(
    'export: task %r of checkpoint %s -> %s (inputs %s, outputs %s)',
    task,
    checkpoint_path,
    target,
    list(inputs),
    list(state.outputs),
  )
  return target
