"""Lagrangian-guided adaptive erasure modulation (§4.2, Algorithm 1, Eq. 13-15).

λ is the dual variable of "do not let L_pr rise faster than ε allows". It is updated from the
*observed* change of L_pr across one optimiser step, with no second backward pass:

    g̃_t = (L_pr(θ_{t-1}) - L_pr(θ_t)) / α + ε        (Eq. 15)
    λ_{t+1} = max(0, λ_t - β · g̃_t)                   (Eq. 13, projected onto λ >= 0)

Both L_pr values must be measured on the same preservation samples, otherwise the difference is
mostly batch noise (the public reference code subtracts a number from itself, so its λ only ever
grows by β·ε). The training loop provides that pairing; see `erasure.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class LambdaController:
    lr: float  # α, the model's learning rate
    epsilon: float  # ε, the tolerated rise of L_pr per unit step (from the EraseConfig)
    beta: float = 0.1  # β, the dual step size
    lam: float = 0.0  # λ_0 = 0 (Algorithm 1)
    last_gradient: float = 0.0  # g̃ of the last update, for logs

    def update(self, pr_before: float, pr_after: float) -> float:
        """One dual step from L_pr measured before and after the same parameter update."""
        self.last_gradient = (pr_before - pr_after) / self.lr + self.epsilon
        self.lam = max(0.0, self.lam - self.beta * self.last_gradient)
        return self.lam

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
