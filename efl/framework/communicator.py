"""EFLS's module path of `Communicator` and `CommunicatorHook` (the communicator loads on first use)."""

from efl.framework.hooks import CommunicatorHook  # noqa: F401


def __getattr__(name):
  if name == 'Communicator':
    from efl.communicator import Communicator  # pylint: disable=g-import-not-at-top

    return Communicator
  raise AttributeError("module 'efl.framework.communicator' has no attribute %r" % name)
