"""Differentially private versions of the TF 1.x optimizers.

A DP optimizer splits the batch into microbatches, computes the gradient of
each microbatch's loss (a *record*), and lets a `DPQuery` clip, sum and noise
the records; the result divided by the number of microbatches replaces the
gradient. The optimizers only call the `DPQuery` interface.

`compute_gradients` expects a *per-example* loss with a leading batch
dimension `[B]` or `[B, ...]`: example i's objective is the sum of row i (times
row i of `grad_loss` when given). Each microbatch's objectives are reduced
with `opt_config['REDUCE']`: `'mean'` (default), `'sum'` or a callable taking
the `[k]` objectives of a microbatch of k examples and returning a scalar.

Per-microbatch gradients are computed, in this order of preference:
0. with a query that clips records by their norm, layer by layer from one
   backward pass, never forming per-example gradients of dense layers
   (`efl.privacy.per_layer`; dense, bias and convolution weights only);
1. `tf.vectorized_map` over a copy of the forward pass run on each microbatch
   (`efl.privacy.per_example`); about the cost of two plain steps;
2. a `tf.while_loop` over the same copy, when the copy cannot be vectorised;
3. a `tf.while_loop` differentiating each microbatch's slice of the batch
   loss, when the forward pass cannot be copied. It backpropagates through
   the whole batch per microbatch: correct, but M times a backward pass.

`var_list` may instead hold plain tensors with a leading batch dimension (the
activations a federated peer sent): their gradient is noised for sending back.
Example i's gradient is taken as row i of d(sum of objectives)/d(tensor),
which assumes that examples do not interact.
"""

import numbers

import tensorflow.compat.v1 as tf

from efl import compat
from efl.privacy import conv_filter_grad
from efl.privacy import dp_query as dp_query_lib
from efl.privacy import gaussian_query
from efl.privacy import per_example
from efl.privacy import per_layer

_REDUCE_NAMES = ('mean', 'sum')
_METHODS = ('auto', 'layers', 'vectorized', 'loop', 'slices')


def _log_once(optimizer, key, msg, *args):
  if key not in optimizer._dp_logged:  # pylint: disable=protected-access
    optimizer._dp_logged.add(key)  # pylint: disable=protected-access
    tf.logging.info(msg, *args)


def _check_reduce(opt_config):
  """Returns REDUCE from `opt_config` without modifying it."""
  if opt_config is None:
    return 'mean'
  if not isinstance(opt_config, dict):
    raise TypeError('opt_config must be a dict or None. Found {!r}.'.format(type(opt_config).__name__))
  reduce = opt_config.get('REDUCE', 'mean')
  if callable(reduce) or reduce in _REDUCE_NAMES:
    return reduce
  raise ValueError(
    "opt_config['REDUCE'] must be 'mean', 'sum' or a callable "
    'mapping the [k] objectives of a microbatch to a scalar. '
    'Found {!r}.'.format(reduce)
  )


def _reduce_rows(objectives, reduce):
  """Reduces `[M, k]` objectives to `[M]`, one value per microbatch."""
  if reduce == 'mean':
    return tf.reduce_mean(objectives, axis=1)
  if reduce == 'sum':
    return tf.reduce_sum(objectives, axis=1)
  return tf.map_fn(lambda row: tf.reshape(reduce(row), []), objectives, dtype=objectives.dtype)


def _reduce_one(objectives, reduce):
  """Reduces the `[k]` objectives of one microbatch to a scalar."""
  if reduce == 'mean':
    return tf.reduce_mean(objectives)
  if reduce == 'sum':
    return tf.reduce_sum(objectives)
  return tf.reshape(reduce(objectives), [])


def example_objectives(loss, grad_loss=None):
  """Returns the `[B]` per-example objectives of a `[B, ...]` loss.

  Example i's objective is the sum of `loss[i] * grad_loss[i]` (or of
  `loss[i]` without `grad_loss`).
  """
  if grad_loss is not None:
    loss = loss * tf.cast(grad_loss, loss.dtype)
  if loss.shape.ndims == 1:
    return loss
  return tf.reduce_sum(tf.reshape(loss, [tf.shape(loss)[0], -1]), axis=1)


