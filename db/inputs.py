"""What the edges accept: ids and numbers, text and JSON documents, each checked once.

The API, the forms and the CLI all call these checks, so that one bad input gets the
same answer everywhere (a 4xx naming the field, or exit 2), never a database error:

- integers are ASCII digits and fit the schema's integer columns (:data:`MAX_INT`);
- text holds no NUL character and no lone surrogate (PostgreSQL refuses the first,
  UTF-8 cannot encode the second; SQLite would store both);
- a JSON document's size and nesting are bounded before it is parsed.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from typing import Any

import errors

#: Largest value of the schema's integer columns (ids, page numbers, event seqs): they are
#: PostgreSQL ``INTEGER``s; SQLite would hold more, but the schema is the same on both.
MAX_INT = 2**31 - 1
#: Deepest nesting of arrays and objects in a JSON document (the import format needs 3).
MAX_JSON_DEPTH = 32

_DIGITS = re.compile(r"[0-9]+")
#: A JSON string (skipped when counting brackets: brackets inside strings do not nest).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class InputError(errors.InvalidInputError):
    """Raised when an input cannot be used; the message says what to fix, ``field`` where."""


class OutOfRangeError(InputError):
    """Raised when a number is written correctly but lies outside the allowed range."""


class InvalidJsonError(InputError):
    """Raised when a JSON document is too large, too deep, or does not decode.

    Its message completes "the body is ..." or "the file is ...".
    """


def parse_int(raw: str, *, field: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """Return the whole number written in ``raw`` with ASCII digits (spaces around allowed).

    Other digits (``²``, ``٣``), signs, underscores and exponents are refused, and so is
    a number outside ``minimum..maximum`` (by default whatever an integer column holds).

    Raises:
      InputError: naming ``field``, when ``raw`` is not such a number (an
        :class:`OutOfRangeError` when it is one, but out of range).
    """
    text = raw.strip()
    in_range = f"a whole number from {minimum} to {maximum}"
    if not _DIGITS.fullmatch(text):
        raise InputError(f"{field} must be {in_range}, written with digits 0-9", field=field)
    # A long digit string is out of range anyway: no need to convert all of it.
    value = int(text) if len(text) <= len(str(maximum)) + 1 else maximum + 1
    if not minimum <= value <= maximum:
        shown = text if len(text) <= 20 else f"{text[:20]}..."
        raise OutOfRangeError(f"{field} must be {in_range}; got {shown}", field=field)
    return value


def id_in_range(value: int) -> bool:
    """Return whether ``value`` can be an id at all (a row with it may then exist or not)."""
    return 1 <= value <= MAX_INT


def text_problem(value: str) -> str | None:
    """Return what makes ``value`` unstorable as text (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    surrogate = _LONE_SURROGATE.search(value)
    if surrogate:
        return f"contains a lone surrogate (\\u{ord(surrogate.group()):04x}), which is not text"
    return None


def check_text(value: str, *, field: str) -> str:
    """Return ``value`` when it can be stored as text.

    Raises:
      InputError: naming ``field``, when it holds a NUL character or a lone surrogate.
    """
    problem = text_problem(value)
    if problem:
        raise InputError(f"{field} {problem}; remove it", field=field)
    return value


def json_depth(text: str) -> int:
    """Return how deeply arrays and objects nest in the JSON ``text`` (without parsing it)."""
    brackets = _BRACKETS.findall(_JSON_STRING.sub("", text))
    steps = (1 if bracket in "[{" else -1 for bracket in brackets)
    return max(itertools.accumulate(steps), default=0)


def load_json(data: str | bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a JSON document whose size and nesting are checked first.

    Raises:
      InvalidJsonError: when it is larger than ``max_bytes``, nests deeper than
        ``max_depth``, is not UTF-8, or does not decode (the message says where).
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise InvalidJsonError(f"{size:,} bytes long; at most {max_bytes:,} bytes are allowed")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise InvalidJsonError("not UTF-8 text") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise InvalidJsonError(
            f"nested {depth} levels deep; at most {max_depth} levels are allowed"
        )
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise InvalidJsonError(
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except InvalidJsonError:
        raise
    except ValueError:  # int() refuses to convert that many digits
        digits = sys.get_int_max_str_digits()
        raise InvalidJsonError(
            f"not usable JSON: it has a number of more than {digits} digits"
        ) from None


def _no_constant(name: str) -> Any:
    raise InvalidJsonError(f"not valid JSON: {name} is not a JSON number")
