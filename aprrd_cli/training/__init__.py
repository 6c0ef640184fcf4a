"""Training: ONE engine (``engine``) serving both stages (``stages``: APR for the teacher, RD
for the student), their configurations (``config``) and the run folder's records (``records``)."""

from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.engine import NonFiniteLoss, TrainResult, train
from aprrd_cli.training.stages import distill, train_apr

__all__ = ["APRConfig", "NonFiniteLoss", "RDConfig", "RunOptions", "TrainResult", "distill", "train", "train_apr"]
