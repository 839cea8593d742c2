"""Training: TrainConfig, the loop (`train_run`), checkpoints, and `nslm train`."""

from nslm.train.config import TrainConfig
from nslm.train.run import prepare_run, train_run

__all__ = ["TrainConfig", "prepare_run", "train_run"]
