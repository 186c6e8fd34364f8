"""Run modes and task scopes.

A *scope* is a `(mode, task)` pair. The framework builds and runs each part of the graph under one scope, and
hooks, metrics and train/eval ops are registered per scope.
"""

import contextlib
import enum
import threading


class MODE(enum.Enum):
  TRAIN = 1
  EVAL = 2


class TaskScope(object):
  """An immutable `(mode, task)` pair; compares and hashes by value."""

  __slots__ = ('mode', 'task')

  def __init__(self, mode=None, task=None):
    object.__setattr__(self, 'mode', mode)
    object.__setattr__(self, 'task', task)

  def __setattr__(self, key, value):
    raise AttributeError('TaskScope is immutable')

  def _key(self):
    return (self.mode, self.task)

  def __eq__(self, other):
    return isinstance(other, TaskScope) and self._key() == other._key()

  def __ne__(self, other):
    return not self == other

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    mode = self.mode.name if isinstance(self.mode, MODE) else self.mode
    return 'TaskScope(mode=%s, task=%r)' % (mode, self.task)


_state = threading.local()


def current_task_scope():
  """Returns the innermost `TaskScope` (mode TRAIN, task None outside any scope)."""
  stack = getattr(_state, 'stack', None)
  if not stack:
    return TaskScope(MODE.TRAIN, None)
  return stack[-1]


def in_task_scope():
  """True inside an explicit `task_scope` (outside, `current_task_scope()` is the default scope)."""
  return bool(getattr(_state, 'stack', None))


def scope_task(task):
  """`task`, or the enclosing scope's task when it is None (as EFLS resolves a `task=None` argument)."""
  return current_task_scope().task if task is None else task


@contextlib.contextmanager
def task_scope(mode=None, task=None):
  """Enters a `(mode, task)` scope. A None field is inherited from the enclosing scope."""
  outer = current_task_scope()
  scope = TaskScope(outer.mode if mode is None else mode, outer.task if task is None else task)
  if not isinstance(scope.mode, MODE):
    raise ValueError('mode must be efl.MODE.TRAIN or efl.MODE.EVAL, got %r' % (mode,))
  stack = getattr(_state, 'stack', None)
  if stack is None:
    stack = _state.stack = []
  stack.append(scope)
  try:
    yield scope
  finally:
    stack.pop()
