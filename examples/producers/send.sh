#!/bin/sh
# Send one signed command to campaign-fsm with kcat and openssl (the rule: docs/signing.md).
#
#   BOOTSTRAP=127.0.0.1:9092 TOPIC=campaign.commands KEY_ID=ops-1 SECRET='a-shared-secret-of-32-characters' \
#   CAMPAIGN=campaign-0001 ACTION=start ./send.sh
#
# Optional: COMMAND_ID (default: a new UUID), REQUESTED_BY (default: the login name), PRIORITY.
# Prints the command id; its results appear on campaign.command-results with that commandId, as sent.
# SECRET is the key as configured in the service (its text; for a hex: key use
# `openssl dgst -sha256 -mac HMAC -macopt hexkey:...` instead of -hmac).
set -eu

: "${BOOTSTRAP:?}" "${TOPIC:?}" "${KEY_ID:?}" "${SECRET:?}" "${CAMPAIGN:?}" "${ACTION:?}"
COMMAND_ID="${COMMAND_ID:-$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)}"
REQUESTED_BY="${REQUESTED_BY:-$(id -un)}"
PRIORITY="${PRIORITY:-STANDARD}"
ISSUED_AT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# The value, exactly as it will be produced: what is signed is these bytes, not their meaning.
# (The values here need no JSON escaping: ids, an action, a priority, a login name.)
VALUE=$(printf '{"id":"%s","campaignId":"%s","action":"%s","priority":"%s","requestedBy":"%s","issuedAt":"%s"}' \
  "$COMMAND_ID" "$CAMPAIGN" "$ACTION" "$PRIORITY" "$REQUESTED_BY" "$ISSUED_AT")

# HMAC-SHA256 over keyId \n recordKey \n value (no newline after the value).
SIGNATURE=$(printf '%s\n%s\n%s' "$KEY_ID" "$CAMPAIGN" "$VALUE" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.*= //')

# Keyed by the campaign id, with the Java client's partitioner (the service expects murmur2). The
# value holds no newline (kcat's record delimiter), so it is one record, byte for byte.
printf '%s' "$VALUE" | kcat -P -b "$BOOTSTRAP" -t "$TOPIC" -k "$CAMPAIGN" \
  -X topic.partitioner=murmur2_random \
  -H "cfsm-key-id=$KEY_ID" -H "cfsm-signature=$SIGNATURE" -H "content-type=application/json"

echo "$COMMAND_ID"
