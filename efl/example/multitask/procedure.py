"""A custom procedure in the style of EFLS's algorithm library: LoopStages run in task scopes with feed_dict.

`iterate_train_and_eval(task_specs)` trains each task `train_step` steps in turn until every task's training
data has ended (or `max_iter` rounds), then evaluates the tasks that have an `eval_step` key.
"""
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
