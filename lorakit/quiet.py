"""Import the reference libraries without their start-up noise (every notebook's import cell).

bitsandbytes, torchao and peft print known-harmless messages on import when a CPU machine lacks
optional GPU kernels ("Failed to load CPU gemm_4bit_forward ...", "Failed to load ..._C_mxfp8.so",
torch ``_pytree`` deprecation lines). On a healthy machine a learner's first screen should show
no red, so the notebooks import these libraries through ``quiet_import``: warnings and log records
raised during the import are dropped, and text written to stderr is kept in ``HIDDEN`` (by module
name) instead of shown. A failed import is never hidden: it returns None.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import warnings
from types import ModuleType

#: the stderr text each quiet import kept back, by module name
HIDDEN: dict[str, str] = {}


@contextlib.contextmanager
def quiet():
    """Silence warnings, logging and stderr (Python's and the process's file descriptor 2)."""
    buffer = io.StringIO()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        warnings.catch_warnings(),
        contextlib.redirect_stderr(buffer),
    ):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        os.dup2(sink.fileno(), 2)  # C-level writes (torch's glog-style "W1129 ..." lines)
        try:
            yield buffer
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logging.disable(previous)
            sink.seek(0)
            buffer.write(sink.read().decode(errors="replace"))


def quiet_import(name: str) -> ModuleType | None:
    """``importlib.import_module(name)`` with its noise hidden; None if it is not installed.

    Only the import is quiet: warnings the library raises later, while it works, still show.
    """
    with quiet() as buffer:
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = None
    HIDDEN[name] = buffer.getvalue()
    return module
