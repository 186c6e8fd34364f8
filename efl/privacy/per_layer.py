"""Clipped sums of per-example gradients, layer by layer, from one backward pass.

When every trained variable is the weight of one layer op whose per-example gradient has a closed form, the
per-example gradients need not be formed one by one. With `g_i = dL_i/dz_i`, example i's gradient of the
layer's output `z` (a microbatch's gradient is the sum over its examples):
- `z = a W` (MatMul): the gradient is the outer product `a_i^T g_i`, of squared norm `|a_i|^2 |g_i|^2` (for
  a microbatch, a sum over pairs of its examples), and the sum of the gradients scaled by `c_i` is
  `a^T diag(c) g`: nothing of size batch x weight is formed;
- `z = BiasAdd(x, b)` or `x + b` (b a vector): `g_i` summed over all but the last axis;
- `z = Conv2D(x, F)`: example i's input patches times `g_i`, summed over positions (one batched matmul; a
  filter is small).

One backward pass from the summed objectives to the layers' outputs gives every `g` (example i's objective
only depends on row i when examples do not interact, the assumption of every per-example method here). The
records' global norms then give the query's scale per record, and the scaled sums are the sample state of a
sum query. `plan` says which graphs qualify; the others use the optimizer's general methods.
"""

import collections

import tensorflow.compat.v1 as tf

from efl import compat
from efl.privacy import conv_filter_grad

# Ops that pass a variable's value on unchanged, between the variable and the layer op reading it.
_READS = frozenset(['Identity', 'ReadVariableOp'])

_Layer = collections.namedtuple('_Layer', ['kind', 'op', 'slot'])  # the weight is input `slot` of `op`


def _layer_op(source, region):
  """The one op of `region` that takes `source`'s value as its weight (input 1), or a reason it has none."""
  frontier, found = [source], []
  while frontier:
    tensor = frontier.pop()
    for consumer in tensor.consumers():
      if consumer not in region:
        continue
      if consumer.type in _READS:
        frontier.extend(consumer.outputs)
      else:
        found.append((consumer, [i for i, t in enumerate(consumer.inputs) if t is tensor]))
  if len(found) != 1:
    return None, 'variable {} is read by {} ops of the loss'.format(source.name, len(found))
  op, slots = found[0]
  if len(slots) != 1:
    return None, 'op {} ({}) takes variable {} twice'.format(op.name, op.type, source.name)
  return (op, slots[0]), None


def _attr(op, name):
  value = op.get_attr(name)
  return value.decode() if isinstance(value, bytes) else value


def _kind(op, slot):
  """'dense', 'bias' or 'conv' when input `slot` of `op` is a weight this module handles, else None."""
  if (
    op.type == 'MatMul'
    and slot == 1
    and not op.get_attr('transpose_a')
    and not op.get_attr('transpose_b')
    and (op.inputs[0].shape.ndims == 2)
  ):
    return 'dense'
  if op.type == 'BiasAdd' and slot == 1 and _attr(op, 'data_format') == 'NHWC':
    return 'bias'
  if (
    op.type in ('Add', 'AddV2')
    and op.inputs[slot].shape.ndims == 1
    and (op.inputs[1 - slot].shape.ndims or 0) >= 2
    and op.outputs[0].shape.ndims == op.inputs[1 - slot].shape.ndims
  ):
    return 'bias'  # x + b, b broadcast along the last axis
  if (
    op.type == 'Conv2D'
    and slot == 1
    and _attr(op, 'data_format') == 'NHWC'
    and (_attr(op, 'padding') in ('VALID', 'SAME'))
    and op.inputs[1].shape.is_fully_defined()
  ):
    return 'conv'
  return None


# Ops whose output row i only depends on row i of their inputs that have rows (the others broadcast).
_ROWWISE = frozenset(
  [
    'Identity',
    'Cast',
    'Neg',
    'Abs',
    'Square',
    'Sqrt',
    'Rsqrt',
    'Exp',
    'Log',
    'Log1p',
    'Relu',
    'Relu6',
    'Elu',
    'Selu',
    'LeakyRelu',
    'Sigmoid',
    'Tanh',
    'Softplus',
    'Softsign',
    'Add',
    'AddV2',
    'Sub',
    'Mul',
    'RealDiv',
    'Maximum',
    'Minimum',
    'SquaredDifference',
    'BiasAdd',
    'MatMul',
    'Conv2D',
    'DepthwiseConv2dNative',
    'MaxPool',
    'AvgPool',
    'Softmax',
    'LogSoftmax',
    'SoftmaxCrossEntropyWithLogits',
    'SparseSoftmaxCrossEntropyWithLogits',
    'SigmoidCrossEntropyWithLogits',
    'OneHot',
    'Select',
    'SelectV2',
  ]
)
# Ops that keep rows when their axis argument (input 1; for ConcatV2 the last) leaves axis 0 alone.
_AXIS_OPS = frozenset(['Sum', 'Mean', 'Max', 'Min', 'Prod', 'ExpandDims', 'ConcatV2'])


