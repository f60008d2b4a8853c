"""What a command prints: third-party chatter (library loggers, Hugging Face progress bars, native libraries) off unless ``--verbose``, progress bars only on a terminal."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

HF_LOGGERS = ("transformers", "huggingface_hub", "filelock", "urllib3", "fsspec")
# Read by the libraries at import (and inherited by worker processes).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "GRPC_VERBOSITY": "ERROR", "GRPC_ENABLE_FORK_SUPPORT": "0", "TRANSFORMERS_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "3"}


def quiet_libraries(loggers: Iterable[str] = HF_LOGGERS, verbose: bool = False) -> None:
    """``loggers`` at ERROR and the libraries' progress bars off; with ``verbose`` the loggers at INFO and nothing else changed."""
    for name in loggers:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if verbose:
        return
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    # Already imported: they read their verbosity and progress-bar switches from the environment then.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def progress_enabled() -> bool:
    """Progress bars redraw in place on a terminal only; in a log file each redraw would be a line."""
    return sys.stderr.isatty()
