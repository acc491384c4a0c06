"""Who may command a campaign: signatures, freshness, replays and the principal policy.

Every command must be attributable and authorised before the state machine sees it. A command
carries `requestedBy` (the principal) in its body; its record carries the headers `cfsm-key-id` and
`cfsm-signature`: an HMAC-SHA256 under a configured shared key over the record's own bytes,
``keyId \n recordKey \n value`` (`schemas/signed.py`; the producers' reference, with a worked
example, is docs/signing.md). `CommandAuthority` decides, purely, with the time handed in;
`authenticate` covers steps 1-4 (nothing but the command is needed, so it can run before any work
is spent on it), `authorise` step 5 (it may need the campaign's dialer), `check` both:

1. no signing header (when signatures are required)       -> UNSIGNED
2. an unknown key id, a signature that does not match
   (constant-time compare), a record key that is not the
   command's campaign, or a command that is not the one
   in the signed value                                    -> BAD_SIGNATURE
3. `issuedAt` older than `max_age_s`, or more than
   `future_skew_s` ahead of now                           -> STALE_COMMAND
4. a command id already taken within the freshness window
   (ids compared case-insensitively)                      -> REPLAYED
5. a policy that does not let the principal command this
   campaign (or its dialer), with this action or key      -> NOT_AUTHORISED

What the policy reads is what the signature covers: `requestedBy`, the campaign and the action are
in the signed value, the key id is the signed header.

Replay memory holds the ids of authenticated commands only until they would be stale anyway
(`issuedAt + max_age_s`), so it stays small. If more than `seen_capacity` ids are live at once,
the oldest is forgotten and its `issuedAt` becomes a horizon: an unknown id issued at or before
the horizon can no longer be proven new and is refused as STALE_COMMAND (fail closed).

Policy (`Policy.from_config`): principal -> grant. A principal and every value in a grant may be
a shell-style pattern (``*``, ``eu-*``, ``dialer-?``). Grants of every entry whose principal
pattern matches are combined: one that allows the command is enough::

    {
      "shift-planner": {"campaigns": ["*"], "actions": ["start", "stop"], "keys": ["planner-*"]},
      "team-eu":       {"dialers": ["dialer-eu-*"]},
      "ops-*":         {"campaigns": ["*"]}
    }

A grant names `campaigns` and/or `dialers` (at least one; the command's campaign id or its
campaign's dialer id must match one); `actions` defaults to every action and `keys` (the key ids
the principal may sign with, binding a name to its keys) to every key. With no policy, every
authenticated command is allowed.

Keys never appear in a repr, a log line, a decision's detail or an exception.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from schemas.base import ContractError
from schemas.commands import Command, id_key
from schemas.signed import KEY_ID_HEADER, SIGNATURE_HEADER, sign_record
from schemas.types import Action, ReasonCode

__all__ = [
    "AuthDecision",
    "CommandAuthority",
    "Grant",
    "Policy",
    "PolicyError",
    "held_until",
    "sign_message",
    "sign_record",
]

_SIGNATURE = re.compile(r"^[0-9A-Fa-f]{64}$")
_MIN_KEY_BYTES = 16
_GRANT_FIELDS = frozenset({"campaigns", "dialers", "actions", "keys"})


def sign_message(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message` under `key`, as 64 lowercase hex digits."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def held_until(command: Command, now: float) -> float | None:
    """The epoch second a command must wait for (`notBefore` still ahead of `now`), else None."""
    if command.not_before is None:
        return None
    at = command.not_before.timestamp()
    return at if at > now else None


# --- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """The verdict on one command. `reason` is the refusal's code (None when allowed)."""

    allowed: bool
    reason: ReasonCode | None
    detail: str

    @classmethod
    def allow(cls, detail: str = "authorised") -> AuthDecision:
        return cls(True, None, detail)

    @classmethod
    def refuse(cls, reason: ReasonCode, detail: str) -> AuthDecision:
        return cls(False, reason, detail)


# --- policy --------------------------------------------------------------------------------------


