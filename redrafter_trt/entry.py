"""The process's entry (the `redrafter-trt` console script, `python -m redrafter_trt`): a Ctrl-C while the CLI
imports (click, the group: a third of a second) is the one line "interrupted" and exit 130, not a traceback; and the
command runs as the process's own (`interrupts.own_process`). Light: only the standard library at import."""

import sys


def main() -> None:
    try:
        from . import interrupts

        interrupts.own_process()  # before the command's imports (its exit handler runs after theirs)
        from .cli import main as group
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    group()
