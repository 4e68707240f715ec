"""Model comparison: several models trained on the same data with the same budget, each over a
few seeds, then measured on this machine (accuracy, size, MACs, training and inference speed,
peak memory) and reported as a table and trade-off plots.

resnet.compare.compare(base_config, ComparePlan(models=("resnet20", "resnet56"), seeds=3))
"""

from .measure import parse_backends
from .report import pareto_front, write_report
from .runner import ComparePlan, compare, run_folder

__all__ = [
    "ComparePlan",
    "compare",
    "pareto_front",
    "parse_backends",
    "run_folder",
    "write_report",
]
