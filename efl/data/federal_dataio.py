"""`FederalDataIO`: a `DataIO` whose block order the leader decides and the follower follows.

Each time the leader's pipeline starts a block it sends `(block_id, start_index)` to the follower over a
`sync=False` channel numbered by the reader itself; at the end of the data it sends END. The follower's block
generator receives these messages and reads its own file of that block from the same index, so both parties'
batches hold the same samples in the same order. After a restart the leader's first message carries its
restored position, so both resume at the same block and sample.

Block ids are file paths relative to the base dir. In `data_mode='data-join'` a file named `part-<id>-<rest>`
has the block id `part-*-<rest>` (the party-specific `<id>` is dropped) and each party maps it back to its own
file; in `'local'` mode both parties need identical relative file names.

Each reader has its own channel, `efl_data/<scope>/blocks`, registered with the communicator at construction;
`<scope>` is the reader's name, or `<name>_<k>` for the k-th other reader of that name in the graph (EFLS's
examples name both the train and the eval reader 'dataio'; both parties create them in the same order).

Every initialisation of a reader's iterator starts a new *generation*; messages carry it, so a follower never
mistakes the blocks the leader's previous pipeline read ahead for those of the new one. Both parties
initialise their readers in the same order (the hooks run in `after_create_session`), so the generations match.

The follower's `reader_state` records its own file index and sample (for the logs); on a restart it always
starts where the leader's first message says.
"""

import collections
import threading

import numpy as np
import tensorflow.compat.v1 as tf

from efl.data import files as files_lib
from efl.data.dataio import DataIO, DataIOHook
from efl.data.errors import FileSetMismatchError

_log = tf.get_logger()

ROLES = ('leader', 'follower')
_BLOCK, _END = b'BLOCK', b'END'
# How often a waiting follower re-checks whether its pipeline was replaced or stopped.
_POLL_S = 0.2


_FIELDS = ['kind', 'generation', 'block', 'block_id', 'start', 'total', 'batch_size', 'drop_remainder']


class BlockMessage(collections.namedtuple('BlockMessage', _FIELDS)):
  """One message of the block channel; sent as a numpy object array of `bytes`.

  `kind` is BLOCK or END; `generation` the leader's initialisation count of the reader; `block` the leader's
  block number (position in its block sequence, epochs included) and `block_id` the block's id; `start` the
  first record to read; `total` the number of blocks of this run (-1: no epoch limit); `batch_size` and
  `drop_remainder` the leader's batching, which the follower must share.
  """

  def encode(self):
    text = [self.kind] + [str(getattr(self, field)).encode('utf-8') for field in _FIELDS[1:]]
    return np.array(text, dtype=object)

  @classmethod
  def decode(cls, array):
    values = [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(array).ravel().tolist()]
    if len(values) != len(_FIELDS) or values[0] not in (_BLOCK, _END):
      raise ValueError(
        'A block message is [{}]. Found {!r}; both parties must run the same efl version.'.format(
          ', '.join(_FIELDS), values
        )
      )
    return cls(
      values[0],
      int(values[1]),
      int(values[2]),
      values[3].decode('utf-8'),
      int(values[4]),
      int(values[5]),
      int(values[6]),
      values[7] == b'True',
    )


