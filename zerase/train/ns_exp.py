"""Experiment: per-caption grams, similarity weighting, union bases. Not for landing."""
from __future__ import annotations
import os
import torch
from zerase.train.null_space import _projector


@torch.no_grad()
def per_caption_grams(transformer, lora, bank, caps, empty, views=4, batch_size=32):
    grams: dict[int, dict[int, torch.Tensor]] = {}
    inputs = {i: lora.modules[f"layers.{i}.attention.{lora.spec.targets[0]}"] for i in lora.layers}
    ids: list[int] = []

    def hook(layer):
        def record(module, args):
            span = lora.tracker.span
            h = args[0].float()
            for b, n in enumerate(span.caption_lens):
                r = h[b, span.image_lens[b]:span.image_lens[b] + n]
                g = grams.setdefault(layer, {})
                g[ids[b]] = g.get(ids[b], 0) + r.T @ r
        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in inputs.items()]
    try:
        with lora.frozen():
            for start in range(0, len(bank), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(bank)))
                x = bank.states[idx].to(transformer.device, transformer.dtype).unsqueeze(2)
                t = bank.t[idx].to(transformer.device)
                for r in range(min(views, len(caps))):
                    ids[:] = [(int(p) + r) % len(caps) for p in bank.prompt[idx]]
                    transformer(list(x.unbind(0)), t, [caps[i] for i in ids], return_dict=False)
                if empty is not None:
                    ids[:] = [-1] * len(idx)
                    transformer(list(x.unbind(0)), t, [empty] * len(idx), return_dict=False)
    finally:
        for h in handles:
            h.remove()
    return grams


def projectors(transformer, lora, pres_bank, pres_caps, empty, keep, erase_bank, erase_caps):
    mode = os.environ.get("NS_MODE", "pooled")
    alpha = float(os.environ.get("NS_ALPHA", "1"))
    keep_c = float(os.environ.get("NS_KEEPC", "0.95"))
    pg = per_caption_grams(transformer, lora, pres_bank, pres_caps, empty)
    eg = per_caption_grams(transformer, lora, erase_bank, erase_caps, None, views=1)
    out = {}
    for layer, by_cap in pg.items():
        E = sum(eg[layer].values())
        trE = E.trace()
        if mode == "pooled":
            G = sum(by_cap.values())
            P = _projector(G, keep)
        elif mode == "sim":
            G = 0
            for c, Gc in by_cap.items():
                w = ((Gc * E).sum() / (Gc.trace() * trE)).clamp(min=0) ** alpha
                G = G + w * Gc / Gc.trace()
            P = _projector(G, keep)
        elif mode == "union":
            Gp = sum(by_cap.values())
            bases = [torch.eye(len(Gp), dtype=torch.float64)[:, :0]]
            K = int(os.environ.get("NS_K", "4"))
            sims = sorted(by_cap, key=lambda c: -float((by_cap[c] * E).sum() / (by_cap[c].trace() * trE)))[:K]
            print("NS nearest", sims, flush=True)
            for Gc in [Gp, *[by_cap[c] for c in sims]]:
                Pc = _projector(Gc, keep if Gc is Gp else keep_c).double()
                vals, vecs = torch.linalg.eigh(torch.eye(len(Gc), dtype=torch.float64) - Pc)
                bases.append(vecs[:, vals > 0.5])
            U, S, _ = torch.linalg.svd(torch.cat(bases, 1), full_matrices=False)
            U = U[:, S > 1e-3 * S.max()]
            P = (torch.eye(len(Gp), dtype=torch.float64) - U @ U.T).float()
        Gp = sum(by_cap.values())
        res = lambda M: float((P @ M @ P).trace() / M.trace())
        worst = sorted(((res(Gc), c) for c, Gc in by_cap.items()), reverse=True)[:4]
        print(f"NS layer {layer} mode {mode} rank_free {int(P.trace().round())} erase_res {res(E):.3f} "
              f"pres_res {res(Gp):.3f} worst_pres {[(round(a, 3), c) for a, c in worst]}", flush=True)
        out[layer] = P
    return {path: out[int(path.split('.')[1])] for path in lora.modules}
