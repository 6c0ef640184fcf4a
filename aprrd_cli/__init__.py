"""aprrd: APR-RD, self-supervised denoising of real camera noise."""

__version__ = "0.1.0"
