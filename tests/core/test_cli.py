"""The documented commands: `zerase erase ... --out` then `zerase generate ... --lora`."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from zerase.artifact import load_artifact
from zerase.cli import app

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
