"""srscale: scaling studies of self-rewarding language models."""

__version__ = "0.1.0"
