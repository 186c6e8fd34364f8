"""`DataIO`: batches of parsed tf.Examples from a directory of TFRecord files, resumable exactly.

Pipeline (all tf.data, the Python part runs once per file):

    block generator -> per block: TFRecordDataset.skip(start) zipped with position codes -> batch
    -> parse_example (+ the batch's end position) -> prefetch

**Exact resume.** Every record travels with its position (block number, record index). `read()` returns
features that carry a control dependency on assigning the position right after the batch's last record to the
variable `<name>/reader_state` (a string "block:index:file"). Whatever `session.run` consumes a batch therefore
also records its position, and a checkpoint taken after that run holds it, however far `prefetch` has read
ahead. The hook (`get_hook()`) starts the iterator in `after_create_session`, from the restored position when
the variable is not empty. `save_interval` is accepted for compatibility only: the state is always current.

**Errors.** Bad input is reported by name before training when it can be: a missing directory, no files, and a
first record that lacks a declared feature or stores it with another dtype or length (`SchemaError`), or a
first file that cannot be read (`CorruptFileError`). Later records are named in the parser's own messages
("Name: <file>:<record index>, Key: <feature> ..."); `explain_error` turns TF's errors raised while training
(a parse error, or `DataLossError` of a truncated file) into a message naming the reader, file and record.
"""

import collections
import re
import threading
import weakref

import numpy as np
import tensorflow.compat.v1 as tf

from efl import compat
from efl.data import files as files_lib
from efl.data import schema as schema_lib
from efl.data.federal_dataset import INDEX_BITS, MAX_BLOCK, block_batches, plain_tf, rebatch

_log = tf.get_logger()

# Graph collection holding every reader built in a graph (unique names, error explanation).
READERS_COLLECTION = 'efl_data_readers'

# Batches parsed in parallel when prefetching (tf.data keeps their order).
_PARSE_THREADS = 2
# What tf.data puts before the message of an error raised in a function it runs: TF 1.15 a tag, TF 2 a sentence.
_FUNCTION_TAG = re.compile(
  r'\{\{function_node [^}]*\}\}|'
  r'Error in user-defined function passed to \S+ transformation with iterator: \S+: '
)
_VALID_NAME = re.compile(r'^[A-Za-z0-9.][A-Za-z0-9_.\-]*$')
_BLOCK_TYPES = (tf.int64, tf.string, tf.string, tf.int64)  # block number, file, compression, start index
_BLOCK_SHAPES = (tf.TensorShape([]),) * 4
# Blocks remembered for naming the file of a read error: the pipeline reads ahead, so by the time an error
# reaches the training step the block generator may be several files further.
_RECENT_BLOCKS = 64
_RECORD_OFFSET = re.compile(r'(?:corrupted|truncated) record at (\d+)')


def _unique_scope(graph, name):
  """`name`, or `name_<k>` for the k-th other reader of that name in `graph` (both parties build alike)."""
  used = {reader.scope for reader in graph.get_collection(READERS_COLLECTION)}
  scope, k = name, 0
  while scope in used:
    k += 1
    scope = '{}_{}'.format(name, k)
  return scope


def _check_positive_int(arg, value, allow_zero=False, allow_none=False):
  if value is None and allow_none:
    return
  low = 0 if allow_zero else 1
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
    raise ValueError('{} must be an int >= {}{}. Found {!r}.'.format(arg, low, ' or None' if allow_none else '', value))


Position = collections.namedtuple('Position', ['block', 'index', 'file'])


def parse_position(state):
  """Parses a `reader_state` value ("block:index:file"); None for the empty (never written) state.

  Raises:
      ValueError: the value is not a reader state.
  """
  if isinstance(state, bytes):
    state = state.decode('utf-8', 'replace')
  if not state:
    return None
  parts = state.split(':', 2)
  try:
    return Position(int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else '')
  except (ValueError, IndexError):
    raise ValueError('A reader state is "block:index:file". Found {!r}.'.format(state))


