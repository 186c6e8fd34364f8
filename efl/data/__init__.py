"""Data readers: `DataIO`, `FederalDataIO`, the block dataset `FederalDataset`, and their hooks."""

from efl.data.dataio import DataIO, DataIOHook, explain_error, parse_position, readers_feeding, stop_readers
from efl.data.errors import CorruptFileError, DataError, DataNotFoundError, FileSetMismatchError, SchemaError
from efl.data.federal_dataio import FederalDataIO, FederalDataIOHook
from efl.data.federal_dataset import FederalDataset

__all__ = [
  'DataIO',
  'DataIOHook',
  'FederalDataIO',
  'FederalDataIOHook',
  'FederalDataset',
  'explain_error',
  'parse_position',
  'readers_feeding',
  'stop_readers',
  'DataError',
  'DataNotFoundError',
  'SchemaError',
  'CorruptFileError',
  'FileSetMismatchError',
]
