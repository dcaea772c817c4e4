"""Ctrl-C and SIGTERM held back over a block that must run whole: an optimizer update and the save of its state
(train), the line that says an earlier run's state is removed and its removal, the renames that put an output in
place of the one it replaces (output.py), the import of torch (the CLI: a stop there could abort the process); and,
once train's drafter is written, a stop while the process exits ends it as a finished run
(`stop_at_exit_as_finished`). A light module: output.py imports it.

    with uninterrupted():
        dest.rename(old); tmp.rename(dest)  # a Ctrl-C meanwhile is delivered here, after both
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading

STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill` (the CLI raises KeyboardInterrupt on it too)
_process = False  # the command is the process's own (entry.py: `redrafter-trt`, `python -m redrafter_trt`)
_finished = False  # what the process does is done (stop_at_exit_as_finished)
_kept_code: int | None = None  # the exit code the CLI decided (exit_keeping)


def own_process() -> None:
    """Note that the command runs as the process itself, not called by a caller keeping its own handlers. Called
    before the command's imports: its exit handler then runs after theirs (atexit runs the last registered first)."""
    global _process
    _process = True
    atexit.register(_ignore_stops_once_finished)


def _ignore_stops_once_finished() -> None:
    """The process's last exit handler: after it the interpreter resets the signal handlers set from Python to the
    default and tears its modules down (2 s after a tiny train, torch's), where a stop was the signal's death (143,
    130). A finished run (or any command once its exit code is decided: exit_keeping) ignores them there (an ignored
    signal stays ignored): it exits as it was going to."""
    if _finished:
        for sig in STOPS:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def uninterrupted():
    """Hold Ctrl-C and SIGTERM back until the block has run (in the main thread, the only one signals reach), then
    deliver them to the usual handler (KeyboardInterrupt): what the block does is done whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.getsignal(sig) for sig in STOPS}
    held = [sig for sig, handler in previous.items() if handler is not None]  # None: not set from Python
    for sig in held:
        signal.signal(sig, lambda signum, _: caught.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, previous[sig])
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)  # delivered now, to the usual handler (KeyboardInterrupt)


def stop_at_exit_as_finished(note: str) -> None:
    """Once what the process does is done (train's drafter written): a Ctrl-C or SIGTERM while the interpreter shuts
    down (torch's teardown, half a second; an exit handler that hangs) says `note` and ends the process at once with
    exit 0, where it was exit 130, a traceback from an atexit callback, or the signal's death (143); after the last
    exit handler, as the interpreter tears down, it is ignored (`_ignore_stops_once_finished`). Set at once where
    the command is the process's own (`own_process`): set at exit, a SIGTERM after the command's end, before the
    interpreter ran its exit handlers (its threads joined first), was the signal's death. Otherwise set as the
    interpreter starts its exit (an atexit callback, run before those registered earlier: torch's), so an in-process
    caller keeps its own handlers until then."""
    if _process and threading.current_thread() is threading.main_thread():
        _stop_as_finished(note)
    else:
        atexit.register(_stop_as_finished, note)


def exit_keeping(code: int) -> None:
    """sys.exit(code), the command's exit code decided (the CLI's last step): where the command is the process's own
    (`own_process`), a Ctrl-C or SIGTERM in the interpreter's exit handlers (torch's teardown) says so and ends the
    process with `code`, where it was the signal's death (143; a KeyboardInterrupt traceback from an exit handler,
    exit 130) after a finished convert or run, or after a one-line error's exit 2. Set as the exit handlers start
    (`_keep_code_at_exit`, registered last: run first), so a caller that catches the SystemExit (runpy) keeps its own
    handlers. A finished train's own note (stop_at_exit_as_finished, set as its drafter was written) stays."""
    global _kept_code
    if _process and not _finished:
        _kept_code = code
        atexit.unregister(_keep_code_at_exit)
        atexit.register(_keep_code_at_exit)
    sys.exit(code)


def _keep_code_at_exit() -> None:
    if not _finished and _kept_code is not None:
        _stop_as_finished(f"interrupted as the process exited: its exit code {_kept_code} stands", _kept_code)


def _stop_as_finished(note: str, code: int = 0) -> None:
    global _finished
    _finished = True

    def stop(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # closed, or a reader gone
                stream.flush()
        with contextlib.suppress(OSError):
            os.write(2, f"{note}\n".encode(errors="replace"))
        os._exit(code)

    for sig in STOPS:
        signal.signal(sig, stop)
