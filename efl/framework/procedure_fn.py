"""Procedures: what `fit` does with a compiled model. Each factory returns `fn(model)`."""

import bisect
import random
import sys

import tensorflow.compat.v1 as tf

from efl.framework import prediction
from efl.framework.stage import LoopStage
from efl.mode import MODE


def _loop(model, mode, task, step, seconds):
  training = mode == MODE.TRAIN
  ops = model.train_op(task) if training else model.eval_op(task)
  return LoopStage(
    ops,
    is_training=training,
    step=step,
    time=seconds,
    mode=mode,
    task=task,
    feed_dict={model.training_flag: training},
    global_step=model.global_step,
  )


def _run_loop(model, name, mode, task, step=None, seconds=None):
  stage = _loop(model, mode, task, step, seconds)
  model.run_stage(name, stage)  # logs the stage's summary line
  return stage.finished


def train(max_step=None, task=None):
  """Trains until `max_step` steps have run (None: until the data ends)."""

  def fn(model):
    _run_loop(model, 'train', MODE.TRAIN, task, step=max_step)
    tf.logging.info('train fn complete')

  return fn


def eval(max_step=None, task=None):  # pylint: disable=redefined-builtin
  """Evaluates for `max_step` steps (None: until the data ends)."""

  def fn(model):
    _run_loop(model, 'eval', MODE.EVAL, task, step=max_step)
    tf.logging.info('eval fn complete')

  return fn


def _reset_metrics(model):
  model.run_stage('reset_metrics', lambda sess: model.reset_metrics(sess))


def train_and_evaluate(
  train_step=None, eval_step=None, max_iter=sys.maxsize, train_interval=None, eval_interval=None, task=None
):
  """Alternates training and evaluation.

  Each iteration trains `train_step` steps (or `train_interval` seconds), resets the metrics, then evaluates
  `eval_step` steps (or `eval_interval` seconds). Stops after `max_iter` iterations or when the training data
  ends.
  """
  if max_iter is not None and max_iter < 1:
    raise ValueError('max_iter must be >= 1, got %r' % (max_iter,))

  def fn(model):
    it = 0
    while max_iter is None or it < max_iter:
      tf.logging.info('train_and_evaluate start run iter[%d]', it)
      finished = _run_loop(model, 'train', MODE.TRAIN, task, train_step, train_interval)
      _reset_metrics(model)
      _run_loop(model, 'eval', MODE.EVAL, task, eval_step, eval_interval)
      it += 1
      if finished:
        break
    tf.logging.info('train_and_evaluate complete after %d iterations', it)

  return fn


train_and_eval = train_and_evaluate


def cotrain(task_select_ratio, max_iter=sys.maxsize, train_step=None, eval_step=None):
  """Trains several tasks, picking one per iteration at random with the given ratios (seeded, reproducible).

  Args:
    task_select_ratio: dict task -> probability; the values must sum to 1.
    max_iter: stop after this many iterations (None: when every task's training data is exhausted).
    train_step: the most training steps of one iteration (None: until the task's training data ends).
    eval_step: the most evaluation steps after each iteration (None: the whole evaluation data).
  """
  if not isinstance(task_select_ratio, dict) or not task_select_ratio:
    raise ValueError('cotrain needs task_select_ratio, a dict task -> ratio, got %r' % (task_select_ratio,))
  total = sum(task_select_ratio.values())
  if abs(total - 1.0) > 1e-9:
    raise ValueError('cotrain task_select_ratio values must sum to 1, got %r (sum %s)' % (task_select_ratio, total))
  tasks = list(task_select_ratio)
  bounds, acc = [], 0.0
  for t in tasks:
    acc += task_select_ratio[t]
    bounds.append(acc)

  def fn(model):
    for t in tasks:
      model.check_task(t)
    rng = random.Random(0)
    done = set()
    it = 0
    while (max_iter is None or it < max_iter) and len(done) < len(tasks):
      t = tasks[min(bisect.bisect_right(bounds, rng.randint(0, 99) / 100.0), len(tasks) - 1)]
      if t not in done:
        if _run_loop(model, '%s_train' % t, MODE.TRAIN, t, train_step):
          done.add(t)
        if model.eval_op(t) is not None:
          _run_loop(model, '%s_eval' % t, MODE.EVAL, t, eval_step)
      it += 1

  return fn


def predict(output_path, max_step=None, task=None):
  """Writes the task's predictions (`model.add_prediction` in eval_fn) for every example of its EVAL data.

  Both parties run it; the leader writes one row per example to `output_path` (its sample id, then each
  prediction; CSV with a header, or TFRecords for a `.tfrecord` name), a follower only if it declared
  predictions of its own. See `efl.framework.prediction`.
  """
  prediction.check_output_path(output_path)

  def fn(model):
    prediction.run_prediction(model, output_path, max_step=max_step, task=task)

  return fn
