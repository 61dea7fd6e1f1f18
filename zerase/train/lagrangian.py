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


class _Checkpointed:
    """A controller's state is its dataclass fields: what a checkpoint saves and a resumed run puts back."""

    def state_dict(self) -> dict[str, float]:
        return asdict(self)  # type: ignore[call-overload]  # the subclasses are dataclasses

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class LambdaController(_Checkpointed):
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


@dataclass
class LevelController(_Checkpointed):
    """λ as the dual variable of a constraint on the *level* of drift, not its rate (issue 15).

    Eq. 15 summed over steps gives λ_T = (β/α)(L_pr(θ_T) − L_pr(θ_0)) − β·ε·T: a weight proportional to
    the drift so far, in which ε moves λ by at most β·ε·T (0.2 at 200 steps, ε = 1e-2). Here the
    constraint is L_pr ≤ τ·E, with E = E||v_θ(x_t, c_pr)||² + E||v_θ(x_t, ∅)||² the frozen preservation
    outputs' energy (so τ is the tolerated relative squared drift), and λ is its projected dual ascent:

        λ_{t+1} = max(0, λ_t + β · (L_pr(θ_t) / (τ·E) − 1))

    the issue's λ ← max(0, λ + β(L_pr/ref − τ)) with ref = τ·E and the violation in units of τ, so that
    β = 0.1 moves λ by 0.1 per step at twice the tolerated drift, whatever τ is. λ keeps rising while the
    drift stays above τ·E (an integral, not a proportional, response) and falls back once it is below.
    """

    beta: float  # β, the dual step size
    tau: float  # τ, the tolerated L_pr relative to the frozen energy
    energy: float  # E, measured on the preservation bank before training
    lam: float = 0.0  # λ_0 = 0, as Algorithm 1
    last_level: float = 0.0  # L_pr / E of the last update, for logs

    def update(self, pr_now: float) -> float:
        self.last_level = pr_now / self.energy
        self.lam = max(0.0, self.lam + self.beta * (self.last_level / self.tau - 1.0))
        return self.lam
