"""EFLS's package of procedure and optimizer functions (`efl.model_fn.procedure_fn`, `.optimizer_fn`)."""

from efl.model_fn import optimizer_fn, procedure_fn  # noqa: F401
