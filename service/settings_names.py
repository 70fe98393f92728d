"""The names of the variables the service reads its settings from: the one place the
toolkit (`ops.release.stack.Stack.service_env`), the service (`service.config`) and the container
image (`ops.release.build`'s Dockerfile) spell them."""

from __future__ import annotations

GATEWAY_URL = "NEXUS_GATEWAY_URL"
HOLD_SECONDS = "NEXUS_HOLD_SECONDS"
PAYMENT_TIMEOUT_S = "NEXUS_PAYMENT_TIMEOUT_S"
PAYMENT_ATTEMPTS = "NEXUS_PAYMENT_ATTEMPTS"
PAYMENT_BACKOFF_S = "NEXUS_PAYMENT_BACKOFF_S"
MAIL_OUTBOX = "NEXUS_MAIL_OUTBOX"
IDENTITY_KEYS = "NEXUS_IDENTITY_KEYS"
VERSION = "NEXUS_VERSION"  # the toolkit's version id of what runs, for the logs
