"""What the console's buttons do: the same service calls as the API's routes, their outcome shown as a
message on the next page (post/redirect/get), a refused action as the service's own words."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.responses import RedirectResponse

from api.console.session import PREFIX, User
from service.approvals import service as approvals
from service.approvals.models import ApprovalRequest
from service.core.errors import DomainError
from service.core.settings import Settings
from service.deployments import service as deployments
from service.deployments.models import Deployment
from service.keys import sessions


def flash(user: User, message: str) -> None:
    sessions.set_flash(user.db, user.session, message)


def back(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


@contextmanager
def reported(user: User, what: str) -> Iterator[None]:
    """Run an action; a refusal (gate, conflict, role) becomes the next page's message, nothing changed."""
    try:
        yield
    except DomainError as exc:
        user.db.rollback()
        flash(user, f"{what} refused: {exc}")


def deploy(user: User, settings: Settings, job_id: str, force: bool) -> str:
    return _outcome(approvals.deploy_or_request(user.db, job_id, user.session.actor, settings, force=force),
                    "Deployed")


def retire(user: User, settings: Settings, job_id: str) -> str:
    return _outcome(approvals.retire_or_request(user.db, job_id, user.session.actor, settings), "Retired")


def activate(user: User, settings: Settings, version: int) -> str:
    made = approvals.activate_or_request(user.db, version, user.session.actor, settings)
    if isinstance(made, ApprovalRequest) or (made is not None and made.pending_activation):
        return _outcome(made, "Activated")
    return f"Version {version} is active"


def _outcome(made: Deployment | ApprovalRequest | None, done: str) -> str:
    if isinstance(made, ApprovalRequest):
        return f"Approval requested ({made.id}): another moderator must approve it on the Approvals page"
    if made is not None and made.pending_activation:
        return (f"Version {made.version} is being judged as served (every erasure of the set together); it goes "
                "live when the deploy gate passes it: see its row on the Deployments page")
    return f"{done}: version {made.version if made else 0} is active"


def is_deployed(user: User, job_id: str) -> bool:
    active = deployments.active(user.db)
    return active is not None and any(e["erasure_id"] == job_id for e in active.entries)