def _const_value(tensor):
  return tf.get_static_value(tensor)


def _keeps_rows(op, rows):
  """Whether `op`'s first output has one row per example, given the set `rows` of tensors that have."""
  data = list(op.inputs)
  if op.type in _AXIS_OPS:
    axis_input = data[-1] if op.type == 'ConcatV2' else data[1]
    axes = _const_value(axis_input)
    data = data[:-1] if op.type == 'ConcatV2' else data[:1]
    # Axes count in the input's rank for reductions, in the output's for ExpandDims and ConcatV2.
    rank = (op.inputs[0] if op.type in ('Sum', 'Mean', 'Max', 'Min', 'Prod') else op.outputs[0]).shape.ndims
    if axes is None or rank is None or any(int(a) % max(rank, 1) == 0 for a in list(axes.reshape([-1]))):
      return False
    if op.type == 'ConcatV2':
      return all(t in rows for t in data)
    return data[0] in rows
  if op.type == 'Reshape':
    x, out = op.inputs[0], op.outputs[0]
    if x not in rows or out.shape.ndims is None or not out.shape.ndims:
      return False
    # [-1, ...] that keeps each row's size, or a first dimension read from x's shape.
    if (
      x.shape[1:].is_fully_defined()
      and out.shape[1:].is_fully_defined()
      and (x.shape[1:].num_elements() == out.shape[1:].num_elements())
    ):
      return True
    first = op.inputs[1].op
    if first.type == 'Pack' and first.inputs[0].op.type == 'StridedSlice':
      sliced = first.inputs[0].op
      return (
        sliced.inputs[0].op.type == 'Shape'
        and sliced.inputs[0].op.inputs[0] is x
        and _const_value(sliced.inputs[1]) is not None
        and list(_const_value(sliced.inputs[1])) == [0]
      )
    return False
  if op.type not in _ROWWISE:
    return False
  if op.type in ('MatMul', 'Conv2D', 'DepthwiseConv2dNative'):
    return data[0] in rows and not (op.type == 'MatMul' and op.get_attr('transpose_a'))
  out_rank = op.outputs[0].shape.ndims
  if out_rank is None or not any(t in rows for t in data):
    return False
  # An input without rows must broadcast along axis 0: a lower rank, or a first dimension of 1.
  return all(
    t in rows or (t.shape.ndims is not None and (t.shape.ndims < out_rank or tf.dimension_value(t.shape[0]) == 1))
    for t in data
  )


def _rows_tensors(region_ops, batch_inputs):
  """The tensors of the region with one row per example (a conservative subset)."""
  rows = set(batch_inputs)
  for op in region_ops:
    if _keeps_rows(op, rows):
      rows.add(op.outputs[0])
      if op.type in ('SoftmaxCrossEntropyWithLogits', 'SparseSoftmaxCrossEntropyWithLogits'):
        rows.update(op.outputs)
  return rows


def plan(region_ops, sources, batch_inputs, loss):
  """The layer of each source, or why there is none.

  Args:
    region_ops: the ops between the sources and the loss (`PerExampleForward.dependency`).
    sources: the tensors differentiated against (`per_example.gradient_sources`), each reaching the loss.
    batch_inputs: the tensors entering the region with one row per example (`PerExampleForward`).
    loss: the per-example loss.

  Returns:
    `(layers, None)`, one layer per source, or `(None, reason)`.
  """
  region = set(region_ops)
  rows = _rows_tensors(region_ops, batch_inputs)
  if loss not in rows:
    return None, 'cannot tell that row i of the loss depends on example i only'
  layers = []
  for source in sources:
    found, reason = _layer_op(source, region)
    if found is None:
      return None, reason
    op, slot = found
    kind = _kind(op, slot)
    if kind is None:
      return None, 'op {} ({}) has no per-example gradient formula here'.format(op.name, op.type)
    if op.outputs[0] not in rows:
      return None, 'cannot tell that the output of op {} ({}) has one row per example'.format(op.name, op.type)
    layers.append(_Layer(kind, op, slot))
  return layers, None


def _rows(tensor):
  return tf.shape(tensor)[0]


def _by_microbatch(tensor, num_microbatches):
  """`[B, ...]` as `[M, B/M, ...]`."""
  return tf.reshape(tensor, tf.concat([[num_microbatches, -1], tf.shape(tensor)[1:]], 0))


