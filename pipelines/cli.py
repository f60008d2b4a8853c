"""Command-line behaviour shared by the pipeline entry points: user errors, stage failures, Ctrl-C, quiet logs.

- :class:`UserError` (a wrong path, a missing flag, an unknown teacher): one line ``error: …`` on
  stderr, exit code 2, no traceback (``--debug`` re-raises it with the traceback).
- :class:`StageFailed` (a stage produced nothing, or rejected too much of its input): its summary,
  exit code 1.
- Ctrl-C: one line ``interrupted; <what is left on disk>``, exit code 130.
- Logging: our own INFO lines; Beam's, gRPC's, absl's and transformers' chatter only with
  ``--verbose``. Beam worker processes (DirectRunner multi_processing) write to a log file instead of
  the console (:func:`worker_output`), so their start-up lines and their tracebacks on Ctrl-C stay there.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, NoReturn

from ssga_io.console import HF_LOGGERS, progress_enabled, quiet_libraries  # noqa: F401  (progress_enabled: the pipelines' import)

# A root handler before Beam is imported: an import-time ``logging.warning`` ("apitools not found")
# would otherwise install a default handler of its own and print. setup_logging() replaces it.
if not logging.getLogger().handlers:
    logging.getLogger().addHandler(logging.NullHandler())

log = logging.getLogger("pipelines.cli")

EXIT_STAGE_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
NOISY_LOGGERS = ("apache_beam", "absl", "grpc", "distributed", *HF_LOGGERS)

_state: list[str] = []
_verbose = False


class UserError(ValueError):
    """A mistake in the command line or the inputs: the message says what is wrong and how to fix it."""


class StageFailed(Exception):
    """A stage completed but its output is unusable (empty, or mostly rejected); the message is the summary."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UserError` (one line, exit 2) rather than usage + message.

    No abbreviations: unknown flags go on to Beam, and Dataflow's ``--region=us-central1`` would
    otherwise be taken for a prefix of our ``--regions`` (silently replacing the region source).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def parse_teacher_args(ap: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    """``--teacher-arg K=V`` flags as a dict; a flag without ``=`` is a usage error (``ap.error``)."""
    out: dict[str, str] = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--teacher-arg expects K=V, got {kv!r}")
        out[k] = v
    return out


def add_common_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of user errors")
    ap.add_argument("--verbose", action="store_true", help="show Beam's, gRPC's and transformers' own log lines (and worker output)")


def note_state(text: str) -> None:
    """What is on disk right now, for the Ctrl-C line (the last note wins)."""
    _state[:] = [text]


def setup_logging(verbose: bool = False) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    quiet_libraries(NOISY_LOGGERS, verbose)  # also the environment Beam's worker processes inherit
    # The job service relays every worker log line, CRITICAL ones with a traceback when a worker is
    # stopped by Ctrl-C; the workers' own output (the log file of worker_output) has them all.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.INFO if verbose else logging.CRITICAL + 1)


@contextlib.contextmanager
def worker_output(log_dir: str | None) -> Iterator[str | None]:
    """Send what Beam's worker processes print (they inherit file descriptor 2) to a log file.

    Our own log lines keep going to the console. With ``--verbose`` (or no ``log_dir``, e.g. a remote
    output) nothing changes. Yields the log file path.
    """
    if _verbose or not log_dir or "://" in log_dir:
        yield None
        return
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, f"beam-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    console = os.fdopen(os.dup(saved), "w", buffering=1)
    swapped = []
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h.stream, "fileno", None):
            try:
                if h.stream.fileno() == 2:
                    swapped.append((h, h.setStream(console)))
            except (OSError, ValueError):
                pass
    try:
        yield path
    finally:
        for h, old in swapped:
            h.setStream(old)
        console.flush()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        console.close()


def run_cli(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run ``main(argv)``, turning user errors, stage failures and Ctrl-C into one message and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _state.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
    try:
        main(argv)
    except UserError as e:
        if debug:
            raise
        _fail(f"error: {e}", EXIT_USER_ERROR)
    except StageFailed as e:
        if debug:
            raise
        _fail(f"failed: {e}", EXIT_STAGE_FAILED)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted; " + (_state[0] if _state else "nothing was written"), EXIT_INTERRUPTED)


def _interrupt(signum: int, frame) -> None:
    """Ctrl-C: silence the libraries first (Beam's runner threads log their shutdown errors with
    tracebacks while the interrupt unwinds), then interrupt as Python does."""
    if not _verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    signal.default_int_handler(signum, frame)


def _fail(message: str, code: int) -> NoReturn:
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


@contextlib.contextmanager
def as_user_errors(*types: type[BaseException], hint: str = "") -> Iterator[None]:
    """Exceptions of ``types`` raised while checking a configuration (before any work) are the user's."""
    try:
        yield
    except types as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):
            msg = f"missing {msg}"
        raise UserError(f"{msg}{'; ' + hint if hint else ''}") from e
