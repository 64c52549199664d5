"""Runtimes behind one interface: ``open_backend(name, bundle, device, precision) -> Backend``."""
from lgfa_deploy.backends.base import BACKENDS, Backend, open_backend, to_uint8_bgr

__all__ = ["BACKENDS", "Backend", "open_backend", "to_uint8_bgr"]
