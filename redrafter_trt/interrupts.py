"""Ctrl-C and SIGTERM held back over a block that must run whole: an optimizer update and the save of its state
(train), the line that says an earlier run's state is removed and its removal, the renames that put an output in
place of the one it replaces (output.py). A light module: output.py imports it.

    with uninterrupted():
        dest.rename(old); tmp.rename(dest)  # a Ctrl-C meanwhile is delivered here, after both
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill` (the CLI raises KeyboardInterrupt on it too)


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


def ignore_stops() -> Callable[[], None]:
    """Ignore Ctrl-C and SIGTERM from now on, once what they would stop is done (train's drafter written); returns what
    puts the handlers before back (an in-process caller's: a test's CliRunner)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOPS}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items() if handler is not None]
