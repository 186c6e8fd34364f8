"""EFLS's module path of the stage result combiners."""

from efl.framework.stage import Chief, First, Last, List, Mean, Sum, combine  # noqa: F401
from efl.framework.stage import _Combiner as StageCombiner  # noqa: F401
