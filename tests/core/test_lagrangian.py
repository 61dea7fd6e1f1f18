"""λ (Eq. 13-15) on a small problem whose objectives conflict, then stop conflicting."""

from __future__ import annotations

import torch

from zerase.train.lagrangian import LambdaController


def test_lambda_rises_under_conflict_and_falls_back_to_zero():
    lr = 0.05
    theta = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=lr)
    ctl = LambdaController(lr=lr, beta=0.1, epsilon=1e-3)
    target = torch.tensor([1.0, 1.0])

    def l_pr() -> torch.Tensor:
        return (theta ** 2).sum()

    lams, prev, pr_at_switch = [], None, 0.0
    for step in range(600):
        conflict = step < 200
        l_er = ((theta - target) ** 2).sum() if conflict else torch.zeros(())
        lp = l_pr()
        if prev is not None:
            ctl.update(prev, lp.item())
        loss = l_er + ctl.lam * lp
        opt.zero_grad()
        loss.backward()
        opt.step()
        prev = lp.item()  # L_pr(θ_t); the next step measures L_pr(θ_t+1) on the same objective
        lams.append(ctl.lam)
        if step == 199:
            pr_at_switch = lp.item()
    assert min(lams) >= 0.0
    assert max(lams[:200]) > 0.5, "λ must rise while erasure keeps raising L_pr"
    assert lams[-1] == 0.0, "λ must return to 0 once nothing raises L_pr"
    assert l_pr().item() < pr_at_switch, "with λ > 0 and no conflict, preservation recovers"


def test_lambda_never_negative_and_decays_by_beta_epsilon():
    ctl = LambdaController(lr=1e-3, beta=0.1, epsilon=1e-2, lam=0.05)
    ctl.update(1.0, 1.0)  # no change in L_pr: g = ε
    assert abs(ctl.lam - (0.05 - 0.1 * 1e-2)) < 1e-12
    for _ in range(100):
        ctl.update(1.0, 0.9)  # L_pr falling: λ shrinks, clamped at 0
    assert ctl.lam == 0.0
