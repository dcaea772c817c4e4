"""Typed errors. Library code raises these; the CLI turns them into one line on stderr and exit code 2.

Every message names the problem and the fix, in one line.
"""

import json
import os
import re
import sys


class RedrafterError(Exception):
    """Bad input or environment: the user can fix it. The CLI prints it and exits 2."""


class ConfigError(RedrafterError):
    """A config.json, option or preset is wrong or inconsistent."""


class TensorError(RedrafterError):
    """Tensors are missing, unexpected, misshapen, corrupt or non-finite."""


class CorruptFileError(TensorError):
    """A file's bytes are not a whole file of its format (cut short by a copy broken off or a full disk, bit rot): no
    process can read it, unlike a file this one could not open (another user's, an I/O error of this host)."""


class PeerError(RedrafterError):
    """Another torchrun rank is gone (it failed with its own error, or was killed): this one cannot go on."""


class TokenizerError(ConfigError):
    """transformers cannot load a tokenizer from a folder (the message: its reason, in one line)."""


class DependencyError(RedrafterError):
    """An optional dependency (TensorRT-LLM, modelopt, gguf) is not installed."""


def name_list(names, limit: int = 8) -> str:
    """`a, b, c (+5 more)`: short enough for a one-line error."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def cuda_index_past(device: str, count: int, given: str | None = None) -> str:
    """The refusal of a device `cuda:N` past the `count` GPUs visible (train's, bench's and acceptance's `--device`,
    and the runtime's `device` in the Python API). given: the device as the caller wrote it (`device='cuda:7'`);
    None: `--device cuda:7`."""
    from .plural import are, counted

    choices = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
    given = f"--device {device}" if given is None else given
    return f"{given} but only {counted(count, 'CUDA device')} {are(count)} visible: pass {choices}"


def first_line(error: BaseException | str, fallback: str, limit: int = 120) -> str:
    """The first line of an exception's message (or a text), or `fallback` when it has none. A line past `limit` characters is
    its first sentence where that fits (torch's refusal of an unsafe pickle: 'Weights only load failed.'), else its
    words up to `limit` and an ellipsis: cut at a length, it ended mid-word ('... in `torch.load` fr')."""
    text = str(error).strip()
    if not text:
        return fallback
    line = text.splitlines()[0]
    if len(line) <= limit:
        return line
    if (sentence := re.match(r".*?[.!?](?=\s)", line)) and len(sentence[0]) <= limit:
        return sentence[0]
    return line[:limit].rsplit(" ", 1)[0] + "…"


def dangling_link(path) -> str | None:
    """The refusal of a file that is a symbolic link to nothing (None when `path` is not one): `ls` lists it, so
    "missing" would mislead. A Hugging Face cache snapshot is relative links into ../../blobs, which `cp -r` copies
    as links."""
    import os
    from pathlib import Path

    path = Path(path)
    if not path.is_symlink() or path.exists():
        return None
    return (f"{path} is a symbolic link to {os.readlink(path)}, which does not exist (links copied without their "
            f"files, as `cp -r` copies a Hugging Face cache snapshot): copy it with `cp -rL`, or re-download it")


def check_input_file(path, what: str, fix: str) -> None:
    """Refuse an input file that is not a regular file: `{what} PATH is a folder` / `does not exist`, then `fix`; a
    pipe or device (`--input-file <(jq ...)` passes /dev/fd/63, which exists) is named as one, not as missing, and a
    symbolic link to nothing with its target (dangling_link)."""
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        return
    if link := dangling_link(path):
        raise ConfigError(f"{what} {link}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a pipe or device, not a file (as `<(...)` makes): save its text in a file "
                          f"and pass that")
    raise ConfigError(f"{what} {path} {'is a folder' if path.is_dir() else 'does not exist'}: {fix}")


def read_text(path, fix: str) -> str:
    """A user's text file as UTF-8 (a leading byte-order mark, as some Windows editors write, dropped), or a
    ConfigError naming why it cannot be read and `fix`."""
    from pathlib import Path

    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1  # a byte offset alone is no help in a file of a million lines
        raise ConfigError(f"{path} is not UTF-8 text (line {line}, byte {e.start}): {fix}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror or type(e).__name__}): {fix}") from None


NESTED_TOO_DEEPLY = "lists or objects nested too deeply to read"  # json and yaml read nesting recursively
# a JSON value opening or closing, or a string (skipped: brackets inside one are text)
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def number_too_long(digits: int) -> str:
    """A number past what Python's int() reads (sys.get_int_max_str_digits(), 4300), which json and yaml give as a
    ValueError that is no parse error."""
    return f"a number too long to read: {digits} digits, over Python's {sys.get_int_max_str_digits()}"


def long_number(text: str) -> re.Match | None:
    """The first run of digits in `text` past what int() reads (`number_too_long`), or None."""
    limit = sys.get_int_max_str_digits()
    return re.search(r"\d{%d,}" % (limit + 1), text) if limit else None


class UnreadableJSON(json.JSONDecodeError):
    """JSON, maybe valid, that Python's json cannot read (`json_loads`): a reader suggesting another format for text
    that is no JSON suggests none for it."""


def json_loads(text: str | bytes):
    """json.loads, the one way the project parses JSON it is given: text it cannot read is always a JSONDecodeError
    (whose msg, line and position name why and where; an UnreadableJSON for the two below), so a reader's `except
    json.JSONDecodeError` names every problem. json.loads itself raises RecursionError for lists or objects nested
    past the recursion limit and a bare ValueError for an integer past int()'s digit limit (`number_too_long`): both
    were tracebacks (a review fuzzing the CLI's readers). Bytes are decoded as json.loads decodes them (a
    UnicodeDecodeError where they are no text)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as e:
        if isinstance(e, UnicodeDecodeError):
            raise
        if isinstance(text, (bytes, bytearray)):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        if isinstance(e, RecursionError):
            raise UnreadableJSON(NESTED_TOO_DEEPLY, text, _deepest(text)) from None
        if (number := long_number(text)) is None:
            raise
        raise UnreadableJSON(number_too_long(len(number[0])), text, number.start()) from None


def _deepest(text: str) -> int:
    """Where the JSON text's nesting first reaches its deepest (an index: the bracket's)."""
    depth = deepest = at = 0
    for token in _JSON_NESTING.finditer(text):
        if token[0] in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, token.start()
        elif token[0] in "]}":
            depth -= 1
    return at


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Typed config fields: (what the value must be, check). Config readers build their tables from these.
INTEGER = ("an integer", _whole)
POSITIVE_INT = ("a positive integer", lambda v: _whole(v) and v > 0)
COUNT = ("an integer >= 0", lambda v: _whole(v) and v >= 0)
FLAG = ("true or false", lambda v: isinstance(v, bool))
NUMBER = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
SEED = ("an integer in 0..2**63-1", lambda v: _whole(v) and 0 <= v < 2 ** 63)  # what torch.Generator.manual_seed takes
DEVICE = ("cpu, cuda or cuda:N", lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None)
PATH = ("a path (str or os.PathLike)", lambda v: isinstance(v, (str, os.PathLike)))
# a drafter's ResBlocks, read from a config: 1024 is far past any (Apple's have 2; train and init-drafter make at most
# 64), so more is a hand edit, which would have checks name billions of missing tensors and FP8 exclusions
LAYER_COUNT = ("an integer within 0..1024", lambda v: _whole(v) and 0 <= v <= 1024)
POSITIVE_NUMBER = ("a positive finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                   and 0 < v < float("inf"))  # NaN fails both comparisons


def optional(rule: tuple) -> tuple:
    """The rule, or null."""
    need, ok = rule
    return f"null or {need}", lambda v: v is None or ok(v)


def check_types(owner: str, values: dict, rules: dict) -> None:
    """Refuse the first of `values` (name -> value) that its entry in `rules` (name -> a rule above) does not take:
    `{owner} {name}={value!r}: it must be {what}` (a script's 8.0 or "3", which the CLI's typed options never pass)."""
    for name, (need, ok) in rules.items():
        if not ok(values[name]):
            raise ConfigError(f"{owner} {name}={values[name]!r}: it must be {need}")
