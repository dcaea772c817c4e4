"""Swap the names of two paths in one step: Linux's renameat2 with RENAME_EXCHANGE (glibc 2.28+, kernel 3.15+).
`--force` puts a new output in place of the earlier one with it, so that the output's name holds a whole output at
every instant: two renames (the earlier output aside, then the new one in) left no output there between them, seen by
a reader then (trtllm-build, a server loading it) and left so by a kill -9 until the next run put the earlier one
back. Elsewhere (macOS, Windows, a file system without it) the caller renames in two steps.

    if not exchanged(new, dest):
        dest.rename(old); new.rename(dest)
"""

from __future__ import annotations

import ctypes
import os
import sys

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2():
    """libc's renameat2, or None where there is none (not Linux, an older C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def exchanged(a: os.PathLike | str, b: os.PathLike | str) -> bool:
    """Swap what the names `a` and `b` (both existing, on one file system) hold, atomically; False where it could not
    be done this way (no renameat2, a file system without RENAME_EXCHANGE: EINVAL, or any other failure, which the
    caller's own renames then meet and name), and nothing was changed."""
    if _RENAMEAT2 is None:
        return False
    return _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
