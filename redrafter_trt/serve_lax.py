"""The reference server's integer, float and bool request fields read as pydantic 2's lax mode reads them from
JSON, as vLLM's and trtllm-serve's request models (pydantic models) do: `"3"`, `3.0` and `true` are an integer field's
3, 3 and 1; `"0.5"`, `" 1e3 "`, `false` and `"nan"` a float field's 0.5, 1000.0, 0.0 and NaN (the fields' checks
refuse NaN and the infinities where a finite number is needed); `"true"`, `"on"` and `1` a bool field's true.

    LAX[int]("7.00") == 7; LAX[float]("1_000.5") == 1000.5; LAX[bool]("Yes") is True; LAX[float]("abc") is None
"""

from __future__ import annotations

import re

LAX_INTEGER = re.compile(r"([+-]?[0-9]+(?:_[0-9]+)*)(?:\.0+)?")  # pydantic's integer text: "3", "+1_000", "7.00"
# pydantic's float text, as Rust's f64 parse reads it (case aside, ASCII only): "1", ".5", "5.", "-1e3", "nan", "inf".
# Each text matches one way: `[0-9]+\.?[0-9]*` split a run of digits between its two parts every way before refusing
# what followed, quadratic in the run ("1" * 40000 + "x": 101 s, holding the GIL)
LAX_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
                       re.ASCII | re.IGNORECASE)
# Unicode's White_Space, what Rust's str::trim takes off a number's text in pydantic (Python's str.strip takes
# \x1c-\x1f off too, which pydantic refuses)
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200b)))


def lax_integer(value):
    """An integer field's value as pydantic's lax mode reads it (vLLM's and trtllm-serve's request models): an int, a
    bool (true is 1), a float without a fraction (3.0 is 3; 3.5 is none), or the text of one (" 4 ", "3.0"); None
    for anything else."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        match = LAX_INTEGER.fullmatch(value.strip(WHITE_SPACE))
        try:
            return int(match.group(1)) if match else None
        except ValueError:  # past Python's digit limit (sys.get_int_max_str_digits)
            return None
    return int(value) if isinstance(value, int) else None


def lax_float(value):
    """A float field's value as pydantic's lax mode reads it (vLLM's and trtllm-serve's request models): a number, a
    bool (true is 1.0), or the text of one (`LAX_FLOAT`) trimmed of whitespace (" 0.5 ") or else, untrimmed, with
    single underscores between its characters taken out ("1_000.5"; not "_1", "1__0", " 1_0 "); None for anything
    else, and for an integer past float's range. NaN and the infinities are read ("nan", "-Infinity"): the fields'
    checks refuse them."""
    if isinstance(value, str):
        text = value.strip(WHITE_SPACE)
        if not LAX_FLOAT.fullmatch(text) and not value.startswith("_") and not value.endswith("_") and (
                "__" not in value):
            text = value.replace("_", "")
        return float(text) if LAX_FLOAT.fullmatch(text) else None
    try:
        return float(value) if isinstance(value, (int, float)) else None
    except OverflowError:  # an integer past float's largest
        return None


# pydantic's bool text, its case aside (ASCII's alone), untrimmed
BOOL_TEXTS = {"1": True, "t": True, "true": True, "y": True, "yes": True, "on": True,
              "0": False, "f": False, "false": False, "n": False, "no": False, "off": False}


def lax_bool(value):
    """A bool field's value as pydantic's lax mode reads it (vLLM's and trtllm-serve's request models): a bool, the
    number 0 or 1 (0.0 and 1.0 too), or `BOOL_TEXTS`'s text in any ASCII case ("True", "ON"; not " true", "2",
    "1.0"); None for anything else."""
    if isinstance(value, str):
        return BOOL_TEXTS.get(value.lower()) if value.isascii() else None  # pydantic folds ASCII's case alone
    return bool(value) if isinstance(value, (int, float)) and value in (0, 1) else None


LAX = {int: lax_integer, float: lax_float, bool: lax_bool}  # a field's kind -> how `parse` reads it
