"""Recomputing a batch loss for a slice of the batch, for per-example gradients.

A DP optimizer needs the gradient of each microbatch's loss. Differentiating a
row of a loss that was built on the whole batch backpropagates through the
whole batch, so M microbatches cost M batch backward passes. Instead,
`PerExampleForward` copies the ops between the trainable variables and the
loss, and lets the copy run on a slice of the batch: the per-microbatch
forward and backward passes then cost about one batch pass in total, and can
be vectorised with `tf.vectorized_map`.

The copy is exact when examples do not interact in the forward pass (no batch
statistics such as batch normalisation in training mode); random ops are
re-sampled in the copy. Graphs it cannot copy safely (control flow, stateful
ops other than variable reads and random ops, segment sums of sparse
embedding lookups) make `PerExampleForward.build` return `(None, reason)`, and
the optimizer falls back to differentiating slices of the batch loss.
"""

import tensorflow.compat.v1 as tf
from tensorflow.python.framework import ops
from tensorflow.python.ops import gen_nn_ops
from tensorflow.python.ops import resource_variable_ops

_CONTROL_FLOW_OPS = frozenset(
  [
    'Switch',
    'RefSwitch',
    'Merge',
    'RefMerge',
    'Enter',
    'RefEnter',
    'Exit',
    'RefExit',
    'NextIteration',
    'RefNextIteration',
    'LoopCond',
    'If',
    'StatelessIf',
    'While',
    'StatelessWhile',
    'PartitionedCall',
    'StatefulPartitionedCall',
  ]
)
# Stateful ops that are still per-example: variable reads and random draws.
_STATEFUL_ALLOWED = frozenset(
  ['ReadVariableOp', 'RandomUniform', 'RandomUniformInt', 'RandomStandardNormal', 'TruncatedNormal']
)
# Ops that combine rows by segment ids (sparse embedding lookups): their
# inputs do not have one row per example, so slicing them would be wrong.
_SEGMENT_OPS = frozenset(
  [
    'SparseSegmentSum',
    'SparseSegmentMean',
    'SparseSegmentSqrtN',
    'SparseSegmentSumWithNumSegments',
    'SparseSegmentMeanWithNumSegments',
    'SparseSegmentSqrtNWithNumSegments',
    'SegmentSum',
    'SegmentMean',
    'UnsortedSegmentSum',
    'UnsortedSegmentMean',
    'SparseTensorDenseMatMul',
    'SparseFillEmptyRows',
    'SparseReshape',
    'Unique',
  ]
)
# Ops whose outputs never depend on the batch contents.
_CONSTANT_OPS = frozenset(['Const', 'Shape', 'ShapeN', 'Size', 'Rank'])
# Outputs of these ops are (reads of) variables: never per-example data.
_VARIABLE_OPS = frozenset(['VariableV2', 'Variable', 'VarHandleOp', 'ReadVariableOp'])
# (op type, input index) pairs whose input is a shape, an axis or a size,
# never per-example data, even when its length happens to equal the batch.
_SHAPE_SLOTS = frozenset(
  [
    ('Reshape', 1),
    ('Transpose', 1),
    ('Tile', 1),
    ('ExpandDims', 1),
    ('Fill', 0),
    ('BroadcastTo', 1),
    ('Slice', 1),
    ('Slice', 2),
    ('StridedSlice', 1),
    ('StridedSlice', 2),
    ('StridedSlice', 3),
    ('Pad', 1),
    ('PadV2', 1),
    ('MirrorPad', 1),
    ('OneHot', 1),
    ('GatherV2', 2),
    ('Split', 0),
    ('SplitV', 1),
    ('SplitV', 2),
    ('ArgMax', 1),
    ('ArgMin', 1),
    ('Cumsum', 1),
    ('Cumprod', 1),
    ('Conv2DBackpropInput', 0),
    ('Conv2DBackpropFilter', 1),
    ('ResizeBilinear', 1),
    ('ResizeNearestNeighbor', 1),
  ]
  + [(op, 1) for op in ('Sum', 'Mean', 'Max', 'Min', 'Prod', 'All', 'Any', 'EuclideanNorm')]
)
# Attributes that tie an op to the original's placement.
_DROPPED_ATTRS = frozenset(['_class'])