class PolicyError(ValueError):
    """A policy or authority configuration that cannot be used, with what is wrong and where."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one policy entry allows. Every value is a shell-style pattern."""

    campaigns: tuple[str, ...] = ()
    dialers: tuple[str, ...] = ()
    actions: tuple[str, ...] = ("*",)
    keys: tuple[str, ...] = ("*",)

    def allows(self, command: Command, dialer_id: str | None) -> bool:
        if not _matches(command.action.value, self.actions):
            return False
        if not _matches(command.key_id or "", self.keys):
            return False
        if _matches(command.campaign_id, self.campaigns):
            return True
        return dialer_id is not None and _matches(dialer_id, self.dialers)


@dataclass(frozen=True, slots=True)
class Policy:
    """Principal pattern -> grants. Build from configuration with `Policy.from_config`."""

    entries: tuple[tuple[str, Grant], ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        """Parse ``{principal: {"campaigns": [...], "dialers": [...], "actions": [...], "keys": [...]}}``.

        Raises PolicyError naming the principal and field at fault.
        """
        if not isinstance(config, Mapping):
            raise PolicyError(f"policy must be a mapping of principal -> grant, got {type(config).__name__}")
        entries = []
        for principal, raw in config.items():
            if not isinstance(principal, str) or not principal:
                raise PolicyError(f"policy principal must be a non-empty string, got {principal!r}")
            entries.append((principal, _grant(principal, raw)))
        return cls(tuple(entries))

    def allows(self, command: Command, dialer_id: str | None) -> bool:
        return any(fnmatchcase(command.requested_by, principal) and grant.allows(command, dialer_id)
                   for principal, grant in self.entries)

    def knows(self, principal: str) -> bool:
        return any(fnmatchcase(principal, pattern) for pattern, _ in self.entries)


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _grant(principal: str, raw: object) -> Grant:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"policy[{principal!r}] must be a mapping with campaigns/dialers/actions/keys, "
                          f"got {type(raw).__name__}")
    unknown = set(raw) - _GRANT_FIELDS
    if unknown:
        raise PolicyError(f"policy[{principal!r}] has unknown field(s) {sorted(unknown)}; "
                          f"allowed: {sorted(_GRANT_FIELDS)}")
    values = {name: _patterns(principal, name, raw[name]) for name in _GRANT_FIELDS if name in raw}
    if not values.get("campaigns") and not values.get("dialers"):
        raise PolicyError(f"policy[{principal!r}] must name campaigns or dialers (use [\"*\"] for all)")
    for action in values.get("actions", ()):
        if not any(fnmatchcase(a.value, action) for a in Action):
            raise PolicyError(f"policy[{principal!r}].actions: {action!r} matches no action "
                              f"({', '.join(a.value for a in Action)})")
    return Grant(**values)


def _patterns(principal: str, name: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(v, str) and v for v in raw):
        raise PolicyError(f"policy[{principal!r}].{name} must be a list of non-empty strings, got {raw!r}")
    return tuple(raw)


# --- the authority -------------------------------------------------------------------------------


