"""What the federated examples do, by `--mode` (read through efl's config getters).

    --mode=train (default)                        the example's training procedure
    --mode=eval                                   evaluates the latest checkpoint on the test data
    --mode=predict --output=pred.csv              writes the leader's predictions of the test data
    --mode=export --export_dir=DIR                writes this party's SavedModel to DIR/<role>/<global step>

Checkpoints go to `--ckpt_dir`/<role> (none without --ckpt_dir, as in the seed's scripts), so that both
parties may be given the same arguments, as the launcher does.
"""

import os

import efl


def checkpoint_dir():
  return os.path.join(efl.get_ckpt_dir(), efl.get_federal_role()) if efl.get_ckpt_dir() else None


def run(model, train_procedure, **fit_kwargs):
  """Runs `model` (compiled) as `--mode` says; `train_procedure` is the example's training procedure."""
  mode, ckpt = efl.get_mode(), checkpoint_dir()
  if mode != 'train' and not ckpt:
    raise ValueError('--mode=%s works on a trained checkpoint: pass --ckpt_dir, the one given to --mode=train' % mode)
  if mode == 'train':
    return model.fit(train_procedure, checkpoint_dir=ckpt, **fit_kwargs)
  if mode == 'eval':
    return model.fit(efl.procedure_fn.eval(), checkpoint_dir=ckpt, **fit_kwargs)
  if mode == 'predict':
    if not efl.get_output():
      raise ValueError('--mode=predict needs --output=FILE (.csv, or .tfrecord for TFRecords)')
    return model.fit(efl.procedure_fn.predict(efl.get_output()), checkpoint_dir=ckpt, **fit_kwargs)
  if mode == 'export':
    if not efl.get_export_dir():
      raise ValueError('--mode=export needs --export_dir=DIR')
    return model.export_saved_model(os.path.join(efl.get_export_dir(), efl.get_federal_role()), checkpoint_dir=ckpt)
  raise ValueError('--mode must be train, eval, predict or export, got %r' % (mode,))
