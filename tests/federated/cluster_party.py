"""The MNIST example's party (leader.py or follower.py by --federal_role), recording the sample ids of every
training batch this worker consumed to `$EFL_TEST_IDS_DIR/<role>_w<task index>.txt`."""

import importlib.util
import os

import tensorflow.compat.v1 as tf

import efl
from efl.example import modes

EXAMPLE = os.path.join(
  os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'efl', 'example', 'mnist'
)


class IdsRecorder(tf.train.SessionRunHook):
  """Appends each batch's ids to the file as one line as soon as the batch ran (a killed task keeps its lines)."""

  def __init__(self, ids, path):
    self._ids, self._path, self._batches = ids, path, 0

  def before_run(self, run_context):
    return tf.train.SessionRunArgs(self._ids)

  def after_run(self, run_context, run_values):
    with open(self._path, 'a') as f:
      f.write(' '.join(str(int(i)) for i in run_values.results.ravel()) + '\n')
    self._batches += 1
    print('consumed batch %d' % self._batches, flush=True)


def main():
  role = efl.get_federal_role()
  spec = importlib.util.spec_from_file_location('example_' + role, os.path.join(EXAMPLE, role + '.py'))
  party = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(party)
  example_input_fn = party.input_fn

  def input_fn(model, mode):
    sample = example_input_fn(model, mode)
    if mode == efl.MODE.TRAIN:
      path = os.path.join(os.environ['EFL_TEST_IDS_DIR'], '%s_w%d.txt' % (role, efl.get_task_index()))
      model.add_hooks([IdsRecorder(sample.sample_ids, path)], mode=mode)
    return sample

  party.input_fn = input_fn
  save_steps = os.environ.get('EFL_TEST_SAVE_STEPS')
  if save_steps:
    run = modes.run
    modes.run = lambda model, procedure, **kw: run(model, procedure, save_checkpoint_steps=int(save_steps), **kw)
  if os.environ.get('EFL_TEST_SYNC_SEED'):
    compile_ = efl.FederalModel.compile

    def compile_synchronously(model, **kw):
      model._graph.seed = int(os.environ['EFL_TEST_SYNC_SEED'])  # pylint: disable=protected-access
      return compile_(model, sync_optimizer_config={}, **kw)

    efl.FederalModel.compile = compile_synchronously
  party.main()


if __name__ == '__main__':
  main()
