"""Free text from clients (concepts, names, reasons, prompts): what is refused everywhere."""

from __future__ import annotations

import re
import unicodedata

# Bidirectional overrides and isolates can make a logged concept read differently from what it is.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(value: str, *, multiline: bool = False) -> str:
    """Strip surrounding whitespace; refuse empty text and control characters."""
    for ch in value:
        if (unicodedata.category(ch) in ("Cc", "Cs") and not (multiline and ch in "\n\t")) or ch in _BIDI:
            raise ValueError(f"must not contain control characters (found U+{ord(ch):04X})")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty or only whitespace")
    return value


def normalized(text: str) -> str:
    """The form two texts are compared in: whitespace runs collapsed, casefolded."""
    return re.sub(r"\s+", " ", text).strip().casefold()
