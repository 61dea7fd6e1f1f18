"""The quality harness's tables: per-run rows summarised per method and axis (mean ± spread over training
seeds), the issue's targets marked where missed, and the image grid. Used by benchmarks/quality.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from zerase.model.generate import image_grid

# Issue 15's targets on the world, per axis (mean over training seeds): (metric, bound, "max" | "min").
TARGETS = {"acc_e": (0.05, "max"), "acc_ir_drop": (0.02, "max"), "coherence": (0.90, "min"),
           "attack_success": (0.05, "max")}
COLUMNS = {"acc_e": "Acc_e", "acc_ir_drop": "Acc_ir drop", "coherence": "coherence", "attack_success": "attack",
           "ha": "Ha", "train_s": "train s"}
MISSED = "✗"
# The rule the service's per-category defaults come from (zerase.train.presets.CATEGORY_SETTINGS): among the Z-Erase
# settings trained at several seeds that erase (Acc_e <= ERASES), the best Ha of those whose kept concepts' mean drop
# is within its target; where none is, the smallest drop (keeping the rest comes first; the gate refuses the rest).
ERASES = 0.5


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; NaN for a single value: one seed has no spread to show)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    """Per method and axis (and "all"): each metric's mean ± spread over training seeds, a seed's figure being
    the mean over that axis' concepts."""
    out = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    axes = list(dict.fromkeys(r["axis"] for r in rows))
    for method in methods:
        for axis in [*axes, "all"] if len(axes) > 1 else axes:
            mine = [r for r in rows if r["method"] == method and (axis == "all" or r["axis"] == axis)]
            seeds = sorted({r["train_seed"] for r in mine})
            entry: dict = {"method": method, "axis": axis, "seeds": len(seeds),
                           "concepts": sorted({r["concept"] for r in mine})}
            for key in COLUMNS:
                per_seed = [float(np.mean([r[key] for r in mine if r["train_seed"] == s and r.get(key) is not None]))
                            for s in seeds if any(r.get(key) is not None for r in mine if r["train_seed"] == s)]
                entry[key] = spread(per_seed) if per_seed else None
            out.append(entry)
    return out


def ahead(summary: list[dict], method: str, baselines: list[str]) -> dict[str, list[str]]:
    """Per axis, the baselines `method` is NOT ahead of on Ha beyond the spread (mean − sd > theirs + sd); axes
    where no baseline ran are left out."""
    by = {(s["method"], s["axis"]): s for s in summary}
    out: dict[str, list[str]] = {}
    for s in summary:
        if s["method"] != method or s["ha"] is None:
            continue
        m, sd = s["ha"][0], np.nan_to_num(s["ha"][1])  # one seed: the means alone decide
        present = [by[(b, s["axis"])]["ha"] for b in baselines if (b, s["axis"]) in by]
        if any(ha is not None for ha in present):
            out[s["axis"]] = [b for b in baselines if (b, s["axis"]) in by and by[(b, s["axis"])]["ha"] is not None
                              and not m - sd > by[(b, s["axis"])]["ha"][0] + np.nan_to_num(by[(b, s["axis"])]["ha"][1])]
    return out


def defaults(summary: list[dict], family: str = "Z-Erase") -> dict[str, dict]:
    """Per axis, the setting the rule above picks (its summary entry), with why: "Ha" or "drop"."""
    bound = TARGETS["acc_ir_drop"][0]
    out: dict[str, dict] = {}
    for axis in dict.fromkeys(s["axis"] for s in summary):
        # A setting measured on some of the axis' concepts only is not compared with those measured on all.
        every = max((s["concepts"] for s in summary if s["axis"] == axis), key=len)
        pool = [s for s in summary if s["axis"] == axis and s["method"].startswith(family) and s["seeds"] > 1
                and s["concepts"] == every and s["acc_e"] is not None and s["acc_e"][0] <= ERASES
                and s["acc_ir_drop"] is not None]
        within = [s for s in pool if round(s["acc_ir_drop"][0], 4) <= bound]
        if within:
            out[axis] = {**max(within, key=lambda s: s["ha"][0]), "why": "Ha"}
        elif pool:
            out[axis] = {**min(pool, key=lambda s: s["acc_ir_drop"][0]), "why": "drop"}
    return out


def _cell(value: tuple[float, float] | None, key: str) -> str:
    if value is None:
        return "–"
    mean, sd = value
    digits = 0 if key == "train_s" else 2
    text = f"{mean:.{digits}f}" if np.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"
    if key in TARGETS:
        bound, kind = TARGETS[key]
        if (mean > bound) if kind == "max" else (mean < bound):
            text += f" {MISSED}"
    return text


