"""The sdguard command line: thin over the library (parse, call, print)."""

from .main import app, main

__all__ = ["app", "main"]
