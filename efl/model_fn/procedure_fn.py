"""EFLS's module path of the procedures: `train`, `eval`, `train_and_evaluate`, `cotrain`."""

from efl.framework.procedure_fn import (
  cotrain,
  eval,
  predict,
  train,
  train_and_eval,
  train_and_evaluate,
)
