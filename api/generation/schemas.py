"""The generation HTTP contract: a prompt and its sampling, and the JSON form of the image."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.core.text import clean_text
from service.deployments.contract import (
    MAX_GENERATION_STEPS,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    MAX_SIDE,
    MIN_SIDE,
)
from service.erasures.contract import MAX_SEED

Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS),
                   AfterValidator(lambda v: clean_text(v, multiline=True, allow_zwj=True))]


class GenerateRequest(BaseModel):
    """Defaults come from the model (the bundled tiny model: 32x32, 8 steps, guidance 1.0)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prompt": "a red circle",
                                                                               "seed": 7}]})

    prompt: Prompt = Field(description=f"At most {MAX_PROMPT_TOKENS} tokens of the model's tokenizer")
    negative_prompt: Prompt | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=MAX_GENERATION_STEPS)
    width: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE, description="A multiple of 16")
    height: int | None = Field(None, ge=MIN_SIDE, le=MAX_SIDE, description="A multiple of 16")
    guidance_scale: float | None = Field(None, ge=0, le=MAX_GUIDANCE, allow_inf_nan=False)


class GenerateResult(BaseModel):
    image_base64: str = Field(description="PNG")
    media_type: Literal["image/png"] = "image/png"
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    patch_version: int = Field(description="The safety patch deployment applied; 0: the base model")
    erasure_ids: list[str]
    guarded: list[str] = Field(default_factory=list, description="Takedowns whose guard replaced words of the "
                               "prompt by the concept's anchor (ZERASE_GUARD_ACTION=anchor); also header "
                               "X-Takedown-Guard")
