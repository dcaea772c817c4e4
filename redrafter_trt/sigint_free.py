"""The first code of a spawned rank process that no SIGINT handler could be set for (its parent thread is not the main
one): SIGINT is ignored before its work is unpickled, since unpickling imports torch (seconds) and a Ctrl-C to the
process group then printed that rank's KeyboardInterrupt traceback. A light module on purpose: the spawned child
imports it before anything else of this package.

    ctx.Process(target=run_ignoring_sigint, args=(pickle.dumps((fn, args)),), kwargs={"conn": conn})
"""

from __future__ import annotations

import pickle
import signal


def run_ignoring_sigint(payload: bytes, **live):
    """fn(*args, **live) for (fn, args) pickled in `payload`; `live`: what only multiprocessing itself pickles (a
    Connection's handle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fn, args = pickle.loads(payload)
    return fn(*args, **live)
