"""Reading JSON that other systems send us (webhooks, API bodies): hostile input is a 4xx, never a 5xx.

PostgreSQL text cannot hold NUL. A provider's real payload may carry one (an SMS text, a contact's message), so
webhooks strip the ``\\u0000`` escapes before parsing; raw NUL bytes, bytes that are not UTF-8, and nesting deeper
than the parser's recursion limit are refused as not JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.utils.translation import gettext as _

from common.exceptions import InvalidInput

# A \u0000 escape is preceded by an even number of backslashes (an odd number escapes the backslash itself).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000", re.IGNORECASE)


def strip_nul(text: str) -> str:
    """The JSON text without its NUL characters (``\\u0000`` escapes), every other escape kept."""
    if "\\u0000" not in text.lower():
        return text
    return _NUL_ESCAPE.sub(r"\1", text)


def parse_json_body(raw: bytes, *, strip_nuls: bool = False) -> Any:
    """Parse a request body; InvalidInput (field "body") when it is not UTF-8 JSON a database can store."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(_("The body is not UTF-8."), field="body") from None
    if strip_nuls:
        text = strip_nul(text)
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInput(_("The body is nested too deeply."), field="body") from None
    except ValueError:
        raise InvalidInput(_("The body is not JSON."), field="body") from None
