"""`benchmarks/quality.py --fast`: the quality harness end to end at toy sizes (one concept, two training
steps, one seed, the sampled evaluation). It checks that every method runs and the files are written,
not the numbers: those come from the full run (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.minutes(2.2)  # scheduled first (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"Z-Erase", "Z-Erase, null-space", "Z-Erase, null-space, on-policy", "Z-Erase, preset alone",
           "Z-Erase, concept-differential", "Z-Erase, level λ", "Z-Erase, fixed λ=1", "Z-Erase, on-policy",
           "Z-Erase, null-space 0.999", "Z-Erase, prompt pool", "ESD-u", "AC", "UCE", "naive fine-tuning",
           "token zeroing"}


@pytest.mark.slow
def test_fast_run_writes_every_method_with_its_metrics(tmp_path: Path) -> None:
    # The limit only guards against a hang: on 2 shared cores the run itself took over 300 s.
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--fast", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    data = json.loads((tmp_path / "quality.json").read_text())
    assert {r["method"] for r in data["rows"]} == METHODS
    for row in data["rows"]:
        for key in ("acc_e", "acc_ir", "acc_ir_drop", "ha", "coherence", "attack_success"):
            assert row[key] is not None and -1.0 <= row[key] <= 1.0, (row["method"], key, row[key])
    assert {(s["method"], s["axis"]) for s in data["summary"]} == {(m, "colour") for m in METHODS}
    table = (tmp_path / "quality.md").read_text()
    assert "| colour | Z-Erase |" in table and "coherence" in table
    with Image.open(tmp_path / "grid.png") as grid:  # the unpatched row, then one per method
        assert grid.height == (1 + len(METHODS)) * 32 * 3

    # Each cell is kept as it is done: a run cut short continues where it stopped, redoing only what is missing.
    cells = sorted((tmp_path / "cells").glob("*.json"))
    assert len(cells) == len(METHODS)
    (tmp_path / "cells" / "red__UCE__s0.json").unlink()
    # A cell measured before today's coherence check is rerun after the missing ones.
    stale = tmp_path / "cells" / "red__AC__s0.json"
    stale.write_text(json.dumps({k: v for k, v in json.loads(stale.read_text()).items() if k != "coherence_metric"}))
    # A cell measured on another build of the world counts as missing.
    other_world = tmp_path / "cells" / "red__ESD-u__s0.json"
    other_world.write_text(json.dumps(json.loads(other_world.read_text()) | {"model": "0" * 12}))
    again = subprocess.run([sys.executable, "benchmarks/quality.py", "--fast", "--out", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    ran = [json.loads(line) for line in again.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["method"] for r in ran[:2]) == ["ESD-u", "UCE"] and ran[2]["method"] == "AC" and len(ran) == 3
    assert "coherence_metric" in json.loads(stale.read_text())
    assert {r["method"] for r in json.loads((tmp_path / "quality.json").read_text())["rows"]} == METHODS

    # --table: the table from every cell there, whichever run wrote it, running nothing; the missing ones named.
    table = subprocess.run([sys.executable, "benchmarks/quality.py", "--table", "--concepts", "red", "purple",
                            "--train-seeds", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0, table.stderr[-4000:]
    assert not [line for line in table.stdout.splitlines() if line.startswith("{")]
    data = json.loads((tmp_path / "quality.json").read_text())
    assert {(r["concept"], r["method"]) for r in data["rows"]} == {("red", m) for m in METHODS}
    assert any("purple/UCE/s0" in note and "red/" not in note for note in data["notes"])


def _cell(concept: str, axis: str, method: str, seed: int, acc_e: float, drop: float) -> dict:
    return {"concept": concept, "axis": axis, "method": method, "train_seed": seed, "acc_e_before": 1.0,
            "acc_e": acc_e, "acc_ir_before": 0.95, "acc_ir": 0.95 - drop, "acc_ir_drop": drop,
            "ha": 0.95 - drop - acc_e, "coherence_before": 1.0, "coherence": 0.5, "attack_success": 0.1,
            "final_lambda": 1.0, "train_s": 60.0, "coherence_metric": "probe+render-fit",
            "evaluation_prompts": "short+composed"}


def test_the_table_names_each_axis_default_by_the_rule(tmp_path: Path) -> None:
    """--table says which setting the per-category defaults come from: the best Ha among the settings that erase
    within the drop target; where none is within it, the smallest drop. One-seed settings and settings that do not
    erase are not candidates."""
    settings = {  # (concept, axis): {method: (seeds, Acc_e, Acc_ir drop)}
        ("red", "colour"): {"Z-Erase": (3, 0.0, 0.05), "Z-Erase, null-space": (3, 0.01, 0.01),
                            "Z-Erase, null-space, on-policy": (3, 0.0, 0.015),
                            "Z-Erase, null-space 0.999": (3, 0.6, 0.0), "Z-Erase, level λ": (1, 0.0, 0.0)},
        ("circle", "shape"): {"Z-Erase": (3, 0.1, 0.08), "Z-Erase, null-space": (3, 0.3, 0.04),
                              "Z-Erase, null-space 0.999": (3, 0.7, 0.01)},
    }
    (tmp_path / "cells").mkdir()
    for (concept, axis), methods in settings.items():
        for method, (seeds, acc_e, drop) in methods.items():
            for seed in range(seeds):
                safe = method.replace(" ", "_").replace(",", "")
                (tmp_path / "cells" / f"{concept}__{safe}__s{seed}.json").write_text(
                    json.dumps(_cell(concept, axis, method, seed, acc_e, drop)))
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--table", "--concepts", "red", "circle",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (tmp_path / "quality.md").read_text().splitlines()
    assert "- colour: Z-Erase, null-space, on-policy (best Ha within the drop target" in "\n".join(lines)
    assert "- shape: Z-Erase, null-space (none within the drop target: the smallest drop" in "\n".join(lines)


def test_the_table_shows_which_attacks_succeed(tmp_path: Path) -> None:
    """--table breaks each setting's attack success (trained at several seeds) down by kind, the mean over its
    training seeds, so a reader sees which attacks the column's figure comes from."""
    (tmp_path / "cells").mkdir()
    for seed, synonym in enumerate((0.2, 0.3)):
        (tmp_path / "cells" / f"circle__Z-Erase__s{seed}.json").write_text(json.dumps(
            _cell("circle", "shape", "Z-Erase", seed, 0.0, 0.0)
            | {"attacks": {"misspelling": 0.0, "synonym": synonym}, "attack_success": synonym / 2}))
    (tmp_path / "cells" / "circle__UCE__s0.json").write_text(json.dumps(  # one seed: no breakdown
        _cell("circle", "shape", "UCE", 0, 0.5, 0.0) | {"attacks": {"misspelling": 0.5, "synonym": 0.5}}))
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--table", "--concepts", "circle",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (tmp_path / "quality.md").read_text()
    assert "| concept | method | misspelling | synonym | attack |" in table
    assert "| circle | Z-Erase | 0.00 | 0.25 | 0.12 |" in table
    assert "| circle | UCE | 0.50" not in table