class DataIO(object):
  """Reads batches of tf.Example records from the TFRecord files under a directory.

  Declare the features with `fixedlen_feature`/`varlen_feature`, optionally restrict the files with
  `add_file_node(s)`, then call `read()` and add `get_hook()` to the session's hooks.

  Args:
      data_base_dir: `str`, the directory holding the files (searched recursively; names starting with '.' or
          '_' are skipped).
      batch_size: `int`, records per batch; batches run across file boundaries.
      worker_idx: `int`, this worker's index: it reads the files i with `i % worker_num == worker_idx`.
      worker_num: `int`, the number of workers sharing the files.
      prefetch: `int`, batches to prepare ahead of the training step (0 disables).
      num_epochs: `int` or None (forever), passes over the file list.
      save_interval: accepted for compatibility; the position is recorded at every step (see module doc).
      drop_remainder: `bool`, whether to drop the last, smaller batch.
      name: `str`, the reader's name; a second reader of the same name in one graph becomes `name_1`, ....
      compression_type: None (from the extension: .gz -> GZIP, .zlib -> ZLIB), '', 'ZLIB' or 'GZIP'.

  Raises:
      ValueError: an argument is out of range.
  """

  def __init__(
    self,
    data_base_dir,
    batch_size,
    worker_idx=0,
    worker_num=1,
    prefetch=1,
    num_epochs=1,
    save_interval=100,
    drop_remainder=False,
    name='dataio',
    compression_type=None,
  ):
    if not isinstance(data_base_dir, str) or not data_base_dir:
      raise ValueError('data_base_dir must be a non-empty path string. Found {!r}.'.format(data_base_dir))
    _check_positive_int('batch_size', batch_size)
    _check_positive_int('worker_num', worker_num)
    _check_positive_int('worker_idx', worker_idx, allow_zero=True)
    if worker_idx >= worker_num:
      raise ValueError('worker_idx must be in [0, worker_num={}). Found {}.'.format(worker_num, worker_idx))
    _check_positive_int('prefetch', prefetch, allow_zero=True)
    _check_positive_int('num_epochs', num_epochs, allow_none=True)
    _check_positive_int('save_interval', save_interval, allow_none=True)
    if not isinstance(name, str) or not _VALID_NAME.match(name):
      raise ValueError(
        'name must start with a letter, digit or "." and hold only letters, digits, "_", "." '
        'and "-" (it names the reader\'s graph scope). Found {!r}.'.format(name)
      )
    self._data_base_dir = data_base_dir.rstrip('/') or '/'
    self._batch_size = int(batch_size)
    self._worker_idx = int(worker_idx)
    self._worker_num = int(worker_num)
    self._prefetch = int(prefetch)
    self._num_epochs = None if num_epochs is None else int(num_epochs)
    self._save_interval = save_interval
    self._drop_remainder = bool(drop_remainder)
    self._name = name
    self._compression_type = files_lib.check_compression_type(compression_type)

    self._graph = tf.get_default_graph()
    self._scope = _unique_scope(self._graph, name)
    self._graph.add_to_collection(READERS_COLLECTION, self)

    self._features = collections.OrderedDict()
    self._nodes = []
    self._outputs = None
    self._hook = None
    # Filled by read(): this reader's files (full path, path relative to the base dir, compression).
    self._paths = []
    self._relpaths = []
    self._compressions = []

    self._lock = threading.Lock()
    # Each initialize_iter() starts a new generation; generators of older ones stop.
    self._generation = 0
    self._stopped = False
    self._session = lambda: None  # weak reference to the session of the current generation
    self._current_block = None  # (block number, file) the pipeline reads now
    self._recent_blocks = collections.deque(maxlen=_RECENT_BLOCKS)  # (block, file, compression) read lately

  # ------------------------------------------------------------------------------------------ properties

  @property
  def name(self):
    """The name given to the constructor."""
    return self._name

  @property
  def scope(self):
    """The reader's unique name in its graph (`name`, or `name_<k>` for the k-th repeat)."""
    return self._scope

  @property
  def data_base_dir(self):
    return self._data_base_dir

  @property
  def batch_size(self):
    return self._batch_size

  @property
  def save_interval(self):
    """Accepted for compatibility; the position is recorded by every run that consumes a batch."""
    return self._save_interval

  @property
  def files(self):
    """The files this reader reads, in order (known after `read()`)."""
    return list(self._paths)

  @property
  def state_variable(self):
    """The checkpointed `tf.string` variable holding the position after the last consumed batch."""
    self._check_read('state_variable')
    return self._state

  # ---------------------------------------------------------------------------------- declaring inputs

  def _check_mutable(self, what):
    if self._outputs is not None:
      raise RuntimeError(
        'Reader {!r}: {} after read(): the pipeline is already built. Declare every feature '
        'and file node before calling read().'.format(self._scope, what)
      )

  def _add_feature(self, feature):
    if feature.name in self._features:
      raise ValueError(
        'Reader {!r}: feature {!r} is declared twice. Declare each feature once.'.format(self._scope, feature.name)
      )
    self._features[feature.name] = feature

  def fixedlen_feature(self, name, dim, dtype=tf.float32):
    """Declares a feature of `dim` values per record, read as a dense `[batch, dim]` tensor.

    Raises:
        RuntimeError: after `read()`.
        ValueError: a duplicate name, a non-positive `dim`, or a dtype tf.Example cannot hold.
    """
    self._check_mutable('fixedlen_feature({!r})'.format(name))
    self._add_feature(schema_lib.make_feature(name, dim, dtype, varlen=False))

  def varlen_feature(self, name, dtype=tf.int64):
    """Declares a feature with any number of values per record, read as a `tf.SparseTensor`.

    Raises:
        RuntimeError: after `read()`.
        ValueError: a duplicate name or a dtype tf.Example cannot hold.
    """
    self._check_mutable('varlen_feature({!r})'.format(name))
    self._add_feature(schema_lib.make_feature(name, None, dtype, varlen=True))

  def add_file_node(self, node):
    """Restricts reading to the sub-directory (or file) `node` of the base dir; may be called repeatedly.

    Raises:
        RuntimeError: after `read()`.
        ValueError: `node` is not a non-empty string.
    """
    self._check_mutable('add_file_node({!r})'.format(node))
    if not isinstance(node, str) or not node:
      raise ValueError('A file node must be a non-empty path string. Found {!r}.'.format(node))
    if node not in self._nodes:
      self._nodes.append(node)

  def add_file_nodes(self, nodes):
    """Calls `add_file_node` for each of `nodes`."""
    if isinstance(nodes, str):
      nodes = [nodes]
    for node in nodes:
      self.add_file_node(node)

  # ------------------------------------------------------------------------------------------- files

  def _list_files(self):
    """Lists this reader's files into `_paths`, `_relpaths`, `_compressions`."""
    paths = files_lib.list_files(self._data_base_dir, self._nodes, self._scope)
    if self._worker_num > 1:
      mine = paths[self._worker_idx :: self._worker_num]
      if not mine:
        raise ValueError(
          'Reader {!r}: worker {} of {} gets no file: {!r} holds only {} file(s). Use at most {} '
          'workers, or split the data into more files.'.format(
            self._scope, self._worker_idx, self._worker_num, self._data_base_dir, len(paths), len(paths)
          )
        )
      paths = mine
    self._set_files(paths)

  def _set_files(self, paths):
    self._paths = list(paths)
    self._relpaths = [files_lib.relative_path(p, self._data_base_dir) for p in self._paths]
    self._compressions = [files_lib.compression_of(p, self._compression_type) for p in self._paths]

  # -------------------------------------------------------------------------------------------- read

  def _check_read(self, what):
    if self._outputs is None:
      raise RuntimeError('Reader {!r}: {} needs the pipeline: call read() first.'.format(self._scope, what))

  def read(self):
    """Builds the pipeline (once) and returns the batch: a dict feature name -> tensor.

    Fixed-length features are `[batch, dim]` tensors, variable-length ones `tf.SparseTensor`s. Every run that
    evaluates any of them consumes one batch and records its end position in `state_variable`.

    Raises:
        ValueError: no feature declared, or a worker without files.
        DataNotFoundError: the directory, a file node, or any data file is missing.
        SchemaError, CorruptFileError: the first record does not match the features, or cannot be read.
    """
    if self._outputs is not None:
      return self._outputs
    if not self._features:
      raise ValueError(
        'Reader {!r}: declare at least one feature (fixedlen_feature/varlen_feature) before read().'.format(self._scope)
      )
    if tf.get_default_graph() is not self._graph:
      raise RuntimeError(
        'Reader {!r} was created in another graph than the current default graph; call '
        'read() in the graph the reader was created in.'.format(self._scope)
      )
    self._list_files()
    schema_lib.check_files(self._paths, self._compressions, self._features, self._scope)
    with tf.name_scope(self._scope + '/'):
      self._outputs = self._build()
    return self._outputs

  def _build(self):
    self._start_block = tf.placeholder(tf.int64, [], name='start_block')
    self._start_index = tf.placeholder(tf.int64, [], name='start_index')
    self._generation_input = tf.placeholder(tf.int64, [], name='generation')
    blocks = tf.data.Dataset.from_generator(
      self._generate_blocks,
      _BLOCK_TYPES,
      _BLOCK_SHAPES,
      args=(self._start_block, self._start_index, self._generation_input),
    )
    dataset = rebatch(
      blocks.flat_map(
        plain_tf(
          lambda block, path, compression, start: block_batches(path, start, compression, block, self._batch_size)
        )
      ),
      self._batch_size,
      self._drop_remainder,
    )

    spec = schema_lib.parse_spec(self._features)
    full_paths = tf.constant(self._paths)
    relpaths = tf.constant(self._relpaths)
    num_files = len(self._paths)

    def parse(codes, records):
      blocks_of_records = codes // (1 << INDEX_BITS)
      indices = codes % (1 << INDEX_BITS)
      # Naming each record "<file>:<index>" makes the parser's errors point at the bad record.
      names = tf.strings.join([tf.gather(full_paths, blocks_of_records % num_files), tf.as_string(indices)], ':')
      features = tf.io.parse_example(records, spec, example_names=names)
      last_block = blocks_of_records[-1]
      position = tf.strings.join(
        [tf.as_string(last_block), tf.as_string(indices[-1] + 1), tf.gather(relpaths, last_block % num_files)], ':'
      )
      return features, position

    dataset = dataset.map(plain_tf(parse), num_parallel_calls=_PARSE_THREADS if self._prefetch > 0 else None)
    if self._prefetch > 0:
      dataset = dataset.prefetch(self._prefetch)
    self._iterator = tf.data.make_initializable_iterator(dataset)
    features, position = self._iterator.get_next(name='next')
    if self._worker_num > 1:
      # Every worker of a cluster declares the position of each worker, so that the chief's checkpoint holds them
      # all (on the parameter servers) and each worker resumes its own share.
      states = [
        tf.Variable(b'', dtype=tf.string, trainable=False, name='reader_state_w%d' % i) for i in range(self._worker_num)
      ]
      self._state = states[self._worker_idx]
    else:
      self._state = tf.Variable(b'', dtype=tf.string, trainable=False, name='reader_state')
    record_position = self._state.assign(position, name='record_position')
    # One IdentityN after the position is recorded passes every feature on (one kernel, not one per feature).
    flat = tf.nest.flatten([features[name] for name in self._features], expand_composites=True)
    with tf.control_dependencies([record_position]):
      flat = tf.identity_n(flat, name='batch')
    values = tf.nest.pack_sequence_as([features[name] for name in self._features], flat, expand_composites=True)
    return collections.OrderedDict(zip(self._features, values))

  def _generate_blocks(self, start_block, start_index, generation):
    """Yields `(block, file, compression, start)` for the blocks from `start_block` on."""
    num_files = len(self._paths)
    total = None if self._num_epochs is None else num_files * self._num_epochs
    block = int(start_block)
    while total is None or block < total:
      if self._replaced(generation):
        return
      if block > MAX_BLOCK:
        raise ValueError(
          'Reader {!r}: more than {} blocks (files x epochs) in one pass; use fewer epochs per run.'.format(
            self._scope, MAX_BLOCK + 1
          )
        )
      i = block % num_files
      self._enter_block(block, i)
      yield block, self._paths[i], self._compressions[i], int(start_index) if block == start_block else 0
      block += 1

  def _enter_block(self, block, i):
    """Notes that the pipeline starts reading block number `block`, this reader's file `i`."""
    self._current_block = (block, self._paths[i])
    self._recent_blocks.append((block, self._paths[i], self._compressions[i]))

  def _find_corrupt_block(self, text):
    """The (block, file) of a recently read file that fails to read, for TF's DataLossError `text`; or None.

    TF's message ("corrupted record at <byte offset>") names no file, and the pipeline may have read ahead
    into later files before the error reached the training step. Candidates are the recent blocks whose
    file is longer than that offset (for compressed files the offset counts uncompressed bytes, so they all
    stay); if several remain, each is read through, in reading order, until one fails.
    """
    latest = collections.OrderedDict()  # file -> its latest block, ordered by that block
    for block, path, compression in list(self._recent_blocks):
      latest.pop(path, None)
      latest[path] = (block, path, compression)
    candidates = list(latest.values())
    match = _RECORD_OFFSET.search(text)
    if match:
      offset = int(match.group(1))
      candidates = [c for c in candidates if c[2] or _file_size(c[1]) > offset]
    if len(candidates) == 1:
      return candidates[0][:2]
    for block, path, compression in candidates:
      if not schema_lib.readable(path, compression):
        return block, path
    return None

  def _replaced(self, generation):
    """Whether the generator of `generation` should stop: re-initialised, stopped, or its session closed."""
    if self._stopped or generation != self._generation:
      return True
    session = self._session()
    # Closing a session waits for its input pipelines; `tf.Session` marks itself closed before that wait.
    return session is None or getattr(session, '_closed', False)

  # ----------------------------------------------------------------------------------------- session

  def get_hook(self):
    """The `DataIOHook` that starts this reader's iterator when the session is created (one per reader)."""
    if self._hook is None:
      self._hook = DataIOHook(self)
    return self._hook

  def restored_position(self, sess):
    """The position recorded in `state_variable` (restored from a checkpoint or recorded by a run), or None.

    Raises:
        RuntimeError: before `read()`, or when the variable is not initialized yet.
    """
    self._check_read('restored_position')
    try:
      state = sess.run(self._state)
    except tf.errors.FailedPreconditionError:
      raise RuntimeError(
        'Reader {!r}: {} is not initialized; run the variable initializer or restore a '
        'checkpoint before initialize_iter().'.format(self._scope, self._state.name)
      )
    return parse_position(state)

  def _start_position(self, sess):
    """(block, index) to start the iterator from; logs a restore."""
    position = self.restored_position(sess)
    if position is None:
      return 0, 0
    _log.info(
      'Restoring reader %s at block %d, sample %d (file %s)', self._scope, position.block, position.index, position.file
    )
    expected = self._relpaths[position.block % len(self._relpaths)]
    if position.file and position.file != expected:
      _log.warning(
        'Reader %s: the checkpoint was taken at block %d = %s, but block %d is now %s: the file '
        'list changed since then; resuming at block %d, sample %d of the current list',
        self._scope,
        position.block,
        position.file,
        position.block,
        expected,
        position.block,
        position.index,
      )
    return position.block, position.index

  def initialize_iter(self, sess):
    """(Re)starts the iterator: from the position in `state_variable` if it holds one, else from the start.

    Raises:
        RuntimeError: before `read()`, or when the state variable is not initialized.
    """
    self._check_read('initialize_iter')
    block, index = self._start_position(sess)
    with self._lock:
      self._generation += 1
      self._stopped = False
      self._session = _weak(sess)
      generation = self._generation
    sess.run(
      self._iterator.initializer,
      feed_dict={self._start_block: block, self._start_index: index, self._generation_input: generation},
    )

  def stop(self):
    """Makes the running block generator finish, so closing the session never waits for it."""
    self._stopped = True

  def rewind(self, sess):
    """Restarts the reader at its first record, whatever position was restored (a raw `tf.Session`).

    Both parties of a `FederalDataIO` must rewind it at the same point: the follower then follows the leader's
    new pass.
    """
    self._check_read('rewind')
    self._state.load(b'', sess)
    self.initialize_iter(sess)

  # ---------------------------------------------------------------------------------------------- errors

  def owns_error(self, error):
    """Whether `error` (a `tf.errors.OpError`) was raised by this reader's iterator."""
    op = getattr(error, 'op', None)
    if op is not None and op.graph is self._graph and op.name.startswith(self._scope + '/'):
      return True
    return self._outputs is not None and any(p in (error.message or '') for p in self._paths)

  def explain_error(self, error):
    """A clearer copy of a TF error raised by this reader while training, or None if it is not one.

    Handles parse errors (a record lacking a feature, or with another dtype or length) and `DataLossError`
    (a truncated or corrupt file). The result has the same class as `error`.
    """
    if not isinstance(error, tf.errors.OpError) or not self.owns_error(error):
      return None
    # The first line is TF's own sentence, after the "{{function_node ...}}" tag of errors raised in tf.data.
    text = _FUNCTION_TAG.sub('', compat.op_error_text(error).split('\n')[0]).strip()
    if isinstance(error, tf.errors.DataLossError):
      block = self._find_corrupt_block(text)
      where = (
        'file {!r} (block {})'.format(block[1], block[0])
        if block is not None
        else 'one of the files under {!r} read around block {}'.format(
          self._data_base_dir, self._current_block[0] if self._current_block else 0
        )
      )
      message = (
        'Reader {!r}: {} is truncated or corrupt ({}). Re-create the file or remove it from {!r}, '
        'and check compression_type.'.format(self._scope, where, text, self._data_base_dir)
      )
    elif isinstance(error, tf.errors.InvalidArgumentError) and ('Key:' in text or 'Feature:' in text):
      message = (
        'Reader {!r}: a record does not match the declared features: {}. The record is named '
        '"<file>:<record index>". Make every file hold the declared features with the declared '
        'dtype and length.'.format(self._scope, text)
      )
    else:
      return None
    return type(error)(error.node_def, error.op, message)


