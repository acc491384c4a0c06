"""Send one signed command to campaign-fsm with confluent-kafka (librdkafka); the rule: docs/signing.md.

    BOOTSTRAP=127.0.0.1:9092 TOPIC=campaign.commands KEY_ID=ops-1 SECRET='a-shared-secret-of-32-characters' \\
    CAMPAIGN=campaign-0001 ACTION=start python send.py

Optional: COMMAND_ID (default a new UUID), REQUESTED_BY, PRIORITY. Prints the command id; its
results carry that commandId, as sent. Needs nothing of campaign-fsm: only `confluent-kafka`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import sys
import uuid
from datetime import UTC, datetime

from confluent_kafka import Producer


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or default
    if not value:
        sys.exit(f"error: {name} is not set")
    return value


def main() -> int:
    key_id, secret, campaign = env("KEY_ID"), env("SECRET"), env("CAMPAIGN")
    command = {
        "id": env("COMMAND_ID", str(uuid.uuid4())),
        "campaignId": campaign,
        "action": env("ACTION"),
        "priority": env("PRIORITY", "STANDARD"),
        "requestedBy": env("REQUESTED_BY", getpass.getuser()),
        "issuedAt": datetime.now(UTC).isoformat(),  # "+00:00" and microseconds: signed and accepted as is
    }
    # Serialised once: these bytes are what is signed and what is produced.
    value = json.dumps(command).encode()
    signature = hmac.new(secret.encode(), f"{key_id}\n{campaign}\n".encode() + value, hashlib.sha256).hexdigest()

    # librdkafka's default partitioner is consistent_random; the service expects the Java client's murmur2.
    producer = Producer({"bootstrap.servers": env("BOOTSTRAP"), "partitioner": "murmur2_random",
                         "enable.idempotence": False, "acks": "all"})
    failures: list[str] = []
    producer.produce(env("TOPIC"), key=campaign.encode(), value=value,
                     headers=[("cfsm-key-id", key_id.encode()), ("cfsm-signature", signature.encode()),
                              ("content-type", b"application/json")],
                     on_delivery=lambda err, _msg: failures.append(str(err)) if err is not None else None)
    if producer.flush(30) != 0 or failures:
        print(f"error: not delivered: {failures or 'timed out'}", file=sys.stderr)
        return 2
    print(command["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
