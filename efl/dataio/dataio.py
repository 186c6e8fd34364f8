"""EFLS's module path of `DataIO` and `FederalDataIO`."""

from efl.data import DataIO, FederalDataIO  # noqa: F401