def _microbatch_grads(layer, g, num_microbatches):
  """Each microbatch's gradient `[M, ...]` as `(None, gradient)` (bias, conv).

  For a dense layer, the factors `([M, k, n], [M, k, m])` of each microbatch's sum of k outer products.
  """
  op = layer.op
  if layer.kind == 'dense':
    return _by_microbatch(op.inputs[0], num_microbatches), _by_microbatch(g, num_microbatches)
  if layer.kind == 'bias':
    rank = g.shape.ndims
    per_example = g if rank == 2 else tf.reduce_sum(g, axis=list(range(1, rank - 1)))
    return None, tf.reduce_sum(_by_microbatch(per_example, num_microbatches), 1)
  kh, kw, channels, filters = op.inputs[1].shape.as_list()
  strides, padding, dilations = list(op.get_attr('strides')), _attr(op, 'padding'), list(op.get_attr('dilations'))
  if channels == 1 and dilations == [1, 1, 1, 1] and compat.TF_MAJOR >= 2:
    # One input channel: the examples as the channels of one image make each example's filter gradient a
    # depthwise filter gradient. TF 2's kernel for it is several times faster than patches and a matmul;
    # TF 1.15's is several times slower (the seed's CNN: DP step 7 ms against 12, and 85 ms against 22).
    x = op.inputs[0]
    batch = tf.shape(x)[0]
    images = tf.expand_dims(tf.transpose(x[..., 0], [1, 2, 0]), 0)  # [1, h, w, B]
    grads = tf.expand_dims(tf.transpose(g, [1, 2, 0, 3]), 0)  # [1, h', w', B, f]
    grads = tf.reshape(grads, tf.concat([tf.shape(grads)[:3], [-1]], 0))  # [1, h', w', B * f]
    per_example = tf.nn.depthwise_conv2d_native_backprop_filter(
      images, tf.stack([kh, kw, batch, filters]), grads, strides, padding
    )  # [kh, kw, B, f]
    per_example = tf.transpose(per_example, [2, 0, 1, 3])[:, :, :, None, :]
    return None, tf.reduce_sum(_by_microbatch(per_example, num_microbatches), 1)
  grads = conv_filter_grad._batched_filter_grad(  # pylint: disable=protected-access
    _by_microbatch(op.inputs[0], num_microbatches),
    [kh, kw, channels, filters],
    _by_microbatch(g, num_microbatches),
    strides,
    padding,
    dilations,
  )
  return None, grads


def scaled_sums(layers, objective, batch_size, num_microbatches, scales_of):
  """The gradients of each microbatch, per layer, scaled per microbatch and summed.

  Args:
    layers: from `plan`.
    objective: the scalar whose gradient is the sum of the microbatches' gradients (their reduced
      objectives, summed).
    batch_size: scalar, B.
    num_microbatches: scalar, M (dividing B): microbatch m holds examples m * B/M to (m + 1) * B/M - 1.
    scales_of: maps the `[M]` global L2 norms of the microbatches' gradients (all layers together) to the
      `[M]` factors each microbatch's gradient is scaled by.

  Returns:
    One tensor per layer, shaped like its weight. Evaluating them asserts that each layer's output has one
    row per example (a model that folds examples into rows, e.g. `[B * T, k]`, fails that: it needs
    per_microbatch_method 'vectorized').
  """
  outputs = [layer.op.outputs[0] for layer in layers]
  grads = tf.gradients(objective, outputs)
  checks, parts, squares = [], [], []
  for layer, z, g in zip(layers, outputs, grads):
    if g is None:
      g = tf.zeros_like(z)
    checks.append(
      tf.debugging.assert_equal(
        _rows(z),
        batch_size,
        message=(
          'DP optimizer: the output of {} has not one row per example of the loss; set '
          "per_microbatch_method='vectorized'".format(layer.op.name)
        ),
      )
    )
    a, b = _microbatch_grads(layer, g, num_microbatches)
    if a is not None:
      # |sum_i a_i^T b_i|^2 = sum_ij (a_i . a_j)(b_i . b_j) over the microbatch's examples i, j.
      grams = tf.matmul(a, a, transpose_b=True) * tf.matmul(b, b, transpose_b=True)
      squares.append(tf.reduce_sum(grams, [1, 2]))
    else:
      squares.append(tf.reduce_sum(tf.square(tf.reshape(b, [num_microbatches, -1])), 1))
    parts.append((a, b))
  with tf.control_dependencies(checks):
    norms = tf.sqrt(tf.add_n([tf.cast(q, tf.float32) for q in squares]))
  scales = scales_of(norms)
  sums = []
  for layer, (a, b) in zip(layers, parts):
    c = tf.cast(scales, b.dtype)
    if a is not None:
      total = tf.matmul(
        tf.reshape(a, [batch_size, -1]), tf.reshape(b * c[:, None, None], [batch_size, -1]), transpose_a=True
      )
    else:
      total = tf.tensordot(c, b, [[0], [0]])
    sums.append(tf.reshape(total, layer.op.inputs[layer.slot].shape))
  return sums
