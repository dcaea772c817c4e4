"""Typed errors. Library code raises these; the CLI turns them into one line on stderr and exit code 2.

Every message names the problem and the fix, in one line.
"""


class RedrafterError(Exception):
    """Bad input or environment: the user can fix it. The CLI prints it and exits 2."""


class ConfigError(RedrafterError):
    """A config.json, option or preset is wrong or inconsistent."""


class TensorError(RedrafterError):
    """Tensors are missing, unexpected, misshapen, corrupt or non-finite."""


class DependencyError(RedrafterError):
    """An optional dependency (TensorRT-LLM, modelopt, gguf) is not installed."""


def name_list(names, limit: int = 8) -> str:
    """`a, b, c (+5 more)`: short enough for a one-line error."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
