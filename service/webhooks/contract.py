"""The webhooks domain's facts, declared once: the events a subscription can name, ids, limits."""

from __future__ import annotations

import enum


class EventType(enum.StrEnum):
    ERASURE_SUCCEEDED = "erasure.succeeded"
    ERASURE_FAILED = "erasure.failed"
    ERASURE_CANCELLED = "erasure.cancelled"
    DEPLOYMENT_ACTIVATED = "deployment.activated"
    APPROVAL_REQUESTED = "approval.requested"


# Sent to one subscription on request (POST /webhooks/{id}/test); not something to subscribe to.
TEST_EVENT = "webhook.test"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # out of attempts, refused by the allowlist, or its subscription was deleted


WEBHOOK_ID_PATTERN = r"^whk_[0-9a-f]{16}$"
SECRET_PREFIX = "whsec_"  # the Standard Webhooks form: whsec_ + base64 of the key
MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_ERROR = 500  # an attempt's error message, cut to this
MAX_SUBSCRIPTIONS = 100  # live ones
MAX_DELIVERIES_PAGE = 200
MAX_BACKOFF_S = 24 * 3600  # no wait between two attempts is longer
MAX_IN_FLIGHT = 8  # deliveries one API process sends at once, at most one per webhook
