"""Takedowns one after another, as a moderation team sends them: through the real API (embedded worker, SQLite,
the bundled model, the service's defaults), each concept requested with its category's defaults, trained, then
deployed into the active set by `POST /erasures/{id}/deploy`; the set is judged as served by the worker and
activated only if the deploy gate passes it. Per takedown: whether the deploy was accepted, and the figures of the
version `/generate` then serves (each erased concept's Acc_e, the kept concepts' Acc_ir drop and the worst).

    OMP_NUM_THREADS=2 python benchmarks/takedowns_service.py [--concepts red circle outlined Mira]
        [--fusion routed|consolidated|closed_form|average] [--out benchmarks/takedowns]
    OMP_NUM_THREADS=2 python benchmarks/takedowns_service.py --alone --concepts square circle triangle star

Writes service-<fusion>.json to --out, and images-<fusion>/: PNGs of what /generate serves at the end. With
--alone each takedown is trained and judged by its own job's evaluation and deploy gate, and nothing is deployed
(whether each concept's default erasure passes the gate alone): service-alone.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mitigation import Api

from service.core.db import migrate
from service.core.settings import Settings
from zerase.world.profile import world_category


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["red", "circle", "outlined", "Mira"])
    parser.add_argument("--fusion", default=Settings.model_fields["fusion"].default,
                        choices=["routed", "closed_form", "consolidated", "average"], help="default: the service's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/takedowns"))
    parser.add_argument("--alone", action="store_true", help="judge each erasure alone; deploy nothing")
    return parser.parse_args()


def wait(check: Any, what: str, limit_s: float = 1800) -> Any:
    started = time.monotonic()
    while (value := check()) is None:
        if time.monotonic() - started > limit_s:
            raise TimeoutError(what)
        time.sleep(1)
    return value


def takedown(api: Api, concept: str, deploy: bool = True) -> dict[str, Any]:
    """Request, train, deploy (if `deploy`) one concept; the outcome and what is served afterwards."""
    started = time.monotonic()
    category = world_category(concept)
    job = api.client.post("/erasures", json={"concept": concept, "category": category, "mitigate": "none"}).json()

    def finished() -> dict[str, Any] | None:
        now = api.client.get(f"/erasures/{job['id']}").json()
        return now if now["status"] in ("succeeded", "failed", "cancelled") else None
    done = wait(finished, f"{concept}: training")
    row: dict[str, Any] = {"concept": concept, "category": category, "job": done["status"],
                           "train_s": round(time.monotonic() - started, 1)}
    if done["status"] != "succeeded":
        return row | {"accepted": False, "why": done.get("error")}
    alone = api.client.get(f"/erasures/{job['id']}/evaluation")
    if alone.status_code == 200:  # the job's own evaluation: the erasure judged alone
        view = alone.json()
        e, gate = view.get("evaluation") or view, view.get("gate")
        row["alone"] = {k: e.get(k) for k in ("acc_e", "acc_ir_before", "acc_ir")} | {
            "gate_passed": (gate or {}).get("passed"), "null_space": done["hyperparameters"].get("null_space"),
            "served_strength": e.get("served_strength"),
            "rounds": (e.get("retune") or {}).get("rounds")}  # where the first round missed and it trained again
        if not deploy:
            return row | {"gate": gate, "worst_kept": e.get("worst_kept"),
                          "attack_success": e.get("attack_success_rate")}
    response = api.client.post(f"/erasures/{job['id']}/deploy")
    row["deploy_status"] = response.status_code
    body = response.json()
    if response.status_code == 201:  # one erasure alone: judged by its job's evaluation, active now
        row["accepted"], row["version"] = True, body["version"]
    elif response.status_code == 202:  # a set: judged as served by the worker, activated if it passes
        version = body["version"]

        def settled() -> dict[str, Any] | None:
            d = api.client.get(f"/deployments/{version}").json()
            return d if d["evaluation_status"] in ("evaluated", "failed") and not d["pending_activation"] else None
        deployment = wait(settled, f"{concept}: the set's evaluation")
        row["version"], row["accepted"] = version, deployment["active"]
        if deployment["refusal"]:
            row["why"] = deployment["refusal"]
    else:
        row["accepted"], row["why"] = False, body
    row["deploy_s"] = round(time.monotonic() - started - row["train_s"], 1)
    row["served"] = served(api)
    return row


def served(api: Api) -> dict[str, Any]:
    """The active version's figures as served: each erased concept's Acc_e, the kept set."""
    active = api.client.get("/deployments/active").json()
    version = active["version"]
    entries = (active.get("deployment") or {}).get("entries", [])
    out: dict[str, Any] = {"version": version, "concepts": [e["concept"] for e in entries]}
    evaluation = api.client.get(f"/deployments/{version}/evaluation")
    if evaluation.status_code == 200 and (e := evaluation.json().get("evaluation")):
        out["acc_e"] = {c["concept"]: c["acc_e"] for c in e["concepts"]}
        kept = e["kept"]
        out["kept"] = {"acc_ir_before": kept["acc_ir_before"], "acc_ir": kept["acc_ir"],
                       "worst": kept.get("worst")}
    return out


def look(api: Api, prompts: list[str], folder: Path) -> None:
    """What /generate serves at the end, to look at: one PNG per prompt and seed, named by the version."""
    folder.mkdir(parents=True, exist_ok=True)
    for prompt in prompts:
        for seed in range(2):
            response = api.client.post("/generate", json={"prompt": prompt, "seed": seed})
            version = response.headers.get("X-Safety-Patch-Version", "none")
            (folder / f"v{version}-{prompt.replace(' ', '_')}-s{seed}.png").write_bytes(response.content)


def main() -> None:
    args = parse()
    var = Path(tempfile.mkdtemp(prefix="zerase-takedowns-"))
    settings = Settings(var_dir=var, fusion=args.fusion)
    migrate(settings.database_url)
    api = Api(settings)
    rows = []
    try:
        for concept in args.concepts:
            rows.append(takedown(api, concept, deploy=not args.alone))
            print(json.dumps(rows[-1]), flush=True)
        if not args.alone:
            look(api, [*args.concepts, "Toko", "a green triangle", "a blue star"], args.out / f"images-{args.fusion}")
    finally:
        api.close()
    out = {"fusion": None if args.alone else args.fusion, "deploy_gate": settings.deploy_gate,
           "retune_rounds": settings.retune_rounds, "takedowns": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"service-{'alone' if args.alone else args.fusion}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
