"""Finding the files of a reader, naming its blocks, and choosing their compression.

A *block* is one TFRecord file. Its *block id* is its path relative to the reader's base directory; both parties
of a federal reader use block ids to name the same block. In the `data-join` layout each party's files are named
`part-<id>-<rest>`, where `<id>` differs between the parties; the block id replaces that prefix by `part-*-`, so
the two parties' files of one block get the same id.
"""

import os
import re

import tensorflow.compat.v1 as tf

from efl.data.errors import DataNotFoundError

COMPRESSION_TYPES = ('', 'ZLIB', 'GZIP')
DATA_MODES = ('data-join', 'local')

_EXTENSION_COMPRESSION = (('.gz', 'GZIP'), ('.gzip', 'GZIP'), ('.zlib', 'ZLIB'))
# `part-<id>-` at the start of the file name (the directories above it are kept as they are).
_DATA_JOIN_PREFIX = re.compile(r'^part-[^-/]*-')
_DATA_JOIN_WILDCARD = 'part-*-'


def check_compression_type(compression_type):
  """Returns `compression_type` in canonical form ('', 'ZLIB', 'GZIP' or None for "from the extension").

  Raises:
      ValueError: the value is not one of those.
  """
  if compression_type is None:
    return None
  if not isinstance(compression_type, str) or compression_type.upper() not in COMPRESSION_TYPES:
    raise ValueError(
      'compression_type must be None (detect from the file extension), "", "ZLIB" or "GZIP". Found {!r}.'.format(
        compression_type
      )
    )
  return compression_type.upper()


def compression_of(path, compression_type):
  """The compression to read `path` with: `compression_type` if given, else the one its extension names."""
  if compression_type is not None:
    return compression_type
  lower = path.lower()
  for extension, kind in _EXTENSION_COMPRESSION:
    if lower.endswith(extension):
      return kind
  return ''


def _is_hidden(name):
  # Marker and metadata files such as `_SUCCESS` or `.part-0.crc` are never data.
  return name.startswith('.') or name.startswith('_')


def list_files(data_base_dir, nodes=(), reader_name='dataio'):
  """Lists the data files of a reader: all files under the base dir, or under its `nodes`, recursively.

  Files and directories whose names start with '.' or '_' (e.g. `_SUCCESS`, `.crc`) are skipped.

  Args:
      data_base_dir: `str`, the base directory.
      nodes: `list` of `str`, sub-directories (or files) relative to the base dir; empty means the whole dir.
      reader_name: `str`, used in error messages.

  Returns:
      A sorted `list` of full paths, without duplicates.

  Raises:
      DataNotFoundError: the base dir or a node does not exist, or there is no file to read.
  """
  if not tf.io.gfile.isdir(data_base_dir):
    raise DataNotFoundError(
      'Reader {!r}: the data directory {!r} does not exist or is not a directory. Pass the directory that '
      'holds the TFRecord files (relative paths are taken from the working directory {!r}).'.format(
        reader_name, data_base_dir, os.getcwd()
      )
    )
  roots = [os.path.join(data_base_dir, node) for node in nodes] if nodes else [data_base_dir]
  found = set()
  for root in roots:
    if tf.io.gfile.isdir(root):
      for dirpath, dirnames, filenames in tf.io.gfile.walk(root):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        found.update(os.path.join(dirpath, f) for f in filenames if not _is_hidden(f))
    elif tf.io.gfile.exists(root):
      found.add(root)
    else:
      raise DataNotFoundError(
        'Reader {!r}: the file node {!r} does not exist under the data directory {!r}. Check the names '
        'given to add_file_node(s).'.format(reader_name, os.path.relpath(root, data_base_dir), data_base_dir)
      )
  if not found:
    where = 'the data directory {!r}'.format(data_base_dir)
    if nodes:
      where += ' (file nodes {})'.format(list(nodes))
    raise DataNotFoundError(
      'Reader {!r}: {} holds no data files. Write the TFRecord files there, or point the reader at the '
      'directory that holds them.'.format(reader_name, where)
    )
  return sorted(found)


def relative_path(path, data_base_dir):
  """The path of `path` relative to `data_base_dir`, with '/' separators."""
  return os.path.relpath(path, data_base_dir).replace(os.sep, '/')


def block_id(relative, data_mode):
  """The block id of the file at `relative`: itself, or with `part-<id>-` replaced by `part-*-` in data-join."""
  if data_mode != 'data-join':
    return relative
  head, _, name = relative.rpartition('/')
  name = _DATA_JOIN_PREFIX.sub(_DATA_JOIN_WILDCARD, name, count=1)
  return head + '/' + name if head else name
