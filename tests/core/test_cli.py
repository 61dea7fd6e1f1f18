"""The documented commands: `zerase erase ... --out` then `zerase generate ... --lora`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from zerase.cli import app
from zerase.patch.artifact import load_artifact

runner = CliRunner()


def test_erase_then_generate_with_the_artifact(tmp_path):
    art = tmp_path / "red.safetensors"
    result = runner.invoke(app, ["erase", "red", "--preserve", "blue", "--preserve", "green", "--steps", "3",
                                 "--out", str(art)])
    assert result.exit_code == 0, result.output
    meta = load_artifact(art).metadata
    assert meta["concept"] == "red" and "a blue circle" in meta["preservation"] and "blue" in meta["preservation"]

    png = tmp_path / "one.png"
    result = runner.invoke(app, ["generate", "a red circle", "--lora", f"{art}:1.0", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert Image.open(png).size == (32, 32)

    folder = tmp_path / "many"
    result = runner.invoke(app, ["generate", "a red circle", "--seed", "5", "--num-images", "3",
                                 "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["seed-5.png", "seed-6.png", "seed-7.png"]
    assert json.loads(result.stdout.strip().splitlines()[-1])["seeds"] == [5, 6, 7]


def test_unknown_category_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["erase", "red", "--category", "bogus", "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code != 0
    assert "unknown category" in str(result.exception) + result.output


# The `zerase` command as installed (cli.main): a user's mistake is one line and exit code 2.
def zerase(args: list[str], **env: str) -> Result:
    from cli.main import app as zerase_app
    from service.core.settings import get_settings

    get_settings.cache_clear()  # settings are read once per process; each run here is a new "process"
    try:
        return runner.invoke(zerase_app, args, env=env)
    finally:
        get_settings.cache_clear()


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zerase: error: "), result.stderr
    return lines[0]


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "x.safetensors")]
    line = one_line_error(zerase(["erase", "Zed", "--category", "celebrities", *out]))
    assert "unknown category 'celebrities'" in line and "celebrity" in line

    # A device torch cannot use is named as the user set it, before the model loads.
    line = one_line_error(zerase(["erase", "Zed", *out], ZERASE_DEVICE="cdua"))
    assert "ZERASE_DEVICE 'cdua'" in line

    # A setting read by the service's Settings is named by its variable, not its field.
    line = one_line_error(zerase(["keys", "list"], ZERASE_DTYPE="bf16", ZERASE_VAR_DIR=str(tmp_path)))
    assert line.startswith("zerase: error: ZERASE_DTYPE='bf16': Input should be 'float32', 'bfloat16'")

    # --debug (or ZERASE_DEBUG=1) keeps the traceback.
    result = zerase(["--debug", "erase", "Zed", "--category", "celebrities", *out])
    assert isinstance(result.exception, ValueError) and "unknown category" in str(result.exception)
    result = zerase(["erase", "Zed", "--category", "celebrities", *out], ZERASE_DEBUG="1")
    assert isinstance(result.exception, ValueError)


def test_loading_the_model_prints_no_deprecation_warning_or_progress_bars(capfd: pytest.CaptureFixture[str]) -> None:
    import torch

    from zerase.model.pipeline import load_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_pipeline(dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16  # the dtype still reaches from_pretrained
    assert not [w for w in caught if "dtype" in str(w.message)], [str(w.message) for w in caught]
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err
