"""Exceptions of the data readers.

Every problem with the input files that efl can detect itself is a `DataError`. The subclasses also derive from
the matching builtin exception, so callers that catch `FileNotFoundError` or `ValueError` keep working.
"""


class DataError(Exception):
  """Base class of the data readers' errors."""


class DataNotFoundError(DataError, FileNotFoundError):
  """The data directory, a file node, or any file to read is missing."""


class SchemaError(DataError, ValueError):
  """The records do not match the declared features (missing feature, other dtype, other length)."""


class CorruptFileError(DataError, IOError):
  """A TFRecord file is truncated, corrupt, or compressed differently than declared."""


class FileSetMismatchError(DataError, ValueError):
  """The leader's and the follower's data directories do not hold the same blocks."""
