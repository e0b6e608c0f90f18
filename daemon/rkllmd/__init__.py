"""rkllmd: keeps one language model resident and serves it locally."""

__version__ = "0.1.0"
