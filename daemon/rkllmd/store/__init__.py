"""The model store: pulls from the Hugging Face Hub (staging, verify, publish) and removal."""

from .model_store import ModelStore, PullRequest

__all__ = ["ModelStore", "PullRequest"]