def explain_error(error, graph=None):
  """Maps a TF error raised by an efl reader while training to one that names the reader, file and record.

  The framework (or user code) can call it around `session.run`:

      try:
          sess.run(train_op)
      except tf.errors.OpError as err:
          clearer = efl.data.explain_error(err)
          if clearer is None:
              raise
          raise clearer from err

  Args:
      error: a `tf.errors.OpError`.
      graph: the graph of the readers; default the error's op's graph, else the default graph.

  Returns:
      An error of the same class with a clearer message, or None if no reader recognises `error`.
  """
  if graph is None:
    op = getattr(error, 'op', None)
    graph = op.graph if op is not None else tf.get_default_graph()
  for reader in graph.get_collection(READERS_COLLECTION):
    clearer = reader.explain_error(error)
    if clearer is not None:
      return clearer
  return None


def _file_size(path):
  try:
    return tf.io.gfile.stat(path).length
  except tf.errors.OpError:
    return 0


def _weak(sess):
  try:
    return weakref.ref(sess)
  except TypeError:  # a session-like object without weak references: never reported closed
    return lambda: sess


def readers_feeding(tensors, graph=None):
  """The readers (in creation order) whose batches `tensors` are computed from."""
  graph = graph or tf.get_default_graph()
  by_state = {
    r._state.op: r
    for r in graph.get_collection(READERS_COLLECTION)  # pylint: disable=protected-access
    if r._outputs is not None
  }  # pylint: disable=protected-access
  found, seen = set(), set()
  stack = [t.op for t in tensors]
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    if op in by_state:
      found.add(by_state[op])
    stack.extend(x.op for x in op.inputs)
    stack.extend(op.control_inputs)
  return [r for r in graph.get_collection(READERS_COLLECTION) if r in found]


