"""Field types shared by the request bodies: free text as every domain accepts it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from service.core.text import clean_text
from service.erasures.contract import MAX_REASON, MAX_TEXT

Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(clean_text)]
Reason = Annotated[str, Field(max_length=MAX_REASON), AfterValidator(lambda v: clean_text(v, multiline=True))]
