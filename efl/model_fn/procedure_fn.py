"""EFLS's module path of the procedures: `train`, `eval`, `train_and_evaluate`, `cotrain`."""
from efl.framework.procedure_fn import (cotrain, eval, predict, train, train_and_eval,  # noqa: F401,A004
                                       train_and_evaluate)