def _split(tensor, num_microbatches):
  """Reshapes `[B, ...]` to `[M, B/M, ...]`, keeping what is known statically."""
  rest = tf.shape(tensor)[1:]
  out = tf.reshape(tensor, tf.concat([[num_microbatches, -1], rest], 0))
  if tensor.shape.ndims is not None:
    m = tf.get_static_value(num_microbatches)
    b = tf.dimension_value(tensor.shape[0])
    k = b // m if (m is not None and b is not None) else None
    out.set_shape([m, k] + tensor.shape.as_list()[1:])
  return out


def _densify(grad, like):
  if grad is None:
    return tf.zeros_like(like)
  if isinstance(grad, tf.IndexedSlices):
    return tf.convert_to_tensor(grad)
  return grad


def _sums_scaled_records(query):
  """Whether `query`'s sample state is the plain sum of records scaled by `record_scales`."""
  base = dp_query_lib.SumAggregationDPQuery
  own = (
    'initial_sample_state',
    'accumulate_preprocessed_record',
    'accumulate_preprocessed_records',
    'merge_sample_states',
  )
  return (
    isinstance(query, base)
    and type(query).record_scales is not dp_query_lib.DPQuery.record_scales
    and all(getattr(type(query), name) is getattr(base, name) for name in own)
  )