class FederalDataIO(DataIO):
  """A `DataIO` shared by the two parties: the leader decides the block order, the follower follows it.

  Args:
      data_base_dir: `str`, this party's data directory.
      batch_size: `int`, records per batch (the same on both parties).
      communicator: the `efl.Communicator` of this party; the reader registers its channel at construction.
      role: 'leader' or 'follower'.
      worker_idx, worker_num: the leader reads the files i with `i % worker_num == worker_idx`; the follower
          reads whatever block the leader names.
      prefetch: `int`, batches to prepare ahead (0 disables).
      num_epochs: `int` or None (forever), passes over the leader's file list (the follower follows).
      save_interval: accepted for compatibility; the position is recorded at every step.
      drop_remainder: `bool`, whether to drop the last, smaller batch (must match on both parties).
      data_mode: 'data-join' (files `part-<id>-...`, matched without `<id>`) or 'local' (identical names).
      name: `str`, the reader's name; repeated names in one graph become `name_1`, ... (in creation order, which
          both parties share), so each reader gets its own channel.
      compression_type: None (from the extension), '', 'ZLIB' or 'GZIP'.

  Raises:
      ValueError: an unknown role or data mode, a role other than the communicator's, or an argument out of
          range.
  """

  def __init__(
    self,
    data_base_dir,
    batch_size,
    communicator,
    role,
    worker_idx=0,
    worker_num=1,
    prefetch=1,
    num_epochs=1,
    save_interval=100,
    drop_remainder=False,
    data_mode='data-join',
    name='dataio',
    compression_type=None,
  ):
    if isinstance(drop_remainder, str):
      # EFLS's positional order has no drop_remainder: (..., save_interval, data_mode, name).
      if data_mode not in files_lib.DATA_MODES:
        name = data_mode
      data_mode, drop_remainder = drop_remainder, False
    if role not in ROLES:
      raise ValueError("role must be 'leader' or 'follower'. Found {!r}.".format(role))
    if data_mode not in files_lib.DATA_MODES:
      raise ValueError("data_mode must be 'data-join' or 'local'. Found {!r}.".format(data_mode))
    if communicator is None:
      raise ValueError('FederalDataIO needs the communicator of this party (model.communicator). Found None.')
    comm_role = getattr(communicator, 'federal_role', None)
    if comm_role is not None and comm_role != role:
      raise ValueError(
        "role is {!r} but the communicator is the {!r}'s; pass model.federal_role.".format(role, comm_role)
      )
    super(FederalDataIO, self).__init__(
      data_base_dir,
      batch_size,
      worker_idx=worker_idx,
      worker_num=worker_num,
      prefetch=prefetch,
      num_epochs=num_epochs,
      save_interval=save_interval,
      drop_remainder=drop_remainder,
      name=name,
      compression_type=compression_type,
    )
    self._communicator = communicator
    self._role = role
    self._data_mode = data_mode
    self._channel = 'efl_data/{}/blocks'.format(self._scope)
    if role == 'leader':
      communicator.register_send(self._channel)
    else:
      communicator.register_recv(self._channel)
    self._block_ids = []
    self._index_of_id = {}
    # Messages sent (leader) or received (follower) on the channel: the `step` of the next one.
    self._sequence = 0
    self._channel_lock = threading.Lock()
    self._pending = None  # a message of a newer generation, received by an older generator
    # Generations on the wire count from the current connection: a peer process started anew counts from 1.
    self._generation_base = 0
    if hasattr(communicator, 'add_reset_callback'):
      communicator.add_reset_callback(self._on_reset)

  def _on_reset(self):
    """The communicator reconnects to the peer's new process: the channel starts afresh on both sides."""
    with self._channel_lock:
      self._sequence = 0
      self._pending = None
      self._generation_base = self._generation

  def _wire(self, generation):
    return generation - self._generation_base

  @property
  def role(self):
    return self._role

  @property
  def channel(self):
    """The communicator name this reader's block messages use."""
    return self._channel

  @property
  def block_ids(self):
    """This party's block ids, in the order of `files` (known after `read()`)."""
    return list(self._block_ids)

  # ------------------------------------------------------------------------------------------- files

  def _list_files(self):
    paths = files_lib.list_files(self._data_base_dir, self._nodes, self._scope)
    ids = {}
    for path in paths:
      block = files_lib.block_id(files_lib.relative_path(path, self._data_base_dir), self._data_mode)
      if block in ids:
        raise ValueError(
          'Reader {!r}: files {!r} and {!r} have the same block id {!r} in data_mode={!r}; keep one file '
          'per block in {!r}.'.format(self._scope, ids[block], path, block, self._data_mode, self._data_base_dir)
        )
      ids[block] = path
    order = sorted(ids)
    if self._role == 'leader' and self._worker_num > 1:
      order = order[self._worker_idx :: self._worker_num]
      if not order:
        raise ValueError(
          'Reader {!r}: worker {} of {} gets no file: {!r} holds only {} file(s). Use at most {} '
          'workers, or split the data into more files.'.format(
            self._scope, self._worker_idx, self._worker_num, self._data_base_dir, len(ids), len(ids)
          )
        )
    self._set_files([ids[block] for block in order])
    self._block_ids = order
    self._index_of_id = {block: i for i, block in enumerate(order)}

  # ------------------------------------------------------------------------------------------ blocks

  def _generate_blocks(self, start_block, start_index, generation):
    if self._role == 'leader':
      return self._lead_blocks(int(start_block), int(start_index), int(generation))
    return self._follow_blocks(int(generation))

  def _send(self, message):
    with self._channel_lock:
      self._communicator.send(self._channel, self._sequence, message.encode(), sync=False)
      self._sequence += 1

  def _lead_blocks(self, start_block, start_index, generation):
    blocks = super(FederalDataIO, self)._generate_blocks(start_block, start_index, generation)
    total = -1 if self._num_epochs is None else len(self._paths) * self._num_epochs
    wire = self._wire(generation)
    for block, path, compression, start in blocks:
      self._send(
        BlockMessage(
          _BLOCK,
          wire,
          block,
          self._block_ids[block % len(self._paths)],
          start,
          total,
          self._batch_size,
          self._drop_remainder,
        )
      )
      yield block, path, compression, start
    if not self._replaced(generation):
      self._send(BlockMessage(_END, wire, -1, '', 0, total, self._batch_size, self._drop_remainder))

  def _follow_blocks(self, generation):
    while True:
      message = self._next_message(generation)
      if message is None:
        return
      if (message.batch_size, message.drop_remainder) != (self._batch_size, self._drop_remainder):
        raise ValueError(
          'Reader {!r}: the leader batches with batch_size={}, drop_remainder={} but the follower with '
          "batch_size={}, drop_remainder={}; give both parties' readers the same values, or their "
          'batches hold different samples.'.format(
            self._scope, message.batch_size, message.drop_remainder, self._batch_size, self._drop_remainder
          )
        )
      if message.kind == _END:
        return
      i = self._index_of_id.get(message.block_id)
      if i is None:
        raise FileSetMismatchError(self._mismatch_message(message))
      self._enter_block(message.block, i)
      # The follower's codes carry its own file index, which names its records; the leader's block number
      # is what both parties resume from.
      yield i, self._paths[i], self._compressions[i], message.start

  def _mismatch_message(self, message):
    sample = ', '.join(repr(b) for b in self._block_ids[:5])
    more = ', ...' if len(self._block_ids) > 5 else ''
    run = (
      'block {} of {} in this run'.format(message.block, message.total)
      if message.total >= 0
      else 'block {} (no epoch limit)'.format(message.block)
    )
    return (
      'Reader {!r}: leader and follower have different file sets: the leader reads block {!r} ({}) but '
      'the follower has no such file under {!r} (it has {} file(s): {}{}; data_mode={!r}). Give both '
      'parties the same blocks{}.'.format(
        self._scope,
        message.block_id,
        run,
        self._data_base_dir,
        len(self._block_ids),
        sample,
        more,
        self._data_mode,
        ' (files part-<id>-<rest> match on <rest>)'
        if self._data_mode == 'data-join'
        else ' (identical relative file names)',
      )
    )

  def _next_message(self, generation):
    """The next message of `generation`, or None once this generator is replaced or stopped.

    It waits without a deadline: the pipeline reads ahead, and the leader may legitimately not start a block
    of this reader for a long time (e.g. while both parties evaluate). A stuck leader shows up in the
    training step's own receives; a failed or closed peer ends the wait at once through the communicator.
    """
    while True:
      if self._replaced(generation):
        return None
      with self._channel_lock:
        wire = self._wire(generation)
        pending = self._pending
        if pending is not None and pending.generation <= wire:
          self._pending = None
          if pending.generation == wire:
            return pending
        try:
          array = self._communicator.recv(self._channel, self._sequence, timeout_s=_POLL_S, sync=False)
        except TimeoutError:
          continue
        self._sequence += 1
      message = BlockMessage.decode(array)
      if message.generation < wire:
        continue  # read ahead by the leader's previous pipeline, never consumed here
      if message.generation > wire:
        # The leader already restarted this reader; keep the message for our next generation.
        with self._channel_lock:
          self._pending = message
        return None
      return message

  # ----------------------------------------------------------------------------------------- session

  def _start_position(self, sess):
    if self._role == 'leader':
      return super(FederalDataIO, self)._start_position(sess)
    position = self.restored_position(sess)
    if position is not None:
      _log.info(
        'Reader %s (follower) resumes where the leader says; its own last position was file %s, sample %d',
        self._scope,
        position.file,
        position.index,
      )
    return 0, 0

  def get_hook(self):
    """The `FederalDataIOHook` of this reader (one per reader)."""
    if self._hook is None:
      self._hook = FederalDataIOHook(self)
    return self._hook


class FederalDataIOHook(DataIOHook):
  """The hook of a `FederalDataIO`: starts its iterator after the session is created.

  The leader resumes from its restored position and tells the follower through its first block message; the
  follower's position always comes from the leader. Nothing is fetched in `before_run`.
  """
