"""Per-example gradients of a convolution's filter, vectorised.

`tf.vectorized_map` turns a `Conv2DBackpropFilter` whose input differs per example into a `tf.while_loop` over
the examples (TensorFlow's own converter says "Fix that!"). That loop dominated a DP step of a CNN: on TF 2,
whose plain step is fast, it made the DP step 8x the plain one. The filter's gradient is a product of the
input's patches and the output's gradient, summed over positions, which batches as one `matmul`:

  grad[n, kh, kw, c, f] = sum over (b, y, x) of patches[n, b, y, x, (kh, kw, c)] * out_grad[n, b, y, x, f]

`install()` puts that converter in front of TensorFlow's for the cases it covers (NHWC, VALID or SAME padding,
a filter size known when the graph is built) and leaves the rest to TensorFlow's.
"""

import importlib

import tensorflow.compat.v1 as tf
from tensorflow.python.framework import tensor_util

# The module, not the function of the same name that its package exports.
pfor = importlib.import_module('tensorflow.python.ops.parallel_for.pfor')

_OP = 'Conv2DBackpropFilter'
_original = None


def _batched_filter_grad(inputs, filter_sizes, grads, strides, padding, dilations):
  """`inputs` [n, b, h, w, c] and `grads` [n, b, h', w', f] -> the n filter gradients [n, kh, kw, c, f]."""
  kh, kw, c, f = filter_sizes
  shape = tf.shape(inputs)
  images = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
  patches = tf.extract_image_patches(images, ksizes=[1, kh, kw, 1], strides=strides, rates=dilations, padding=padding)
  n = shape[0]
  patches = tf.reshape(patches, tf.stack([n, -1, kh * kw * c]))
  grads = tf.reshape(grads, tf.stack([n, -1, f]))
  product = tf.matmul(patches, grads, transpose_a=True)
  return tf.reshape(product, tf.stack([n, kh, kw, c, f]))


def _convert(pfor_input):
  inputs, inputs_stacked, _ = pfor_input.input(0)
  filter_sizes = tensor_util.constant_value(pfor_input.unstacked_input(1))
  padding = pfor_input.get_attr('padding')
  padding = padding.decode() if isinstance(padding, bytes) else padding
  data_format = pfor_input.get_attr('data_format')
  data_format = data_format.decode() if isinstance(data_format, bytes) else data_format
  if not inputs_stacked or filter_sizes is None or padding not in ('VALID', 'SAME') or data_format != 'NHWC':
    return _original(pfor_input)
  pfor_input.stack_inputs(stack_indices=[2])
  grads = pfor_input.stacked_input(2)
  output = _batched_filter_grad(
    inputs,
    [int(d) for d in filter_sizes],
    grads,
    list(pfor_input.get_attr('strides')),
    padding,
    list(pfor_input.get_attr('dilations')),
  )
  return pfor.wrap(output, True)


def install():
  """Puts the batched converter in front of TensorFlow's (once per process)."""
  global _original
  registry = pfor._pfor_converter_registry  # pylint: disable=protected-access
  if _original is None and registry.get(_OP) is not None:
    _original = registry[_OP]
    registry[_OP] = _convert