def make_optimizer_class(cls):
  """Returns a DP version of the `tf.train.Optimizer` subclass `cls`.

  The returned class takes `(dp_sum_query, num_microbatches=None,
  unroll_microbatches=False, *args, **kwargs)`; `args` and `kwargs` go to
  `cls`.
  """
  if not (isinstance(cls, type) and issubclass(cls, tf.train.Optimizer)):
    raise TypeError('make_optimizer_class needs a subclass of tf.train.Optimizer. Found {!r}.'.format(cls))

  class DPOptimizerClass(cls):  # pylint: disable=missing-docstring
    def __init__(self, dp_sum_query, num_microbatches=None, unroll_microbatches=False, *args, **kwargs):
      super(DPOptimizerClass, self).__init__(*args, **kwargs)
      if not isinstance(dp_sum_query, dp_query_lib.DPQuery):
        raise TypeError('dp_sum_query must be an efl.privacy.DPQuery. Found {!r}.'.format(type(dp_sum_query).__name__))
      if num_microbatches is not None and (
        not isinstance(num_microbatches, numbers.Integral) or isinstance(num_microbatches, bool) or num_microbatches < 1
      ):
        raise ValueError('num_microbatches must be a positive int or None. Found {!r}.'.format(num_microbatches))
      self._dp_sum_query = dp_sum_query
      self._num_microbatches = None if num_microbatches is None else int(num_microbatches)
      self._unroll_microbatches = bool(unroll_microbatches)
      self._global_state = dp_sum_query.initial_global_state()
      self._dp_gradients_computed = False
      self._dp_logged = set()
      self._dp_method = 'auto'

    @property
    def dp_sum_query(self):
      """The `DPQuery` that clips and noises the records."""
      return self._dp_sum_query

    @property
    def per_microbatch_method(self):
      """How per-microbatch gradients of variables are computed.

      `'auto'` (default): `'layers'`, else `'vectorized'`, else `'loop'`,
      else `'slices'`. `'layers'`: sums of clipped per-microbatch gradients
      from one backward pass (dense, bias and convolution weights only).
      `'vectorized'`: `tf.vectorized_map` over a copy of the forward pass.
      `'loop'`: a loop over the same copy. `'slices'`: a loop
      differentiating each microbatch's slice of the batch loss (always
      possible, slowest). A method that cannot be used raises ValueError in
      `compute_gradients`. All give the same result up to float rounding.
      """
      return self._dp_method

    @per_microbatch_method.setter
    def per_microbatch_method(self, method):
      if method not in _METHODS:
        raise ValueError('per_microbatch_method must be one of {}. Found {!r}.'.format(_METHODS, method))
      self._dp_method = method

    @property
    def num_microbatches(self):
      """The requested number of microbatches (None: one per example)."""
      return self._num_microbatches

    def compute_gradients(
      self,
      loss,
      var_list=None,
      gate_gradients=tf.train.Optimizer.GATE_OP,
      aggregation_method=None,
      colocate_gradients_with_ops=False,
      grad_loss=None,
      gradient_tape=None,
      opt_config=None,
    ):
      """Returns DP gradients: per microbatch clipped, summed, noised, averaged.

      Args:
        loss: the per-example loss, `[B]` or `[B, ...]`.
        var_list: variables, or plain tensors with a leading batch dimension
          (not both). Defaults to the trainable variables.
        gate_gradients: ignored (kept for the `tf.train.Optimizer` signature).
        aggregation_method: ignored.
        colocate_gradients_with_ops: ignored.
        grad_loss: optional, the shape of `loss`: weights of the rows of
          `loss` (e.g. the gradient a peer sent back for `loss`).
        gradient_tape: must be None (graph mode only).
        opt_config: optional dict; `'REDUCE'` is read, other keys ignored.
          Never modified.

      Returns:
        A list of `(gradient, variable_or_tensor)`; the gradient is None for
        a variable the loss does not depend on.

      Raises:
        ValueError: for a scalar loss, an empty or mixed `var_list`, a bad
          REDUCE or a batch not matching a plain tensor.
      """
      del gate_gradients, aggregation_method, colocate_gradients_with_ops
      if gradient_tape is not None:
        raise ValueError('gradient_tape is not supported: efl builds graphs. Pass gradient_tape=None.')
      reduce = _check_reduce(opt_config)
      loss = tf.convert_to_tensor(loss)
      if loss.shape.ndims == 0:
        raise ValueError(
          'A DP optimizer needs the per-example loss, shape [batch_size] '
          'or [batch_size, ...]; found a scalar loss {}. Return the loss '
          'before reducing it.'.format(loss.name)
        )
      if grad_loss is not None:
        grad_loss = tf.convert_to_tensor(grad_loss)
      if var_list is None:
        var_list = tf.trainable_variables() + tf.get_collection(tf.GraphKeys.TRAINABLE_RESOURCE_VARIABLES)
      var_list = list(var_list)
      if not var_list:
        raise ValueError('var_list is empty: there is nothing to optimise.')
      is_var = [compat.is_variable(v) for v in var_list]
      if any(is_var) and not all(is_var):
        raise ValueError(
          'var_list must hold either variables or plain tensors, not both. '
          'Found {}. Call compute_gradients once for each kind.'.format([getattr(v, 'name', v) for v in var_list])
        )

      with tf.name_scope('dp_gradients'):
        batch_size = tf.shape(loss)[0]
        num_microbatches = self._dp_microbatch_count(loss, batch_size)
        params = self._dp_sum_query.derive_sample_params(self._global_state)
        if all(is_var):
          grads = self._dp_variable_gradients(loss, grad_loss, var_list, reduce, num_microbatches, params)
        else:
          grads = self._dp_tensor_gradients(loss, grad_loss, var_list, reduce, num_microbatches, params)
      self._dp_gradients_computed = True
      return list(zip(grads, var_list))

    def _dp_microbatch_count(self, loss, batch_size):
      """M: the requested count, or B when B is not a multiple of it."""
      requested = self._num_microbatches
      static_b = tf.dimension_value(loss.shape[0])
      if requested is None:
        return batch_size if static_b is None else tf.constant(static_b)
      if static_b is not None:
        if static_b % requested:
          _log_once(
            self,
            'fallback',
            'batch size %d is not a multiple of num_microbatches=%d: using one microbatch per example',
            static_b,
            requested,
          )
          return batch_size
        return tf.constant(requested)
      _log_once(
        self,
        'fallback',
        'batches whose size is not a multiple of num_microbatches=%d '
        '(e.g. a last partial batch) use one microbatch per example',
        requested,
      )
      return tf.where_v2(tf.equal(batch_size % requested, 0), tf.constant(requested), batch_size)

    def _dp_noised_mean(self, sample_state, num_microbatches, extra_deps=()):
      noised, _ = self._dp_sum_query.get_noised_result(sample_state, self._global_state)
      with tf.control_dependencies(list(extra_deps)):
        return [g / tf.cast(num_microbatches, g.dtype) for g in noised]

    def _dp_variable_gradients(self, loss, grad_loss, var_list, reduce, num_microbatches, params):
      """Records = gradients of the variables, one per microbatch."""
      sources = per_example.gradient_sources(var_list)
      forward, reason = per_example.PerExampleForward.build(loss, sources)
      if forward is None:
        _, connected = per_example.PerExampleForward.dependency(loss, sources)
      else:
        connected = forward.connected
      used = [v for v, c in zip(var_list, connected) if c]
      if not used:
        raise ValueError(
          'The loss {} depends on none of the variables {}.'.format(loss.name, [v.name for v in var_list])
        )
      template = [tf.zeros(v.shape, v.dtype.base_dtype) for v in used]

      def record_of(loss_rows, grad_rows):
        """The gradient of one microbatch's reduced objective."""
        objective = _reduce_one(example_objectives(loss_rows, grad_rows), reduce)
        grads = tf.gradients(objective, used)
        return [_densify(g, v) for g, v in zip(grads, template)]

      state, deps = None, ()
      if forward is not None:
        state = self._dp_state_by_layers(forward, loss, grad_loss, used, reduce, template, num_microbatches, params)
        if state is None:
          state, deps = self._dp_state_from_copies(
            forward, loss, grad_loss, record_of, template, num_microbatches, params
          )
      elif self._dp_method != 'auto':
        if self._dp_method != 'slices':
          raise ValueError(
            'per_microbatch_method={!r} needs a copy of the forward pass, which is impossible here: {}.'.format(
              self._dp_method, reason
            )
          )
      else:
        _log_once(
          self,
          'engine',
          'DP gradients: cannot copy the forward '
          'pass (%s); differentiating each microbatch of the batch '
          'loss, which costs one batch backward pass per microbatch',
          reason,
        )
      if state is None:
        objectives = _split(example_objectives(loss, grad_loss), num_microbatches)

        def slice_record(j):
          rows = tf.gather(objectives, j)
          grads = tf.gradients(_reduce_one(rows, reduce), used)
          return [_densify(g, v) for g, v in zip(grads, template)]

        state = self._dp_loop(slice_record, template, num_microbatches, params)
      noised = iter(self._dp_noised_mean(state, num_microbatches, deps))
      return [next(noised) if c else None for c in connected]

    def _dp_state_by_layers(self, forward, loss, grad_loss, used, reduce, template, num_microbatches, params):
      """The sample state from per-layer sums, or None where impossible."""
      query = self._dp_sum_query
      method = self._dp_method
      if method not in ('auto', 'layers'):
        return None
      why = None
      if not _sums_scaled_records(query):
        why = 'the query {} does not sum records scaled by their norm'.format(type(query).__name__)
      elif self._unroll_microbatches:
        why = 'unroll_microbatches=True asks for a loop'
      else:
        sources = per_example.gradient_sources(used)
        region, _ = per_example.PerExampleForward.dependency(loss, sources)
        layers, why = per_layer.plan(region, sources, forward.batch_inputs, loss)
      if why:
        if method == 'layers':
          raise ValueError("per_microbatch_method='layers' is impossible here: {}.".format(why))
        _log_once(self, 'layers', 'DP gradients: not layer by layer (%s)', why)
        return None
      objective = tf.reduce_sum(_reduce_rows(_split(example_objectives(loss, grad_loss), num_microbatches), reduce))
      sums = per_layer.scaled_sums(
        layers, objective, tf.shape(loss)[0], num_microbatches, lambda norms: query.record_scales(params, norms)
      )
      _log_once(self, 'engine', 'DP gradients: clipped per-example gradients summed layer by layer')
      return query.merge_sample_states(query.initial_sample_state(template), sums)

    def _dp_state_from_copies(self, forward, loss, grad_loss, record_of, template, num_microbatches, params):
      """Accumulates records computed on copies of the forward pass.

      Returns:
        `(sample_state, control_deps)`, or `(None, ())` when method 'auto'
        finds that the copy cannot run on one microbatch.
      """
      query = self._dp_sum_query
      method = self._dp_method
      if method == 'slices':
        return None, ()
      inputs = list(forward.batch_inputs)
      if grad_loss is not None:
        inputs.append(grad_loss)
      # The copy is only right if each input has one row per example.
      checks = [
        tf.debugging.assert_equal(
          tf.shape(t)[0],
          tf.shape(loss)[0],
          message=(
            'DP optimizer: {} was taken as a per-example input of the '
            'loss but its row count differs from the loss; set '
            "per_microbatch_method='slices'".format(t.name)
          ),
        )
        for t in inputs
      ]
      with tf.control_dependencies(checks):
        split = [_split(t, num_microbatches) for t in inputs]
      # Build the copy once outside any loop: a model that cannot run on one
      # microbatch (e.g. a static batch size baked into a reshape) fails
      # here, where falling back is still safe (a tf.while_loop that fails
      # while being built leaves the graph unusable).
      try:
        with tf.name_scope('trial_copy'):
          forward.clone([t[0] for t in split[: len(forward.batch_inputs)]])
      except (ValueError, TypeError) as e:
        if method != 'auto':
          raise ValueError(
            'per_microbatch_method={!r} is impossible here: '
            'the copied forward pass does not build on one '
            'microbatch: {}'.format(method, e)
          )
        _log_once(
          self,
          'engine',
          'DP gradients: the copied forward pass '
          'does not build on one microbatch (%s); differentiating '
          'each microbatch of the batch loss',
          str(e).split('\n')[0],
        )
        return None, ()

      def clone_record(slices):
        slices = list(slices)
        grad_rows = slices.pop() if grad_loss is not None else None
        return record_of(forward.clone(slices), grad_rows)

      if self._unroll_microbatches:
        method = 'loop'
      if method in ('auto', 'vectorized'):
        # The vectorizer needs known ranks: pass inputs of unknown rank (e.g.
        # received from a peer) as [M, -1] and restore their shape inside.
        shapes = [tf.shape(t)[1:] if t.shape.ndims is None else None for t in split]
        elems = [t if shape is None else tf.reshape(t, [num_microbatches, -1]) for t, shape in zip(split, shapes)]

        def vectorized_record(slices):
          slices = [t if shape is None else tf.reshape(t, shape) for t, shape in zip(slices, shapes)]
          return query.preprocess_record(params, clone_record(slices))

        try:
          conv_filter_grad.install()
          with tf.name_scope('vectorized'):
            records = tf.vectorized_map(vectorized_record, elems)
          _log_once(self, 'engine', 'DP gradients: vectorized per-microbatch forward and backward passes')
          return query.accumulate_preprocessed_records(
            query.initial_sample_state(template), records
          ), forward.control_inputs
        except (ValueError, TypeError, NotImplementedError) as e:
          if method == 'vectorized':
            raise ValueError("per_microbatch_method='vectorized' is impossible here: {}".format(e))
          _log_once(
            self, 'engine', 'DP gradients: cannot vectorize (%s); looping over microbatches', str(e).split('\n')[0]
          )
      state = self._dp_loop(
        lambda j: clone_record([tf.gather(t, j) for t in split]), template, num_microbatches, params
      )
      return state, forward.control_inputs

    def _dp_loop(self, record_fn, template, num_microbatches, params):
      """Accumulates `record_fn(j)` for every microbatch j, in a loop."""
      query = self._dp_sum_query
      state = query.initial_sample_state(template)
      if self._unroll_microbatches:
        m = tf.get_static_value(num_microbatches)
        if m is None:
          raise ValueError(
            'unroll_microbatches=True needs a number of microbatches known '
            'when the graph is built; the batch size is dynamic. Set a '
            'static batch size or unroll_microbatches=False.'
          )
        for j in range(int(m)):
          state = query.accumulate_record(params, state, record_fn(j))
        return state

      def body(j, state):
        return j + 1, query.accumulate_record(params, state, record_fn(j))

      _, state = tf.while_loop(lambda j, _: j < num_microbatches, body, [tf.constant(0), state])
      return state

    def _dp_tensor_gradients(self, loss, grad_loss, tensors, reduce, num_microbatches, params):
      """Records = rows of the plain tensors' gradient, one per microbatch."""
      query = self._dp_sum_query
      if not isinstance(query, dp_query_lib.SumAggregationDPQuery):
        raise TypeError(
          'Noising gradients of plain tensors needs a query that sums its '
          'records (an efl.privacy.SumAggregationDPQuery). Found {}.'.format(type(query).__name__)
        )
      tensors = [tf.convert_to_tensor(t) for t in tensors]
      batch_dim = tf.dimension_value(loss.shape[0])
      checks = []
      for t in tensors:
        if t.shape.ndims == 0:
          raise ValueError(
            'Plain tensor {} in var_list must have a leading batch dimension; it is a scalar.'.format(t.name)
          )
        lead = tf.dimension_value(t.shape[0]) if t.shape.ndims else None
        if lead is not None and batch_dim is not None and lead != batch_dim:
          raise ValueError(
            'Plain tensor {} in var_list must have one row per example: '
            'its leading dimension must equal the batch size of the loss '
            '({}). Found {}.'.format(t.name, batch_dim, lead)
          )
        checks.append(
          tf.debugging.assert_equal(
            tf.shape(t)[0], tf.shape(loss)[0], message='plain tensor {} must have one row per example'.format(t.name)
          )
        )
      objectives = _split(example_objectives(loss, grad_loss), num_microbatches)
      total = tf.reduce_sum(_reduce_rows(objectives, reduce))
      grads = [_densify(g, t) for g, t in zip(tf.gradients(total, tensors), tensors)]
      # Microbatch j's record is its rows of each gradient (zero elsewhere);
      # clipping scales a record, so clipping the rows alone is the same.
      with tf.control_dependencies(checks):
        records = [_split(g, num_microbatches) for g in grads]
      try:
        clipped = tf.vectorized_map(lambda r: query.preprocess_record(params, r), records)
      except (ValueError, TypeError, NotImplementedError):
        clipped = tf.map_fn(lambda r: query.preprocess_record(params, r), records, dtype=[r.dtype for r in records])
      # The records' rows are disjoint: their sum is the clipped rows in place.
      summed = [tf.reshape(c, tf.shape(t)) for c, t in zip(clipped, tensors)]
      state = query.merge_sample_states(query.initial_sample_state(tensors), summed)
      return self._dp_noised_mean(state, num_microbatches)

    def compute_plain_gradients(self, loss, tensors, grad_loss=None):
      """Returns the gradients of the summed objectives: no clip, no noise.

      For sending gradients back to a peer without noise
      (`BACKEND_MODE='unnoise'`).

      Args:
        loss: the loss, `[B, ...]` (or a scalar).
        tensors: tensors or variables to differentiate against.
        grad_loss: optional weights of the rows of `loss`, its shape.

      Returns:
        One gradient per entry of `tensors`; zeros where `loss` does not
        depend on it.
      """
      loss = tf.convert_to_tensor(loss)
      if grad_loss is not None:
        loss = loss * tf.cast(grad_loss, loss.dtype)
      tensors = list(tensors)
      grads = tf.gradients(tf.reduce_sum(loss), tensors)
      return [tf.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
      """Applies DP gradients; refuses if `compute_gradients` never ran.

      Raises:
        RuntimeError: if this optimizer's DP `compute_gradients` was not
          called first (the gradients would not be private).
      """
      if not self._dp_gradients_computed:
        raise RuntimeError(
          'apply_gradients was called on a DP optimizer before its '
          'compute_gradients: the gradients would not be clipped and '
          'noised. Compute them with this optimizer first (or use '
          'minimize).'
        )
      return super(DPOptimizerClass, self).apply_gradients(grads_and_vars, global_step=global_step, name=name)

  DPOptimizerClass.__name__ = 'DP' + cls.__name__
  DPOptimizerClass.__doc__ = 'Differentially private version of `tf.train.{}`; see `efl.privacy.dp_optimizer`.'.format(
    cls.__name__
  )
  return DPOptimizerClass


def make_gaussian_optimizer_class(cls):
  """Returns a DP version of `cls` that clips and adds Gaussian noise.

  The returned class takes `(l2_norm_clip=None, noise_multiplier=0.0,
  num_microbatches=None, ledger=None, unroll_microbatches=False, *args,
  **kwargs)`: the first release's positional order, with the defaults of
  EFLS's later releases, so that both `(1.5, 1.3, learning_rate=0.25)` and
  `(noise_multiplier=1.0, learning_rate=0.25)` work; `args` and `kwargs` go
  to `cls` (pass its arguments, e.g. `learning_rate`, by keyword).
  Each microbatch's gradient is clipped to global L2 norm `l2_norm_clip`,
  and N(0, (l2_norm_clip * noise_multiplier)^2) is added to their sum.

  `l2_norm_clip=None` keeps EFLS's unclipped mode: the summed gradient is
  multiplied by `1 + N(0, noise_multiplier^2)` per coordinate. That is not
  differential privacy (nothing bounds a microbatch's influence) and is
  logged as a warning. `ledger` is accepted for compatibility and ignored;
  compute epsilon with `efl.privacy.analysis`.
  """
  base = make_optimizer_class(cls)

  class DPGaussianOptimizerClass(base):  # pylint: disable=missing-docstring
    def __init__(
      self,
      l2_norm_clip=None,
      noise_multiplier=0.0,
      num_microbatches=None,
      ledger=None,
      unroll_microbatches=False,
      *args,
      **kwargs,
    ):
      if l2_norm_clip is None:
        query = gaussian_query.MultiplicativeGaussianSumQuery(noise_multiplier)
        tf.logging.warning(
          '%s without l2_norm_clip: gradients are not clipped and the '
          'noise is multiplicative. This is NOT differential privacy; '
          'set l2_norm_clip for a guarantee.',
          base.__name__,
        )
      else:
        gaussian_query._check_number(
          'noise_multiplier',
          noise_multiplier,  # pylint: disable=protected-access
          True,
        )
        query = gaussian_query.GaussianSumQuery(l2_norm_clip, float(l2_norm_clip) * float(noise_multiplier))
      if ledger is not None:
        tf.logging.warning('ledger is ignored; compute epsilon with efl.privacy.analysis.compute_dp_sgd_privacy.')
      super(DPGaussianOptimizerClass, self).__init__(query, num_microbatches, unroll_microbatches, *args, **kwargs)
      self._l2_norm_clip = None if l2_norm_clip is None else float(l2_norm_clip)
      self._noise_multiplier = float(noise_multiplier)

    @property
    def l2_norm_clip(self):
      """The clip norm of a microbatch's gradient (None: unclipped mode)."""
      return self._l2_norm_clip

    @property
    def noise_multiplier(self):
      """Noise stddev divided by the clip norm."""
      return self._noise_multiplier

    @property
    def ledger(self):
      """Always None: accounting is done by `efl.privacy.analysis`."""
      return None

  name = cls.__name__
  if name.endswith('Optimizer'):
    name = name[: -len('Optimizer')]
  DPGaussianOptimizerClass.__name__ = 'DP{}GaussianOptimizer'.format(name)
  DPGaussianOptimizerClass.__doc__ = (
    'Differentially private `tf.train.{}` with Gaussian noise; see '
    '`efl.privacy.dp_optimizer.make_gaussian_optimizer_class`.'.format(cls.__name__)
  )
  return DPGaussianOptimizerClass


DPAdagradOptimizer = make_optimizer_class(tf.train.AdagradOptimizer)
DPAdamOptimizer = make_optimizer_class(tf.train.AdamOptimizer)
DPGradientDescentOptimizer = make_optimizer_class(tf.train.GradientDescentOptimizer)

DPAdagradGaussianOptimizer = make_gaussian_optimizer_class(tf.train.AdagradOptimizer)
DPAdamGaussianOptimizer = make_gaussian_optimizer_class(tf.train.AdamOptimizer)
DPGradientDescentGaussianOptimizer = make_gaussian_optimizer_class(tf.train.GradientDescentOptimizer)