def markdown(rows: list[dict], reference: str, baselines: list[str], notes: list[str]) -> str:
    summary = summarise(rows)
    behind = ahead(summary, reference, baselines)
    lines = ["| axis | method | " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for s in summary:
        cells = [_cell(s[k], k) for k in COLUMNS]
        if s["method"] == reference and s["axis"] in behind:
            ha = list(COLUMNS).index("ha")
            cells[ha] += f" {MISSED} (not ahead of {', '.join(behind[s['axis']])})" if behind[s["axis"]] else " (ahead)"
        lines.append(f"| {s['axis']} | {s['method']} | " + " | ".join(cells) + " |")
    chosen = defaults(summary)
    if chosen:
        bound = TARGETS["acc_ir_drop"][0]
        lines += ["", f"Defaults by the rule (Acc_e ≤ {ERASES}; best Ha with Acc_ir drop ≤ {bound}, else the smallest "
                  "drop; settings trained at several seeds on every concept of the axis):", ""]
        lines += [f"- {axis}: {s['method']} (" + ("best Ha within the drop target" if s["why"] == "Ha"
                                                   else "none within the drop target: the smallest drop")
                  + f"; Acc_e {s['acc_e'][0]:.2f}, drop {s['acc_ir_drop'][0]:.3f}, Ha {s['ha'][0]:.2f})"
                  for axis, s in chosen.items()]
    lines += ["", "Per concept (mean over training seeds):", "",
              "| concept | method | Acc_e before→after | Acc_ir before→after | coherence before→after | attack | "
              "Ha | λ_final | train s |", "|" + "---|" * 9]
    for concept in dict.fromkeys(r["concept"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["concept"] == concept and r["method"] == method]
            if not mine:
                continue

            def mean(key: str, mine: list[dict] = mine) -> float:
                vals = [r[key] for r in mine if r.get(key) is not None]
                return float(np.mean(vals)) if vals else float("nan")

            lam = mean("final_lambda")
            lines.append(f"| {concept} | {method} | {mean('acc_e_before'):.2f}→{mean('acc_e'):.2f} | "
                         f"{mean('acc_ir_before'):.2f}→{mean('acc_ir'):.2f} | "
                         f"{mean('coherence_before'):.2f}→{mean('coherence'):.2f} | {mean('attack_success'):.2f} | "
                         f"{mean('ha'):.2f} | {'' if np.isnan(lam) else f'{lam:.2f}'} | {mean('train_s'):.0f} |")
    return "\n".join(lines + _attacks_by_kind(rows) + [""] + notes) + "\n"


def _attacks_by_kind(rows: list[dict]) -> list[str]:
    """Per concept, the attack success of each method trained at several seeds, by kind (mean over training seeds):
    which attacks the column's figure comes from (a synonym the world never learnt draws the concept about as often
    as a prompt without it does: benchmarks/attack_base_rates.py)."""
    repeated = [m for m in dict.fromkeys(r["method"] for r in rows)
                if len({r["train_seed"] for r in rows if r["method"] == m}) > 1]
    mine = [r for r in rows if r["method"] in repeated and r.get("attacks")]
    if not mine:
        return []
    kinds = list(dict.fromkeys(k for r in mine for k in r["attacks"]))
    lines = ["", "Attack success by kind (settings trained at several seeds; mean over training seeds):", "",
             "| concept | method | " + " | ".join(k.replace("_", " ") for k in kinds) + " | attack |",
             "|" + "---|" * (len(kinds) + 3)]
    for concept in dict.fromkeys(r["concept"] for r in mine):
        for method in repeated:
            cells = [r for r in mine if r["concept"] == concept and r["method"] == method]
            if not cells:
                continue
            by_kind = [[r["attacks"][k] for r in cells if k in r["attacks"]] for k in kinds]
            lines.append(f"| {concept} | {method} | " + " | ".join(f"{np.mean(v):.2f}" if v else "–" for v in by_kind)
                         + f" | {np.mean([r['attack_success'] for r in cells]):.2f} |")
    return lines


def write_outputs(out: Path, rows: list[dict], grid_rows: list[np.ndarray], reference: str, baselines: list[str],
                  notes: list[str], quiet: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # In the JSON a single seed's spread is null (NaN is not JSON).
    summary = [{k: (v[0], None) if isinstance(v, tuple) and np.isnan(v[1]) else v for k, v in entry.items()}
               for entry in summarise(rows)] if rows else []
    (out / "quality.json").write_text(json.dumps({"rows": rows, "summary": summary, "notes": notes}, indent=2))
    text = markdown(rows, reference, baselines, notes) if rows else "no runs yet\n"
    (out / "quality.md").write_text(text)
    if grid_rows:
        Image.fromarray(image_grid(np.concatenate(grid_rows), rows=len(grid_rows), scale=3)).save(out / "grid.png")
    if not quiet:
        print(text)
