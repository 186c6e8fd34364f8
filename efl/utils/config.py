"""EFLS's module path of the flags' getters (`efl.utils.config.get_task_index()`, ...); see `efl.flags`."""

from efl.flags import *  # noqa: F403
from efl.flags import __all__  # noqa: F401
