"""The deployments domain's facts, declared once: versions, weights and generation's limits."""

from __future__ import annotations

BASE_VERSION = 0  # the base model, no erasure applied
MAX_VERSION = 2**31 - 1
MAX_ERASURES = 64  # per deployment
MAX_WEIGHT = 10.0  # weights are in (0, MAX_WEIGHT]
# Ways of serving a version of several erasures with a patch that a worker makes before it is served
# (ZERASE_FUSION; "routed" serves that patch to the prompts naming none of the erasures, and to the others the
# erasures they name; "average" is the paper's 1/N stack of the erasures themselves).
FUSED = ("closed_form", "consolidated", "routed")
ROUTED = "routed"
PATCH_HEADER = "X-Safety-Patch-Version"  # the deployment a generated image was made under
GUARD_HEADER = "X-Takedown-Guard"  # the takedowns whose guard rewrote the prompt (ZERASE_GUARD_ACTION=anchor)

MAX_PROMPT_TOKENS = 512
MAX_PROMPT_CHARS = 20_000
MIN_SIDE, MAX_SIDE = 16, 1024
MAX_GENERATION_STEPS = 50
MAX_GUIDANCE = 20.0