class CommandAuthority:
    """Decides whether a command may reach the state machine. One instance per service; not shared.

    Two stages, so the cheap one can run before any work is spent on a command: `authenticate`
    (signature, freshness, replay; remembers the id of every authenticated command, so the same
    command presented again within `max_age_s` is REPLAYED) and `authorise` (the policy, which may
    need the campaign's dialer). `check` runs both. `refusals` counts refusals by reason and
    `allowed` the commands that passed both stages (metrics).
    """

    __slots__ = ("_future_skew", "_horizon", "_keys", "_max_age", "_policy", "_require", "_seen",
                 "_seen_capacity", "_seen_heap", "allowed", "refusals")

    def __init__(
        self,
        keys: Mapping[str, bytes],
        policy: Policy | None = None,
        *,
        max_age_s: float = 300.0,
        future_skew_s: float = 30.0,
        require_signature: bool = True,
        seen_capacity: int = 100_000,
    ) -> None:
        if not max_age_s > 0:
            raise PolicyError(f"max_age_s must be > 0, got {max_age_s!r}")
        if not future_skew_s >= 0:
            raise PolicyError(f"future_skew_s must be >= 0, got {future_skew_s!r}")
        if seen_capacity < 1:
            raise PolicyError(f"seen_capacity must be >= 1, got {seen_capacity!r}")
        for key_id, key in keys.items():
            if not isinstance(key, bytes) or len(key) < _MIN_KEY_BYTES:
                # Never the key itself: only its id and what is wrong with it.
                raise PolicyError(f"key {key_id!r} must be at least {_MIN_KEY_BYTES} bytes")
        if require_signature and not keys:
            raise PolicyError("signatures are required but no keys are configured")
        self._keys = dict(keys)
        self._policy = policy
        self._max_age = float(max_age_s)
        self._future_skew = float(future_skew_s)
        self._require = require_signature
        self._seen_capacity = seen_capacity
        self._seen: dict[str, float] = {}  # command id (its id_key) -> issuedAt
        self._seen_heap: list[tuple[float, str]] = []
        self._horizon = float("-inf")
        self.refusals: Counter[ReasonCode] = Counter()
        self.allowed = 0

    def __repr__(self) -> str:
        return (f"CommandAuthority(keys={sorted(self._keys)}, policy={'set' if self._policy else None}, "
                f"max_age_s={self._max_age:g}, future_skew_s={self._future_skew:g}, "
                f"require_signature={self._require})")

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def seen(self, command_id: str, now: float) -> bool:
        """True while `command_id` is remembered as taken (tests, diagnostics)."""
        self._expire(now)
        return id_key(command_id) in self._seen

    def remember(self, command_id: str, issued: float) -> None:
        """Seed the replay memory with a command taken earlier (restored from its campaign's record,
        so a restart or a new owner still refuses its replay)."""
        if id_key(command_id) not in self._seen:
            self._remember(id_key(command_id), issued)

    def forget(self, command_id: str) -> None:
        """An authenticated command was not taken after all (its handling failed before any result
        was durable): the same record, delivered again, is judged as new."""
        self._seen.pop(id_key(command_id), None)  # its heap entry no longer matches and is skipped when popped

    def verify_stored(self, command: Command, now: float, max_age_s: float) -> AuthDecision:
        """A command restored from the state topic (held, or waiting for its `notBefore`).

        Its freshness and replay were judged when it arrived; what a record on the state topic can
        forge is the command itself. So: the signature as on arrival (UNSIGNED, BAD_SIGNATURE), and
        an age bound, `max_age_s`, so a long-dead command planted in a record is refused
        (STALE_COMMAND). Neither remembered nor counted: the caller names what it quarantined.
        """
        refused = self._signature(command, "restored command carries no key id/signature")
        if refused is not None:
            return refused
        age = now - command.issued_at.timestamp()
        if age > max_age_s:
            return AuthDecision.refuse(ReasonCode.STALE_COMMAND,
                                       f"restored command issued {age:.0f} s ago; at most {max_age_s:g} s "
                                       "can a command wait")
        return AuthDecision.allow("restored command verified")

    @property
    def max_age_s(self) -> float:
        return self._max_age

    def check(self, command: Command, now: float, *, dialer_id: str | None = None) -> AuthDecision:
        """`authenticate`, then `authorise`: the whole decision at epoch second `now`."""
        decision = self.authenticate(command, now)
        return self.authorise(command, dialer_id=dialer_id) if decision.allowed else decision

    def authenticate(self, command: Command, now: float) -> AuthDecision:
        """Signature, freshness and replay only: needs nothing but the command and the time.

        Run it before anything costs work (a platform read, a queue slot). An authenticated
        command's id is remembered, so presenting it again is REPLAYED; an allowed decision here
        is not counted in `allowed` (that is `authorise`'s, the last gate).
        """
        decision = self._authenticate(command, now)
        if not decision.allowed:
            self._count(decision)
        return decision

    def authorise(self, command: Command, *, dialer_id: str | None = None) -> AuthDecision:
        """The policy alone, for an authenticated command; `dialer_id` is its campaign's dialer, if known."""
        decision = self._authorise(command, dialer_id)
        self._count(decision)
        return decision

    def _count(self, decision: AuthDecision) -> None:
        if decision.allowed:
            self.allowed += 1
        else:
            assert decision.reason is not None
            self.refusals[decision.reason] += 1

    def _signature(self, command: Command, unsigned: str) -> AuthDecision | None:
        """UNSIGNED or BAD_SIGNATURE, or None when the command may go on to the other checks."""
        if command.signed is not None and command.signed.has_signing_headers:
            bad = self._verify(command)
            return AuthDecision.refuse(ReasonCode.BAD_SIGNATURE, bad) if bad is not None else None
        return AuthDecision.refuse(ReasonCode.UNSIGNED, unsigned) if self._require else None

    def _authenticate(self, command: Command, now: float) -> AuthDecision:
        refused = self._signature(command, f"the record carries no {KEY_ID_HEADER}/{SIGNATURE_HEADER} headers; "
                                           "signatures are required (see docs/signing.md)")
        if refused is not None:
            return refused
        issued = command.issued_at.timestamp()
        if issued < now - self._max_age:
            return AuthDecision.refuse(ReasonCode.STALE_COMMAND,
                                       f"issued {now - issued:.0f} s ago; at most {self._max_age:g} s allowed")
        if issued > now + self._future_skew:
            return AuthDecision.refuse(ReasonCode.STALE_COMMAND,
                                       f"issued {issued - now:.0f} s in the future; clocks may differ by at "
                                       f"most {self._future_skew:g} s")
        command_id = id_key(command.id)
        self._expire(now)
        if command_id in self._seen:
            return AuthDecision.refuse(ReasonCode.REPLAYED, f"command id {command.id} was already taken")
        if issued <= self._horizon:
            return AuthDecision.refuse(ReasonCode.STALE_COMMAND,
                                       "issued before the replay memory's horizon (too many recent commands "
                                       "to prove this one new); send it again with a new id")
        self._remember(command_id, issued)
        return AuthDecision.allow(f"authenticated{' (key ' + command.key_id + ')' if command.key_id else ''}")

    def _authorise(self, command: Command, dialer_id: str | None) -> AuthDecision:
        if self._policy is not None and not self._policy.allows(command, dialer_id):
            who = command.requested_by
            if not self._policy.knows(who):
                detail = f"principal {who!r} is not in the policy"
            else:
                target = f"campaign {command.campaign_id}" + (f" (dialer {dialer_id})" if dialer_id else "")
                detail = f"principal {who!r} may not {command.action.value} {target}"
                if command.key_id:
                    detail += f" with key {command.key_id!r}"
            return AuthDecision.refuse(ReasonCode.NOT_AUTHORISED, detail)
        return AuthDecision.allow(f"authorised{' (key ' + command.key_id + ')' if command.key_id else ''}")

    def _verify(self, command: Command) -> str | None:
        """None if the signature is good, else why not (never revealing key material)."""
        record = command.signed
        assert record is not None
        if record.problem is not None:
            return record.problem
        if record.key_id is None:
            return f"{SIGNATURE_HEADER} without {KEY_ID_HEADER}"
        if record.signature is None:
            return f"{KEY_ID_HEADER} {record.key_id!r} without {SIGNATURE_HEADER}"
        key = self._keys.get(record.key_id)
        if key is None:
            return f"unknown key id {record.key_id!r}"
        if not _SIGNATURE.match(record.signature):
            return f"{SIGNATURE_HEADER} is not 64 hex digits (HMAC-SHA256)"
        expected = sign_message(key, record.message())
        if not hmac.compare_digest(expected, record.signature.lower()):
            return (f"signature does not match keyId, record key and value under key {record.key_id!r} "
                    "(see docs/signing.md)")
        if record.key != command.campaign_id.encode():
            return f"signed for another record key, not campaign {command.campaign_id!r}"
        try:
            if Command.from_record(record).model_dump() != command.model_dump():
                return "the command is not the one in its signed record"
        except ContractError:
            return "the signed record does not hold a command"
        return None

    def _remember(self, command_id: str, issued: float) -> None:
        self._seen[command_id] = issued
        heapq.heappush(self._seen_heap, (issued, command_id))
        while len(self._seen) > self._seen_capacity:
            oldest, forgotten = heapq.heappop(self._seen_heap)
            if self._seen.get(forgotten) == oldest:
                del self._seen[forgotten]
                self._horizon = max(self._horizon, oldest)

    def _expire(self, now: float) -> None:
        # An id whose command is stale by now needs no memory: STALE_COMMAND refuses it first.
        cutoff = now - self._max_age
        while self._seen_heap and self._seen_heap[0][0] < cutoff:
            issued, command_id = heapq.heappop(self._seen_heap)
            if self._seen.get(command_id) == issued:
                del self._seen[command_id]
