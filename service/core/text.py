"""Free text from clients (concepts, names, reasons, prompts): what is refused everywhere.

Text is NFC-normalised, and characters that do not show are refused: controls, format characters
(zero-width spaces and joiners, bidi marks, Unicode tags), surrogates and noncharacters. Otherwise
"Mira" and "Mira<ZWSP>" would be two concepts that look the same in every list and log.
"""

from __future__ import annotations

import re
import unicodedata

# Emoji sequences (👩‍💻) need the zero-width joiner: prompts may keep it, names and concepts may not.
_ZWJ = "\u200d"


def _invisible(ch: str, multiline: bool, allow_zwj: bool) -> bool:
    category = unicodedata.category(ch)
    if category == "Cc":
        return not (multiline and ch in "\n\t")
    if category == "Cf":
        return not (allow_zwj and ch == _ZWJ)
    code = ord(ch)
    return category == "Cs" or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE  # noncharacters


def clean_text(value: str, *, multiline: bool = False, allow_zwj: bool = False) -> str:
    """NFC, surrounding whitespace stripped; refuse empty text and characters that do not show."""
    value = unicodedata.normalize("NFC", value)
    for ch in value:
        if _invisible(ch, multiline, allow_zwj):
            name = unicodedata.name(ch, "unnamed")
            raise ValueError(f"must not contain invisible or control characters (found U+{ord(ch):04X} {name})")
    value = value.strip()
    if not value:
        raise ValueError("must not be empty or only whitespace")
    return value


def normalized(text: str) -> str:
    """The form two texts are compared in: NFC, whitespace runs collapsed, casefolded."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().casefold()


# A query or path parameter with no control characters (NUL cannot even be sent to PostgreSQL).
PLAIN_PARAMETER = r"^[^\x00-\x1f\x7f]*$"
