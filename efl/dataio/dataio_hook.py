"""EFLS's module path of the readers' hooks."""

from efl.data import DataIOHook, FederalDataIOHook  # noqa: F401
