"""Start-up checks of the command line: a misspelt ZERASE_* variable is named with the setting it was
probably meant to be (pydantic-settings ignores it silently), and the model a process will load is checked
before it serves or consumes anything (`zerase serve` said ready with a model directory that was not there)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from service.core.settings import Settings

PREFIX = str(Settings.model_config.get("env_prefix", ""))
# ZERASE_* variables that are not settings: the command line's own, and what the test suite reads.
NOT_SETTINGS = frozenset({"ZERASE_API_KEY", "ZERASE_DEBUG", "ZERASE_SCREENSHOTS"})
NOT_SETTINGS_PREFIXES = ("ZERASE_TEST_",)


class StartupError(ValueError):
    """A setting that keeps this process from doing its job: one line (cli.errors), exit code 2."""


def setting_names() -> list[str]:
    return [f"{PREFIX}{name}".upper() for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> list[str]:
    """A warning per ZERASE_* name (in the environment or `.env`) that no setting reads, with the closest
    setting's name when one is close."""
    names: Iterable[str] = (environ if environ is not None else os.environ).keys()
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values  # pydantic-settings reads `.env` with it too

        names = [*names, *dotenv_values(env_file).keys()]
    known = setting_names()
    warnings = []
    for name in sorted({n.upper() for n in names}):
        if not name.startswith(PREFIX.upper()) or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        # Compared without the prefix they all share, which would make any two names look alike.
        close = difflib.get_close_matches(name[len(PREFIX):], [k[len(PREFIX):] for k in known], n=1)
        hint = f"; did you mean {PREFIX.upper()}{close[0]}?" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def check_model(settings: Settings, runs_model: bool) -> None:
    """Raise StartupError naming the variable and the path when the model directory cannot be loaded, and
    (where this process runs the model, so torch is imported anyway) when ZERASE_DEVICE is not usable."""
    problems = [settings.model_problem(), settings.device_problem() if runs_model else None]
    found = [p for p in problems if p]
    if found:
        raise StartupError("; ".join(found))


def evaluator_warning(settings: Settings) -> str | None:
    """A warning when no evaluator can read this model's images: every job's evaluation is then skipped, and the
    deploy gate refuses every deploy unless an admin forces it. Torch-free: a profile with its own evaluator (the
    bundled world's probe) says so by overriding `ModelProfile.evaluator`."""
    from zerase.model.profiles import ModelProfile, profile_for

    if settings.model_problem() is not None:
        return None  # check_model names that
    profile = profile_for(settings.model_dir)
    if type(profile).evaluator is not ModelProfile.evaluator or settings.clip_dir is not None:
        return None
    return (f"no evaluator reads this model's images (ZERASE_MODEL_DIR={settings.model_dir}): every job's "
            "evaluation will be skipped and the deploy gate will refuse every deploy unless an admin forces it; "
            "set ZERASE_CLIP_DIR to a local CLIPModel directory (NudeNet covers the nudity category only)")
