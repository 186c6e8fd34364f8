"""EFLS's module path of the optimizer setters."""

from efl.framework.optimizer_fn import config_optimizer, optimizer_setter, scope_optimizer  # noqa: F401
