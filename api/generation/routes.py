"""/generate: an image from a prompt, with the active safety patch applied (PNG, or JSON on request)."""

from __future__ import annotations

import base64
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse, Response

from api.auth import ActorDep, require
from api.deps import GeneratorDep
from api.generation.schemas import GenerateRequest, GenerateResult
from api.openapi import problems
from service.deployments.contract import GUARD_HEADER, PATCH_HEADER
from service.deployments.serving import GenerationRequest
from service.keys.contract import Role

router = APIRouter(tags=["generation"], dependencies=[Depends(require(Role.GENERATOR))],
                   responses=problems(401, 403))


@router.post("/generate", name="generate", response_class=Response, responses={
    200: {"content": {"image/png": {}, "application/json": {"schema": GenerateResult.model_json_schema()}},
          "description": f"The image; header {PATCH_HEADER} names the deployment applied (0: base model)"},
    **problems(422, 429, 503)})
def generate(body: GenerateRequest, generator: GeneratorDep, actor: ActorDep,
             accept: Annotated[str, Header()] = "image/png") -> Response:
    # A sync route: FastAPI runs it in its threadpool, so sampling never blocks the event loop. Its database
    # session was released after authentication: waiting for the model holds no connection.
    result = generator.generate(GenerationRequest(**body.model_dump()), key_id=actor.key_id)
    png = png_bytes(result.image)
    headers = {PATCH_HEADER: str(result.patch_version)}
    if result.guarded:  # the prompt was served with a guarded concept's words replaced by its anchor
        headers[GUARD_HEADER] = ",".join(result.guarded)
    if not _wants_json(accept):
        return Response(png, media_type="image/png", headers=headers)
    out = GenerateResult(image_base64=base64.b64encode(png).decode(), seed=result.seed, width=result.width,
                         height=result.height, steps=result.steps, guidance_scale=result.guidance_scale,
                         patch_version=result.patch_version, erasure_ids=list(result.erasure_ids),
                         guarded=list(result.guarded))
    return JSONResponse(out.model_dump(mode="json"), headers=headers)


def _wants_json(accept: str) -> bool:
    """JSON only when asked for and preferred to PNG (highest q, then order)."""
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = next((float(p[2:]) for p in params if p.startswith("q=") and _is_float(p[2:])), 1.0)
        ranked.append((-q, i, media.lower()))
    for _, _, media in sorted(ranked):
        if media in ("application/json", "image/png", "image/*", "*/*"):
            return media == "application/json"
    return False


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
