"""The generate playground: a prompt's image under the active version (the version shown); admins also
see the base model's image beside it."""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.render import render
from api.console.session import FormOf, Page, User
from api.deps import SettingsDep, get_generator
from api.generation.routes import png_bytes
from api.generation.schemas import GenerateRequest
from service.core.errors import DomainError
from service.deployments import service as deployments
from service.deployments.serving import GenerationRequest
from service.keys.contract import Role

router = APIRouter()
Generator = Annotated[User, Depends(Page(Role.GENERATOR))]
GeneratorForm = Annotated[User, Depends(FormOf(Role.GENERATOR))]


@router.get("/playground", name="console-playground")
def playground(request: Request, user: Generator, settings: SettingsDep) -> Response:
    return _page(request, user, settings, {"prompt": "", "seed": "0"}, {}, None)


@router.post("/playground", name="console-generate")
def generate(request: Request, user: GeneratorForm, settings: SettingsDep,
             prompt: Annotated[str, Form()] = "", seed: Annotated[str, Form()] = "0") -> Response:
    values = {"prompt": prompt, "seed": seed}
    if settings.api_routes == "control":
        return _page(request, user, settings, values, {"prompt": "this service runs no model: generation is a "
                                                       "separate service (ZERASE_API_ROUTES=generation)"}, None, 503)
    generator = get_generator(request)
    try:
        body = GenerateRequest.model_validate({"prompt": prompt, "seed": seed.strip() or 0})
        asked = GenerationRequest(**body.model_dump())
        result = generator.generate(asked, key_id=user.session.actor.key_id)
        base = generator.generate_base(asked, key_id=user.session.actor.key_id) if user.role == Role.ADMIN else None
    except ValidationError as exc:
        return _page(request, user, settings, values, {str(e["loc"][0]): e["msg"] for e in exc.errors()}, None, 422)
    except DomainError as exc:
        return _page(request, user, settings, values, {exc.field or "prompt": str(exc)}, None, 422)
    images = {"version": result.patch_version, "erasure_ids": result.erasure_ids, "patched": _data_url(result.image),
              "base": _data_url(base.image) if base is not None else None, "seed": result.seed}
    return _page(request, user, settings, values, {}, images)


def _page(request: Request, user: User, settings: object, values: dict[str, str], errors: dict[str, str],
          images: dict[str, object] | None, status: int = 200) -> Response:
    active = deployments.active_row(user.db).version or 0
    return render(request, "playground.html", user, status_code=status, values=values, errors=errors, images=images,
                  active=active)


def _data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
