"""What both parties of the example share: the tasks, the model set-up, and the procedures.

`--procedure` picks the procedure (both parties must pick the same):

- `iterate` (default): a custom procedure in the style of EFLS's algorithm library, `iterate_train_and_eval`:
  LoopStages run in task scopes with feed_dict; each task trains `train_step` steps in turn until every task's
  training data has ended (or `max_iter` rounds), then the tasks that have an `eval_step` key are evaluated.
- `cotrain`: `efl.procedure_fn.cotrain`, a task picked at random (seeded) per round, evaluated after each.
- `train_and_evaluate`: `efl.procedure_fn.train_and_evaluate` for one task, then for the other.
"""

import argparse
import collections
import functools

import tensorflow.compat.v1 as tf

import efl
from efl.framework import task_scope
from efl.framework.common_define import MODE
from efl.stage.loop import LoopStage


def iterate_train_and_eval(task_specs, max_iter=1000, train_stop_at_any_finish=False):
  def fn(model):
    stages = {}
    for task, spec in task_specs.items():
      stages[task] = [LoopStage(model.train_op(task), True, spec.get('train_step'))]
      if 'eval_step' in spec:
        stages[task].append(LoopStage(model.eval_op(task), False, spec['eval_step']))
    for _ in range(max_iter):
      for task in task_specs:
        train = stages[task][0]
        with task_scope.task_scope(mode=MODE.TRAIN, task=task):
          if not train.finish:
            model.run_stage(task + '_train', train, feed_dict={model.training_flag: True})
      finished = [s[0].finish for s in stages.values()]
      if all(finished) or (train_stop_at_any_finish and any(finished)):
        break
    for task in task_specs:
      if len(stages[task]) > 1:
        with task_scope.task_scope(mode=MODE.EVAL, task=task):
          model.run_stage(task + '_eval', stages[task][1], feed_dict={model.training_flag: False})

  return fn


TASKS = ('even', 'large')


def procedure():
  parser = argparse.ArgumentParser()
  parser.add_argument('--procedure', default='iterate', choices=('iterate', 'cotrain', 'train_and_evaluate'))
  args, _ = parser.parse_known_args()
  if args.procedure == 'cotrain':
    return efl.procedure_fn.cotrain({'even': 0.5, 'large': 0.5}, train_step=10)
  if args.procedure == 'train_and_evaluate':
    each = [efl.procedure_fn.train_and_evaluate(max_iter=1, task=task) for task in TASKS]
    return lambda model: [p(model) for p in each]
  return iterate_train_and_eval(
    collections.OrderedDict((task, {'train_step': 10, 'eval_step': None}) for task in TASKS)
  )


def train(input_fn, loss_fn):
  """Sets each task's functions inside its task scope (one function as loss_fn and eval_fn), then fits."""
  model = efl.FederalModel()
  for task in TASKS:
    with efl.task_scope(mode=efl.MODE.TRAIN, task=task):
      model.input_fn(functools.partial(input_fn, task=task))
      model.loss_fn(functools.partial(loss_fn, mode=efl.MODE.TRAIN, task=task))
      model.eval_fn(functools.partial(loss_fn, mode=efl.MODE.EVAL, task=task))
      model.optimizer_fn(efl.optimizer_fn.scope_optimizer({'dnn': tf.train.AdamOptimizer(0.001, name='Adam_' + task)}))
  model.compile()
  model.fit(procedure(), log_step=10, project_name='FL_multitask')
