"""Why a data file's records were skipped, counted by reason: `by_reason`. A reason is the record's refusal
(prompts.conversation_of's ValueError), which names the record's own details (a message number, the bad value's
repr): those are left out to group the records, so one fault across a file is one reason, and cut where said."""

from __future__ import annotations

import re

from ..errors import first_line
from ..plural import counted

REASONS_SAID = 6  # the most common reasons named; the others counted together
# characters of a value a said reason quotes (a record's content can be megabytes), as prompts.tools_of cuts one: past
# the longest shape a refusal writes out as the fix (`tools`' list of definitions, 73)
VALUE_SHOWN = 80
REASON_SHOWN = 400  # characters of a said reason, past its values' cuts (`errors.first_line`): the longest is ~300
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def by_reason(skipped: list[tuple[str, str]]) -> str:
    """`REASON (N records, the first at WHERE); ...` of the (where, reason) of each record skipped, the most common
    reason first: one to fix across the file (a role of another name) stands out from a few broken lines. Records
    are grouped by their reason's `template`, and the first one's reason is said, `cut`: a line of at most about
    REASONS_SAID * (REASON_SHOWN + 50) characters."""
    first: dict[str, tuple[str, str]] = {}
    count: dict[str, int] = {}
    for where, reason in skipped:
        key = template(reason)
        first.setdefault(key, (where, reason))
        count[key] = count.get(key, 0) + 1
    keys = sorted(count, key=lambda key: -count[key])  # stable: of equal counts, the first seen first
    said = [f"{cut(first[key][1])} ({counted(count[key], 'record')}, the first at {first[key][0]})"
            for key in keys[:REASONS_SAID]]
    if rest := keys[REASONS_SAID:]:
        said.append(f"{counted(len(rest), 'other reason')} ({counted(sum(count[k] for k in rest), 'record')})")
    return "; ".join(said)


def template(reason: str) -> str:
    """The reason without its record's details: each quoted value (`value_spans`) and number as `…`."""
    out, at = [], 0
    for start, end in value_spans(reason):
        out += [_NUMBER.sub("…", reason[at:start]), "…"]
        at = end
    return "".join(out) + _NUMBER.sub("…", reason[at:])


def cut(reason: str) -> str:
    """The reason on one line, each quoted value past VALUE_SHOWN characters cut there, and the whole past
    REASON_SHOWN (`errors.first_line`)."""
    out, at = [], 0
    for start, end in value_spans(reason):
        value = reason[start:end]
        out += [reason[at:start], value if len(value) <= VALUE_SHOWN else value[:VALUE_SHOWN] + "…"]
        at = end
    return first_line("".join(out) + reason[at:], "", limit=REASON_SHOWN)


def value_spans(reason: str) -> list[tuple[int, int]]:
    """(start, end) of each value a reason quotes as Python writes it (repr): a string, or a list or dict (whose
    strings may hold brackets and quotes), each opening at the start or after a blank or a bracket (an apostrophe
    within a word opens none). An unclosed one runs to the end."""
    spans, i = [], 0
    while i < len(reason):
        if reason[i] in "'\"[{" and (i == 0 or reason[i - 1] in " ([{:,"):
            end = _literal_end(reason, i)
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def _literal_end(text: str, start: int) -> int:
    """Where the repr opening at `start` ends (past its closing quote or bracket)."""
    depth, quote, i = 0, None, start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
                if not depth:
                    return i + 1
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if not depth:
                return i + 1
        i += 1
    return len(text)
