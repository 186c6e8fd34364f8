"""EFLS's module path of the hook registry and `with_tmp_hooks`."""

from efl.framework.hooks import HookRegistry as HookManager  # noqa: F401
from efl.framework.hooks import with_tmp_hooks  # noqa: F401