def gradient_sources(var_list):
  """Returns the tensors `tf.gradients` differentiates against for `var_list`."""
  sources = []
  for v in var_list:
    if resource_variable_ops.is_resource_variable(v):
      sources.append(v.handle)
    else:
      sources.append(ops.internal_convert_to_tensor(v, as_ref=True))
  return sources


def _data_inputs(op):
  return list(op.inputs)


class PerExampleForward(object):
  """The part of a graph between some variables and a batch loss, copyable.

  Attributes:
    batch_inputs: the tensors outside the copied part that carry one row per
      example; `clone` needs a slice of each.
    connected: one bool per source: whether the loss depends on it.
    control_inputs: control inputs of the copied ops that come from outside;
      a result built from copies should depend on them.
  """

  def __init__(self, loss, region_ops, batch_inputs, connected, control_inputs):
    self._loss = loss
    self._region_ops = region_ops
    self.batch_inputs = batch_inputs
    self.connected = connected
    self.control_inputs = control_inputs

  @staticmethod
  def dependency(loss, sources):
    """Returns `(region_ops, connected)` for `loss` and the `sources`.

    `region_ops` are the ops on a path from a source to `loss`, in
    topological order; `connected[i]` tells whether source i reaches `loss`.
    """
    source_set = set(sources)
    depends = {}  # op -> whether it depends on a source
    order = []
    stack = [(loss.op, False)]
    while stack:
      op, expanded = stack.pop()
      if op in depends and not expanded:
        continue
      if expanded:
        depends[op] = any(t in source_set or depends.get(t.op, False) for t in _data_inputs(op))
        if depends[op]:
          order.append(op)
        continue
      depends[op] = False  # placeholder while in progress (graphs are DAGs)
      stack.append((op, True))
      for t in _data_inputs(op):
        if t.op not in depends and t not in source_set:
          stack.append((t.op, False))
    region = set(order)
    connected = []
    for s in sources:
      connected.append(any(c in region for c in s.consumers()))
    return order, connected

  @classmethod
  def build(cls, loss, sources):
    """Analyses the graph; returns a `PerExampleForward`, or `(None, reason)`.

    Args:
      loss: the per-example loss, with a leading batch dimension.
      sources: the tensors to differentiate against (`gradient_sources`).

    Returns:
      `(forward, None)` when the part can be copied, else `(None, reason)`
      with `reason` a string for the log.
    """
    region_ops, connected = cls.dependency(loss, sources)
    region = set(region_ops)
    source_set = set(sources)
    for op in region_ops:
      if op.type in _CONTROL_FLOW_OPS or op._control_flow_context is not None:  # pylint: disable=protected-access
        return None, 'op {} ({}) uses control flow'.format(op.name, op.type)
      if op.type in _SEGMENT_OPS:
        return None, 'op {} ({}) mixes rows by segment'.format(op.name, op.type)
      if op.op_def.is_stateful and op.type not in _STATEFUL_ALLOWED:
        return None, 'op {} ({}) is stateful'.format(op.name, op.type)
      if any(o.dtype._is_ref_dtype for o in op.outputs):  # pylint: disable=protected-access
        return None, 'op {} ({}) outputs a reference'.format(op.name, op.type)
    if loss.op not in region:
      return None, 'the loss does not depend on the variables'

    batch_dim = tf.dimension_value(loss.shape[0]) if loss.shape.ndims else None
    constant_memo = {}
    batch_inputs, seen, control_inputs = [], set(), []
    for op in region_ops:
      for c in op.control_inputs:
        if c not in region and c not in control_inputs:
          control_inputs.append(c)
      for t in _data_inputs(op):
        if t in source_set or t.op in region or t in seen:
          continue
        seen.add(t)
        if cls._is_per_example(t, batch_dim, constant_memo, region):
          batch_inputs.append(t)
    if not batch_inputs:
      return None, 'no input of the loss has one row per example'
    return cls(loss, region_ops, batch_inputs, connected, control_inputs), None

  @staticmethod
  def _is_constant(tensor, memo):
    """Whether `tensor` is computed from constants and shapes only."""
    stack = [(tensor.op, False)]
    while stack:
      op, expanded = stack.pop()
      if op in memo and not expanded:
        continue
      if expanded:
        memo[op] = op.type in _CONSTANT_OPS or (
          bool(op.inputs) and not op.op_def.is_stateful and all(memo.get(t.op, False) for t in op.inputs)
        )
        continue
      if op.type in _CONSTANT_OPS:
        memo[op] = True
        continue
      if not op.inputs or op.op_def.is_stateful or op.type == 'PlaceholderWithDefault':  # feedable: data
        memo[op] = False
        continue
      memo[op] = False
      stack.append((op, True))
      for t in op.inputs:
        if t.op not in memo:
          stack.append((t.op, False))
    return memo[tensor.op]

  @classmethod
  def _is_per_example(cls, tensor, batch_dim, memo, region):
    """Whether a tensor entering the copied part has one row per example.

    Non-constant inputs are per-example unless their static leading dimension
    differs from the batch's. Constants (and values computed from constants
    and shapes) are per-example only if their leading dimension is the static
    batch size and they are not used as a shape, axis or size.
    """
    if tensor.dtype._is_ref_dtype or tensor.op.type in _VARIABLE_OPS:  # pylint: disable=protected-access
      return False
    if tensor.op.type == 'Identity' and tensor.op.inputs and (tensor.op.inputs[0].dtype._is_ref_dtype):  # pylint: disable=protected-access
      return False  # the read of a reference variable not being trained
    if tensor.shape.ndims == 0:
      return False
    lead = tf.dimension_value(tensor.shape[0]) if tensor.shape.ndims else None
    if cls._is_constant(tensor, memo):
      if batch_dim is None or lead != batch_dim:
        return False
      for consumer in tensor.consumers():
        if consumer in region:
          for index, t in enumerate(consumer.inputs):
            if t is tensor and (consumer.type, index) not in _SHAPE_SLOTS:
              return True
      return False
    if lead is not None and (batch_dim is None or lead != batch_dim):
      return False
    return True

  def clone(self, batch_slices):
    """Builds a copy of the loss on slices of the batch.

    Args:
      batch_slices: one tensor per `batch_inputs` entry, holding the rows of
        one microbatch.

    Returns:
      The copied loss, one row per example of the slice.
    """
    graph = tf.get_default_graph()
    mapping = dict(zip(self.batch_inputs, batch_slices))
    for op in self._region_ops:
      inputs = [mapping.get(t, t) for t in op.inputs]
      if op.type == 'SparseSoftmaxCrossEntropyWithLogits':
        outputs = _dense_softmax_cross_entropy(*inputs)
      else:
        attrs = {k: v for k, v in op.node_def.attr.items() if k not in _DROPPED_ATTRS}
        new_op = graph.create_op(
          op.type, inputs, [o.dtype for o in op.outputs], name=op.name.rsplit('/', 1)[-1], attrs=attrs, op_def=op.op_def
        )
        outputs = new_op.outputs
      for old, new in zip(op.outputs, outputs):
        mapping[old] = new
    loss = mapping[self._loss]
    rows = [tf.dimension_value(s.shape[0]) if s.shape.ndims else None for s in batch_slices]
    got = tf.dimension_value(loss.shape[0]) if loss.shape.ndims else None
    for want in rows:
      if want is not None and got is not None and want != got:
        # E.g. a static batch size baked into a reshape by the model.
        raise ValueError('the copied loss has {} rows for a microbatch of {} examples'.format(got, want))
    return loss


def _dense_softmax_cross_entropy(logits, labels):
  """SparseSoftmaxCrossEntropyWithLogits written with ops `vectorized_map` knows.

  TF 1.15's vectorizer has no converter for the sparse op; the dense op with
  one-hot labels computes the same loss and backprop for valid labels.
  """
  if labels.shape.ndims is None and logits.shape.ndims is not None:
    # The sparse op needs labels of the logits' rank minus one; say so, so
    # that the vectorizer knows the rank.
    labels = tf.reshape(labels, tf.shape(logits)[:-1])
  depth = tf.shape(logits)[-1]
  one_hot = tf.one_hot(labels, depth, dtype=logits.dtype)
  loss, backprop = gen_nn_ops.softmax_cross_entropy_with_logits(logits, one_hot)
  return [loss, backprop]
