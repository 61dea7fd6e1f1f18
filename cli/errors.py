"""A user's mistake is one line and exit code 2; a traceback only with `--debug` (or ZERASE_DEBUG=1).

Done once, around the whole command tree (`UserErrors`, the root group's class), not per command: a setting
the environment got wrong names its variable, a domain's refusal (a ValueError such as an unknown category,
a missing pipeline directory, a service error) prints its message. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

USAGE_EXIT = 2  # click's exit code for a usage error


class UserErrors(TyperGroup):
    # ctx: a click Context (newer typer vendors click as typer._click, older uses click itself). Click's own
    # exceptions (a usage error, Exit) are none of the kinds user_message knows, so they pass through.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = user_message(exc)
            if message is None or ctx.params.get("debug"):
                raise
            typer.echo(f"zerase: error: {message}", err=True)
            raise typer.Exit(USAGE_EXIT) from None


def user_message(exc: BaseException) -> str | None:
    """The one line for an error the user can fix; None for a bug (it keeps its traceback)."""
    from cli.startup import StartupError
    from service.core.errors import DomainError

    if isinstance(exc, ValidationError):
        return settings_message(exc) if exc.title == "Settings" else _fields_message(exc)
    if isinstance(exc, StartupError | DomainError):
        return str(exc)
    if isinstance(exc, ValueError | FileNotFoundError):  # usually the user's input; a bug raises them too
        return f"{exc} (--debug for the traceback)"
    return None


def settings_message(exc: ValidationError) -> str:
    """Each error under the environment variable that set it: ZERASE_DTYPE='bf16': Input should be ..."""
    from service.core.settings import Settings, redact_url

    prefix = str(Settings.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors():
        msg = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a model-level check names its variables itself
            parts.append(msg)
            continue
        name = f"{prefix}{error['loc'][0]}".upper()
        value = error.get("input")
        if "SECRET" in name or "PASSWORD" in name:
            value = "***"
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        parts.append(msg if name in msg else f"{name}={value!r}: {msg}")
    return "; ".join(parts)


def _fields_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg']}" for e in exc.errors())
