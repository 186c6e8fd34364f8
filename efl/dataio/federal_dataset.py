"""EFLS's module path of `FederalDataset`."""

from efl.data import FederalDataset  # noqa: F401
