"""harden"""
from .erasure import erase  # noqa: E402,F401
