"""Networks and their checkpoints."""

from aprrd_cli.models.students import NBSN100, NBSN102
from aprrd_cli.models.teacher import ATBSN

ARCHS = {"atbsn": ATBSN, "nbsn-1.00M": NBSN100, "nbsn-1.02M": NBSN102}
STUDENTS = {"1.00M": "nbsn-1.00M", "1.02M": "nbsn-1.02M"}


def build(arch: str, **config) -> "ATBSN | NBSN100 | NBSN102":
    """A fresh network of the named architecture."""
    return ARCHS[arch](**config)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHS", "ATBSN", "NBSN100", "NBSN102", "STUDENTS", "build", "count_params"]
