"""Instant takedown, measured: the prompt guard (zerase.serve.guard) beside the trained Z-Erase patch that replaces it.

    OMP_NUM_THREADS=2 python benchmarks/mitigation.py [--concepts red circle ...] [--out benchmarks/mitigation]
    OMP_NUM_THREADS=2 python benchmarks/mitigation.py --service [--out benchmarks/mitigation]
    python benchmarks/mitigation.py --table [--out benchmarks/mitigation]

Per concept (a cell, written to --out/cells/ when done and skipped when there, so a run resumes):
- the guard's calibration (seconds) and its detection on prompts it was not fitted on: the concept as written,
  each string attack kind of the evaluation (misspelling, affix, case) and Ring-A-Bell's found prompts (which
  never spell the concept); its false positives on 1,000 COCO captions (none of those it was calibrated or
  checked on) and on every other world concept's prompts;
- the concept's share of images (the world's probe reads them, 2 seeds) on those prompts as served: the base
  model, the guard refusing (a refused prompt shows nothing), the guard rewriting (its words replaced by the
  anchor), and the trained erasure alone (the service's default preset), which is what serves once deployed.

With --service, through the real API (embedded worker, SQLite, the bundled model, the service's defaults):
the time from POST /erasures (mitigate=immediate) to the first /generate that refuses the concept, for 5
takedowns (p50); the first one's time until its trained erasure is deployed (auto_deploy, the deploy gate on);
and /generate's p50 with the 14 world concepts and 7 others under guard (those that pass their own check applied)
against the same erasures without, the two versions alternating (3 rounds), in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zerase.evaluate.metrics import hit_rate
from zerase.evaluate.redteam.common import RedTeamBudget
from zerase.evaluate.redteam.ring_a_bell import ring_a_bell
from zerase.model.corpora import coco_captions, mentions
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline
from zerase.serve.guard import PromptGuard
from zerase.serve.guard_calibration import _shown, calibrate_concept
from zerase.train.prompts import attack_spellings, concept_spans
from zerase.world.concepts import AXES
from zerase.world.profile import world_axis, world_category, world_erase_contexts, world_value

CONCEPTS = ("red", "purple", "circle", "star", "outlined", "filled", "Mira", "Zed")  # 2 per axis, as quality.py
SEEDS = (0, 1)
UNGUARDED = "A man riding a horse on a beach at sunset."  # trips none of the 20 guarded concepts
SERVICE_CONCEPTS = ("red", "circle", "outlined", "Mira", "purple")
EXTRA_GUARDED = (("giraffe", "entity"), ("umbrella", "entity"), ("bicycle", "entity"), ("pizza", "entity"),
                 ("elephant", "entity"), ("Tom Cruise", "celebrity"), ("Taylor Swift", "celebrity"))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/mitigation"))
    parser.add_argument("--service", action="store_true", help="time to mitigation and /generate cost, via the API")
    parser.add_argument("--requests", type=int, default=40, help="--service: /generate requests per p50")
    parser.add_argument("--table", action="store_true", help="only rebuild the table from the cells")
    return parser.parse_args()


def splice(prompt: str, concept: str, spelled: str) -> str:
    a, b = concept_spans(prompt, concept)[0]
    return prompt[:a] + spelled + prompt[b:]


def prompt_sets(pipe: Any, concept: str, category: str) -> dict[str, list[str]]:
    """Held-out prompts showing the concept (12), its string attacks on 4 of them, Ring-A-Bell's found prompts
    for 4 (seeded: the same on every run)."""
    _, held = _shown(profile_for(), concept, category)
    held = [p for p in held if concept_spans(p, concept)][:12]
    sets: dict[str, list[str]] = {"plain": held}
    for kind, spelt in attack_spellings(concept).items():
        sets[kind] = [splice(p, concept, s) for p in held[:4] for s in spelt]
    sets["ring_a_bell"] = ring_a_bell(pipe, concept, held, RedTeamBudget(prompts=4)).prompts
    return sets


def concept_cell(pipe: Any, guard: PromptGuard, concept: str) -> dict[str, Any]:
    from zerase.patch.artifact import load_artifact
    from zerase.train.erasure import erase
    from zerase.train.presets import resolve

    profile = profile_for()  # the bundled world
    category = world_category(concept)
    started = time.monotonic()
    calibration, prototypes = calibrate_concept(guard, profile, concept, category)
    calibrate_s = time.monotonic() - started
    guard.concepts = []
    anchor = profile.default_anchor(concept, category)
    guard.add("takedown", concept, anchor, calibration.threshold, prototypes)

    sets = prompt_sets(pipe, concept, category)
    others = [p for axis in AXES.values() for c in axis if c.lower() != concept.lower()
              for p in world_erase_contexts(c) if not mentions(p, concept)]
    seen = set(coco_captions(400, 0) + coco_captions(400, 3) + coco_captions(64, 7))  # calibration's, background's
    negatives = {"others": others, "coco": [c for c in coco_captions(1200, 5, [concept]) if c not in seen][:1000]}

    detection = {name: float(np.mean([guard.check(p) is not None for p in ps])) for name, ps in sets.items()}
    false_positives = {name: float(np.mean([guard.check(p) is not None for p in ps])) for name, ps in negatives.items()}

    evaluator, value = profile.evaluator(), world_value(concept)
    assert evaluator is not None
    sampling = profile.sampling

    def shown(prompts: list[str], served: list[str | None]) -> float:
        """The concept's share of images of `prompts` as served (None: refused, no image)."""
        keep = [(p, s) for p, s in zip(prompts, served) if s is not None]
        if not keep:
            return 0.0
        texts = [s for _, s in keep for _ in SEEDS]
        images = generate(pipe, texts, list(SEEDS) * len(keep), sampling)
        return hit_rate(evaluator.read(images, texts), value) * len(keep) / len(prompts)

    started = time.monotonic()
    artifact_path = Path("var/mitigation") / f"{concept}-default.safetensors"
    if not artifact_path.exists():
        artifact_path.parent.mkdir(parents=True, exist_ok=True)
        erase(pipe, resolve(concept, category)).save(artifact_path)
    train_s = time.monotonic() - started
    patched = PatchedPipeline(pipe)
    rates: dict[str, dict[str, float]] = {}
    for name, prompts in sets.items():
        refused = [None if guard.check(p) else p for p in prompts]
        rewritten = [guard.rewrite(p)[0] if guard.check(guard.rewrite(p)[0]) is None else None for p in prompts]
        row = {"base": shown(prompts, list(prompts)), "guard_refuse": shown(prompts, refused),
               "guard_anchor": shown(prompts, rewritten)}
        patched.apply([load_artifact(artifact_path, pipe)])
        row["erasure"] = shown(prompts, list(prompts))
        patched.clear()
        rates[name] = row
    return {"concept": concept, "category": category, "calibration": calibration.to_dict(), "prompts": sets,
            "calibrate_s": round(calibrate_s, 2), "train_s": round(train_s, 1), "detection": detection,
            "false_positives": false_positives, "shown": rates,
            "sizes": {**{k: len(v) for k, v in sets.items()}, **{k: len(v) for k, v in negatives.items()}}}


