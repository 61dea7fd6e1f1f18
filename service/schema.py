"""Every table of every domain on one MetaData: what Alembic compares migrations against."""

from __future__ import annotations

from service.approvals import models as approval_models
from service.audit import models as audit_models
from service.core.tables import Base
from service.deployments import models as deployment_models
from service.erasures import models as erasure_models
from service.keys import models as key_models
from service.webhooks import models as webhook_models

metadata = Base.metadata
DOMAIN_MODELS = (erasure_models, deployment_models, key_models, audit_models, webhook_models, approval_models)
