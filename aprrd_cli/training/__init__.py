"""Training: ONE engine (``engine``: the step loop) serving both stages (``stages``: APR for the
teacher, RD for the student), their configurations (``config``), the optimiser and learning-rate
schedule (``schedule``), what a checkpoint holds and how a resume is checked (``state``) and the
run folder's records (``records``)."""

from aprrd_cli.training.config import APRConfig, RDConfig, RunOptions
from aprrd_cli.training.engine import NonFiniteLoss, TrainResult, train
from aprrd_cli.training.stages import distill, train_apr

__all__ = ["APRConfig", "NonFiniteLoss", "RDConfig", "RunOptions", "TrainResult", "distill", "train", "train_apr"]