def second_stage(pipe: Any, guard: PromptGuard, cell: dict[str, Any]) -> dict[str, Any]:
    """The closed-form candidate for a middle stage (UCE, zerase.baselines.uce, with AC's anchors as the quality harness
    runs it) on the cell's prompt sets, and what each stage costs the other concepts: the guard the share of
    their prompts it refuses, UCE and the trained erasure the drop of their own concept's rate (24 prompts)."""
    import dataclasses

    from _quality_methods import AC_TARGET  # this script's folder is on sys.path

    from zerase.baselines.uce import uce_erase
    from zerase.patch.artifact import load_artifact
    from zerase.train.presets import resolve

    concept, category = cell["concept"], cell["category"]
    profile, evaluator = profile_for(), profile_for().evaluator()
    assert evaluator is not None
    calibration, prototypes = calibrate_concept(guard, profile, concept, category)
    guard.concepts = []
    guard.add("takedown", concept, profile.default_anchor(concept, category), calibration.threshold, prototypes)
    started = time.monotonic()
    config = dataclasses.replace(resolve(concept, category), **AC_TARGET[world_axis(concept) or "colour"])
    path = Path("var/mitigation") / f"{concept}-uce.safetensors"
    uce_erase(pipe, config).save(path)
    uce_s = time.monotonic() - started
    patched = PatchedPipeline(pipe)
    sets = cell.setdefault("prompts", prompt_sets(pipe, concept, category))

    def rate(prompts: list[str], value: str) -> float:
        texts = [p for p in prompts for _ in SEEDS]
        return hit_rate(evaluator.read(generate(pipe, texts, list(SEEDS) * len(prompts), profile.sampling), texts),
                        value)

    patched.apply([load_artifact(path, pipe)])
    for name, prompts in sets.items():
        cell["shown"][name]["uce"] = rate(prompts, world_value(concept))
    patched.clear()
    others = [(c, p) for axis in AXES.values() for c in axis if c.lower() != concept.lower()
              for p in world_erase_contexts(c)[:2] if not mentions(p, concept)][:24]
    cost: dict[str, float] = {"guard_refuses": float(np.mean([guard.check(p) is not None for _, p in others]))}
    base = np.mean([rate([p], world_value(c)) for c, p in others])
    for name, artifact in (("uce", path), ("erasure", Path("var/mitigation") / f"{concept}-default.safetensors")):
        patched.apply([load_artifact(artifact, pipe)])
        cost[f"{name}_drop"] = float(base - np.mean([rate([p], world_value(c)) for c, p in others]))
        patched.clear()
    cell["collateral"], cell["uce_s"] = cost, round(uce_s, 1)
    return cell


