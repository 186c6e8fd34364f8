"""EFLS's package path of the data readers (`efl.dataio.dataio.DataIO`, ...); efl's own is `efl.data`."""

from efl.data import DataIO, DataIOHook, FederalDataIO, FederalDataIOHook, FederalDataset  # noqa: F401
