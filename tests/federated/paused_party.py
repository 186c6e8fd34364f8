"""Runs the script named by $EFL_TEST_SCRIPT with a pause of $EFL_TEST_PAUSE_S after every monitored run, so
that a test can kill a party in the middle of a run of known length. Arguments go to the script."""

import os
import runpy
import sys
import time

import tensorflow.compat.v1 as tf

import efl


class _Pause(tf.train.SessionRunHook):
  def after_run(self, run_context, run_values):
    time.sleep(float(os.environ['EFL_TEST_PAUSE_S']))


def _fit_with_pause(fit):
  def wrapped(self, *args, **kwargs):
    kwargs['hooks'] = list(kwargs.get('hooks') or []) + [_Pause()]
    return fit(self, *args, **kwargs)

  return wrapped


if __name__ == '__main__':
  script = os.environ['EFL_TEST_SCRIPT']
  efl.Model.fit = _fit_with_pause(efl.Model.fit)
  sys.argv = [script] + sys.argv[1:]
  sys.path.insert(0, os.path.dirname(script))
  runpy.run_path(script, run_name='__main__')