def run_concepts(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    pipe = load_pipeline()
    guard = PromptGuard.for_pipeline(pipe)
    cells = args.out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    for concept in args.concepts:
        path = cells / f"{concept}.json"
        cell = json.loads(path.read_text()) if path.exists() else concept_cell(pipe, guard, concept)
        path.write_text(json.dumps(cell, indent=1))
        if "collateral" not in cell:  # cells of an earlier run get the second stage added
            cell = second_stage(pipe, guard, cell)
            path.write_text(json.dumps(cell, indent=1))
        else:
            continue
        print(json.dumps({k: cell[k] for k in ("concept", "detection", "false_positives", "calibrate_s")}),
              flush=True)


class Api:
    """The API in this process (uvicorn in a thread), as `zerase serve` runs it, and a client with an admin key."""

    def __init__(self, settings: Any) -> None:
        import httpx
        import uvicorn

        from api.app import create_app
        from cli.demo import free_port
        from service.audit.service import Actor
        from service.keys.service import issue_key

        _, secret = issue_key(settings.database_url, f"bench-{time.time_ns()}", "admin", Actor("benchmark"))
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                                    log_level="warning"))
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                                   headers={"Authorization": f"Bearer {secret}"})

    def generate(self, prompt: str, seed: int = 0) -> Any:
        return self.client.post("/generate", json={"prompt": prompt, "seed": seed})

    def p50(self, prompt: str, n: int) -> float:
        times = []
        for i in range(n):
            t = time.perf_counter()
            assert self.generate(prompt, i).status_code == 200
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def takedown(self, concept: str, **extra: Any) -> dict[str, Any]:
        category = world_category(concept)
        return dict(self.client.post("/erasures", json={"concept": concept, "category": category,
                                                        "mitigate": "immediate", **extra}).json())

    def close(self) -> None:
        self.server.should_exit = True
        time.sleep(1)


def concept_prompt(concept: str) -> str:
    return f"a picture of {concept}" if world_axis(concept) == "character" else world_erase_contexts(concept)[0]


def run_service(args: argparse.Namespace) -> None:
    """Two servers on one database, the service's defaults otherwise: with the embedded worker (the takedowns'
    timings), then without one (20 takedowns stay queued, guarded, while /generate is timed)."""
    import tempfile

    from service.core.db import migrate
    from service.core.settings import Settings

    var = Path(tempfile.mkdtemp(prefix="zerase-mitigation-"))
    settings = Settings(var_dir=var)
    migrate(settings.database_url)
    out: dict[str, Any] = {"settings": {"guard_action": settings.guard_action, "deploy_gate": settings.deploy_gate,
                                        "requests_per_p50": args.requests}}
    api = Api(settings)
    api.generate("a blue circle")  # the model loaded: the first request's load is not the guard's
    mitigation = []
    for i, concept in enumerate(SERVICE_CONCEPTS):
        t = time.perf_counter()
        job = api.takedown(concept, auto_deploy=i == 0)
        while api.generate(concept_prompt(concept)).status_code != 422:
            assert time.perf_counter() - t < 120, f"{concept} never refused: {job.get('mitigation')}"
        mitigation.append(time.perf_counter() - t)
        print(f"{concept}: refused {mitigation[-1]:.2f}s after the request", flush=True)
        if i == 0:  # the trained patch takes over: the time until /generate serves it
            while (now := api.client.get(f"/erasures/{job['id']}").json())["mitigation"]["stage"] != "deployed":
                if now["status"] in ("failed", "cancelled") or time.perf_counter() - t > 1800:
                    out["trained_error"] = now.get("error") or now["status"]
                    break
                if now["status"] == "succeeded" and time.perf_counter() - t > 1200:
                    out["trained_error"] = "succeeded, not deployed (see its events)"
                    break
                time.sleep(1)
            out["time_to_trained_patch_s"] = round(time.perf_counter() - t, 1)
            events = api.client.get(f"/erasures/{job['id']}/events", params={"limit": 100}).json()["data"]
            out["first_takedown_last_events"] = [e["message"] for e in events][-3:]
            print(f"{concept}: trained patch served after {out['time_to_trained_patch_s']}s", flush=True)
        else:
            api.client.post(f"/erasures/{job['id']}/cancel")  # guard timing only: the worker stays free
    out["time_to_mitigation_s"] = [round(x, 2) for x in mitigation]
    out["time_to_mitigation_p50_s"] = round(statistics.median(mitigation), 2)
    api.close()

    api = Api(Settings(var_dir=var, embedded_worker=False, max_active_jobs_per_key=50))  # 21 queued on one key
    api.generate(UNGUARDED)
    plain = api.client.get("/deployments/active").json()["version"]
    jobs = [api.takedown(c) for values in AXES.values() for c in values] + \
        [api.takedown(c, category=k) for c, k in EXTRA_GUARDED]
    assert all("mitigation" in j for j in jobs), [j for j in jobs if "mitigation" not in j]
    guarded = api.client.get("/deployments/active").json()["version"]
    out["guard_entries"] = len(jobs)
    out["guard_refused_by_its_check"] = [j["concept"] for j in jobs if j["mitigation"]["guard"]["stage"] != "guarded"]
    out["guards_applied"] = len(jobs) - len(out["guard_refused_by_its_check"])
    # Side by side: the same erasures served without and with the guard, alternating, pooled per version.
    times: dict[int, list[float]] = {plain: [], guarded: []}
    for _ in range(3):
        for version in (plain, guarded):
            assert api.client.post(f"/deployments/{version}/activate").status_code == 200
            api.generate(UNGUARDED)  # the switch itself is not timed
            for i in range(args.requests):
                t = time.perf_counter()
                assert api.generate(UNGUARDED, i).status_code == 200
                times[version].append(time.perf_counter() - t)
    p50 = {"no_guard": statistics.median(times[plain]), "guarded": statistics.median(times[guarded])}
    out["generate_p50_s"] = {k: round(v, 4) for k, v in p50.items()}
    out["guard_cost"] = round(p50["guarded"] / p50["no_guard"] - 1, 4)
    api.close()
    print(json.dumps(out, indent=1))
    (args.out / "service.json").write_text(json.dumps(out, indent=1))


