"""The console provider, the default of every channel without an account: a message is
"delivered" into the outbox and read on the messages page, so a demo needs no account."""

from __future__ import annotations

import uuid

from journeys.providers.base import Outcome, Outgoing, Provider, Result


class Console(Provider):
    kind = "console"
    channel = "any"
    label = "Console (the outbox page)"
    idempotent = True
    concurrency = 1

    def send_one(self, message: Outgoing) -> Outcome:
        return Outcome(Result.DELIVERED, provider_message_id=f"console-{uuid.uuid4().hex[:16]}")
