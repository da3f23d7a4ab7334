"""Hyper-parameter search over fine-tuning with Optuna (`python -m emergent tune task=<t>`).

Config in `conf/tune/`; storage in an RDB (SQLite by default, a PostgreSQL URL to share a
study between machines); every trial is the finetune stage's run, nested in the study's MLflow
run; the best trial becomes a Hydra preset in the run folder, and replaces the committed
`conf/experiment/<task>_tuned.yaml` only with `tune.adopt=true`.
"""

from emergent.tuning.space import Dimension, parse_space
from emergent.tuning.study import TrainFn, adopt_path, open_storage, preset_path, work

__all__ = [
    "Dimension",
    "TrainFn",
    "adopt_path",
    "open_storage",
    "parse_space",
    "preset_path",
    "work",
]