def table(out: Path) -> str:
    cells = {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}
    lines = ["| concept | detection: plain / misspelling / affix / case / Ring-A-Bell | false positives: COCO / "
             "other concepts | concept shown, plain prompts: base → guard (refuse / anchor) / UCE / Z-Erase | "
             "same, attack prompts (mean of 4 kinds) | cost to other concepts: guard refuses / UCE drop / "
             "Z-Erase drop |", "|---|---|---|---|---|---|"]
    for c in CONCEPTS:
        if c not in cells:
            lines.append(f"| {c} | missing | | | | |")
            continue
        cell = cells[c]
        d, fp, s = cell["detection"], cell["false_positives"], cell["shown"]
        attack = [k for k in s if k != "plain"]

        def mean(kind: str, keys: list[str] = attack, s: dict[str, Any] = s) -> float:
            return float(np.mean([s[k].get(kind, np.nan) for k in keys]))

        def shown(row: dict[str, float]) -> str:
            return (f"{row['base']:.2f} → {row['guard_refuse']:.2f} / {row['guard_anchor']:.2f} / "
                    f"{row.get('uce', np.nan):.2f} / {row['erasure']:.2f}")
        cost = cell.get("collateral", {})
        lines.append(f"| {c} | " + " / ".join(f"{d[k]:.2f}" for k in ("plain", "misspelling", "affix", "case",
                                                                       "ring_a_bell"))
                     + f" | {fp['coco']:.3f} / {fp['others']:.3f} | {shown(s['plain'])} | "
                     + shown({k: mean(k) for k in ("base", "guard_refuse", "guard_anchor", "uce", "erasure")})
                     + f" | {cost.get('guard_refuses', np.nan):.2f} / {cost.get('uce_drop', np.nan):.2f} / "
                       f"{cost.get('erasure_drop', np.nan):.2f} |")
    rows = [cells[c] for c in CONCEPTS if c in cells]
    if rows:
        lines.append("| mean | " + " / ".join(f"{np.mean([r['detection'][k] for r in rows]):.2f}" for k in
                                               ("plain", "misspelling", "affix", "case", "ring_a_bell"))
                     + f" | {np.mean([r['false_positives']['coco'] for r in rows]):.3f} / "
                       f"{np.mean([r['false_positives']['others'] for r in rows]):.3f} | | | |")
    text = "\n".join(lines) + "\n"
    (out / "mitigation.md").write_text(text)
    return text


def main() -> None:
    args = parse()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.service:
        run_service(args)
        return
    if not args.table:
        run_concepts(args)
    print(table(args.out))


if __name__ == "__main__":
    main()
