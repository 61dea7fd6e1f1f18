"""Red-teaming an erasure with attacks stronger than string tricks (the paper's Table 4):

- `ring_a_bell` (Tsai et al., ICLR 2024): a concept vector in the text encoder's feature space, searched
  into discrete prompts that carry the concept without naming it;
- `unlearndiff` (UnlearnDiffAtk, Zhang et al., 2024): the erased model's caption features optimised so it
  denoises as the original model does on the concept prompt.

`red_team` runs both against an artifact and reads the images with the model's evaluator.
"""

from zerase.evaluate.redteam.common import AttackResult, Install, RedTeamBudget, generate_from_features, no_intervention
from zerase.evaluate.redteam.ring_a_bell import RingABellAttack, concept_vector, ring_a_bell
from zerase.evaluate.redteam.runner import ATTACKS, red_team, red_team_intervention
from zerase.evaluate.redteam.unlearndiff import UnlearnDiffAttack, unlearndiff

__all__ = [
    "ATTACKS", "AttackResult", "Install", "RedTeamBudget", "RingABellAttack", "UnlearnDiffAttack", "concept_vector",
    "generate_from_features", "no_intervention", "red_team", "red_team_intervention", "ring_a_bell", "unlearndiff",
]