def stop_readers(graph=None):
  """Stops the block generators of every reader in `graph` (default: the default graph).

  Closing a session waits for its input pipelines. A follower's pipeline may be waiting for the leader's next
  block (read ahead by `prefetch`); it notices a closing `tf.Session` by itself within a fraction of a second,
  and this stops it at once (the hooks' `end()` does the same on a normal finish).
  """
  graph = graph or tf.get_default_graph()
  for reader in graph.get_collection(READERS_COLLECTION):
    reader.stop()


class DataIOHook(tf.train.SessionRunHook):
  """Starts a `DataIO`'s iterator in `after_create_session`, from the restored position if there is one.

  It fetches nothing in `before_run`, so it is harmless when run with the steps of another reader.
  """

  def __init__(self, dataio):
    self._dataio = dataio

  def begin(self):
    """Implements `tf.train.SessionRunHook.begin`: the reader must have been read()."""
    self._dataio._check_read('the hook')  # pylint: disable=protected-access

  def after_create_session(self, session, coord):
    """Implements `tf.train.SessionRunHook.after_create_session`."""
    del coord
    self._dataio.initialize_iter(session)

  def end(self, session):
    """Implements `tf.train.SessionRunHook.end`: lets the block generator finish."""
    del session
    self._dataio.stop()
