"""Inference backends behind one protocol; a new backend is one new module."""

from llem_core.backends.base import Backend, BackendError, BatchTiming, get_backend

__all__ = ["Backend", "BackendError", "BatchTiming", "get_backend"]
