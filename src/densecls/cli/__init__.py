"""The ``densecls`` command line: a thin Typer layer over :mod:`densecls.commands`.

No numpy or torch is imported here: ``densecls --help`` stays fast, and every piece of
work is a library call a Python user can make too.
"""

from densecls.cli.app import app, main

__all__ = ["app", "main"]
