"""EFLS's module path of the metrics `auc` and `gauc`."""

from efl.metrics import auc, gauc  # noqa: F401
