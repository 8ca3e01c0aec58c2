"""Inference backends behind one protocol; a new backend is one new module."""

from llem_core.runtime.backends.base import BackendError, BatchTiming, InferenceBackend, get_backend

__all__ = ["BackendError", "BatchTiming", "InferenceBackend", "get_backend"]
