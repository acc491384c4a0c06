"""Pre-flight gates, and the verdict when a tolerance window expires. Each returns a decision.

Before a transition is sent (guide, edge cases 1 and 2):

- **contact list**: the list must be ready (guide: state ACTIVE and importStatus COMPLETED; Genesys: no
  import IN_PROGRESS or FAILED; the adapter folds both into `ContactListSnapshot.ready`). Otherwise
  the command is DEFERRED with `CONTACT_LIST_NOT_READY`, waiting for that list: a contact-list
  notification or a poll brings it back, not a busy loop.
- **dialer capacity**: when `active_calls` exceeds 80 % of licensed capacity, STANDARD commands are
  DEFERRED with `DIALER_OVER_CAPACITY`; HIGH proceeds. Unknown capacity never defers.
- **active-campaign cap**: a start or resume that would make one campaign more active than the
  organisation may run (Genesys: 50) is DEFERRED with `ACTIVE_CAMPAIGN_CAP`, waiting for a place; the
  count and the waiting line are in fsm/campaign_cap.py. Checked last, so the line holds only
  commands that nothing else holds back.
- **deferral expiry**: a command deferred longer than `deferral_ttl` is REFUSED with
  `DEFERRAL_EXPIRED`, checked first so a stale command never runs late.

When a transition outlives its tolerance window (guide section 4), `judge_expiry` reads the platform's
errors and the contact list: a lock or a compliance block (a locked or importing list, or an error
whose code names a lock, compliance or throttling) means DELAYED, keep waiting; anything else means
FAILED, with the errors attached. An empty errors list with a locked contact list is the guide's
edge case 1: DELAYED.

Nothing here reads a clock or calls the platform: callers pass snapshots and `now`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from schemas.types import Priority, ReasonCode

from .ports import ContactListSnapshot, DialerLoad

__all__ = [
    "CapCheck",
    "ExpiryDecision",
    "ExpiryVerdict",
    "GateVerdict",
    "PreflightDecision",
    "PreflightPolicy",
    "WaitFor",
    "check_active_cap",
    "check_capacity",
    "check_contact_list",
    "check_deferral",
    "judge_expiry",
    "preflight",
]


class GateVerdict(StrEnum):
    PROCEED = "PROCEED"
    DEFER = "DEFER"
    REFUSE = "REFUSE"


class WaitFor(StrEnum):
    """What a deferred command waits for: the event that should trigger its next attempt."""

    CONTACT_LIST = "CONTACT_LIST"  # a contact-list notification or poll showing it ready
    DIALER_CAPACITY = "DIALER_CAPACITY"  # the dialer's load falling back under the ratio
    ACTIVE_CAMPAIGN_PLACE = "ACTIVE_CAMPAIGN_PLACE"  # a campaign of the organisation going inactive


class ExpiryVerdict(StrEnum):
    DELAYED = "DELAYED"  # a lock or compliance block explains the wait: keep waiting, emit TRANSITION_DELAYED
    FAILED = "FAILED"  # nothing explains it: the transition failed


@dataclass(frozen=True, slots=True)
class PreflightPolicy:
    """Gate settings. `capacity_ratio` is the share of licensed capacity above which STANDARD waits.

    `contact_list_recheck` and `capacity_recheck` are when a deferred command should be looked at
    again if no notification arrives first (the "next attempt" of a DEFERRED result).
    """

    capacity_ratio: float = 0.8
    deferral_ttl: float = 600.0
    contact_list_recheck: float = 10.0
    capacity_recheck: float = 15.0
    blocking_code_words: tuple[str, ...] = ("LOCK", "COMPLIANCE", "THROTTL")
    error_code_keys: tuple[str, ...] = ("code", "error")

    def __post_init__(self) -> None:
        for name in ("capacity_ratio", "deferral_ttl", "contact_list_recheck", "capacity_recheck"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"PreflightPolicy.{name} must be a finite number, got {value!r}")
        if not 0 < self.capacity_ratio <= 1:
            raise ValueError(f"PreflightPolicy.capacity_ratio must be in (0, 1], got {self.capacity_ratio}")
        for name in ("deferral_ttl", "contact_list_recheck", "capacity_recheck"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PreflightPolicy.{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.blocking_code_words or not all(w.strip() for w in self.blocking_code_words):
            raise ValueError("PreflightPolicy.blocking_code_words must be non-empty words")
        if not self.error_code_keys:
            raise ValueError("PreflightPolicy.error_code_keys must name at least one key")


@dataclass(frozen=True, slots=True)
class PreflightDecision:
    """A gate's answer. DEFER names what to wait for and when to look again at the latest."""

    verdict: GateVerdict
    reason: ReasonCode | None = None
    detail: str = ""
    wait_for: WaitFor | None = None
    wait_id: str | None = None  # the contact list id or dialer id waited for
    retry_at: float | None = None  # expiry or recheck instant, same clock as the `now` given
    expires_at: float | None = None

    @property
    def proceed(self) -> bool:
        return self.verdict is GateVerdict.PROCEED


@dataclass(frozen=True, slots=True)
class ExpiryDecision:
    """The tolerance-window verdict. `detail` feeds `CampaignMachine.delay`, `errors` `expire`."""

    verdict: ExpiryVerdict
    detail: str
    errors: list[dict[str, str]]
    reason: ReasonCode | None = None

    @property
    def delayed(self) -> bool:
        return self.verdict is ExpiryVerdict.DELAYED


@dataclass(frozen=True, slots=True)
class CapCheck:
    """The facts of the active-campaign cap for one opening (start or resume).

    `active`: every campaign holding a place (fsm/campaign_cap.py `count_active`); `ahead`: openings of
    this instance waiting in line before this one; `reserved`: this opening already passed the gate
    (it is judged again right before its POST) and keeps its place ahead of every waiter.
    """

    campaign_id: str
    active: Set[str]
    limit: int
    ahead: int = 0
    reserved: bool = False
    recheck: float = 5.0
    quota_left: int | None = None  # places this instance may still take before the next count


_PROCEED = PreflightDecision(GateVerdict.PROCEED)
_DEFAULT_POLICY = PreflightPolicy()


def check_deferral(deferred_at: float | None, now: float,
                   policy: PreflightPolicy = _DEFAULT_POLICY) -> PreflightDecision:
    """REFUSED with DEFERRAL_EXPIRED once a command has waited `deferral_ttl` since first deferred."""
    if deferred_at is None:
        return _PROCEED
    expires_at = deferred_at + policy.deferral_ttl
    if now >= expires_at:
        waited = now - deferred_at
        return PreflightDecision(
            GateVerdict.REFUSE, ReasonCode.DEFERRAL_EXPIRED,
            f"deferred for {waited:.1f} s, longer than the {policy.deferral_ttl:g} s allowed",
            expires_at=expires_at,
        )
    return PreflightDecision(GateVerdict.PROCEED, expires_at=expires_at)


def check_contact_list(contact_list: ContactListSnapshot | None, now: float,
                       policy: PreflightPolicy = _DEFAULT_POLICY, *,
                       deferred_at: float | None = None) -> PreflightDecision:
    """Proceed if the list is ready (or the campaign has none); else DEFER, waiting for the list."""
    if contact_list is None or contact_list.ready:
        return _PROCEED
    state = "locked" if contact_list.locked else "not ready"
    return _defer(
        ReasonCode.CONTACT_LIST_NOT_READY,
        _join(f"contact list {contact_list.id} is {state}", contact_list.detail),
        WaitFor.CONTACT_LIST, contact_list.id, now, policy.contact_list_recheck, policy, deferred_at,
    )


def check_capacity(load: DialerLoad | None, priority: Priority, now: float,
                   policy: PreflightPolicy = _DEFAULT_POLICY, *,
                   deferred_at: float | None = None) -> PreflightDecision:
    """DEFER a STANDARD command while active calls exceed `capacity_ratio` of licensed capacity."""
    if load is None or load.capacity is None or Priority(priority) is Priority.HIGH:
        return _PROCEED
    # Exact decimal ratio, so 7 active calls of 10 is not "over 70 %" through float rounding.
    if load.active_calls <= Fraction(repr(float(policy.capacity_ratio))) * load.capacity:
        return _PROCEED
    return _defer(
        ReasonCode.DIALER_OVER_CAPACITY,
        f"dialer {load.dialer_id} has {load.active_calls} active calls, over "
        f"{float(policy.capacity_ratio):.0%} of its capacity {load.capacity}",
        WaitFor.DIALER_CAPACITY, load.dialer_id, now, policy.capacity_recheck, policy, deferred_at,
    )


def check_active_cap(cap: CapCheck | None, now: float, policy: PreflightPolicy = _DEFAULT_POLICY, *,
                     deferred_at: float | None = None) -> PreflightDecision:
    """DEFER an opening while the campaigns holding a place (itself apart), plus the openings waiting
    before it, already fill the organisation's cap. None (no cap, or not an opening): proceed."""
    if cap is None:
        return _PROCEED
    others = len(cap.active - {cap.campaign_id})
    before = 0 if cap.reserved else cap.ahead
    shared_out = not cap.reserved and cap.quota_left is not None and cap.quota_left <= 0
    if others + before < cap.limit and not shared_out:
        return _PROCEED
    waiting = f"; {before} opening(s) wait before it" if before else ""
    if shared_out and others + before < cap.limit:
        waiting += "; this instance took its share of the free places until the next count"
    return _defer(
        ReasonCode.ACTIVE_CAMPAIGN_CAP,
        f"the organisation has {others} active campaign(s), its cap is {cap.limit}{waiting}",
        WaitFor.ACTIVE_CAMPAIGN_PLACE, "(organisation)", now, cap.recheck, policy, deferred_at,
    )


def preflight(*, contact_list: ContactListSnapshot | None, load: DialerLoad | None, priority: Priority,
              now: float, deferred_at: float | None = None,
              policy: PreflightPolicy = _DEFAULT_POLICY, cap: CapCheck | None = None) -> PreflightDecision:
    """All gates in order: deferral expiry, contact list, dialer capacity, active-campaign cap. The
    first no wins.

    `deferred_at` is when the command was first deferred (None if never): a deferral keeps its
    original expiry however many times it is re-deferred.
    """
    expired = check_deferral(deferred_at, now, policy)
    if not expired.proceed:
        return expired
    listed = check_contact_list(contact_list, now, policy, deferred_at=deferred_at)
    if not listed.proceed:
        return listed
    loaded = check_capacity(load, priority, now, policy, deferred_at=deferred_at)
    if not loaded.proceed:
        return loaded
    return check_active_cap(cap, now, policy, deferred_at=deferred_at)


def judge_expiry(errors: Iterable[Mapping[str, str]], contact_list: ContactListSnapshot | None,
                 policy: PreflightPolicy = _DEFAULT_POLICY) -> ExpiryDecision:
    """A tolerance window ran out: DELAYED for a lock or compliance block, FAILED otherwise."""
    copied = [dict(e) for e in errors]
    if contact_list is not None and contact_list.locked:
        detail = _join(f"contact list {contact_list.id} is locked", contact_list.detail)
        return ExpiryDecision(ExpiryVerdict.DELAYED, detail, copied)
    for error in copied:
        code = _blocking_code(error, policy)
        if code is not None:
            message = error.get("message") or error.get("details") or ""
            detail = _join(f"platform reports {code}", message)
            return ExpiryDecision(ExpiryVerdict.DELAYED, detail, copied)
    if copied:
        codes = ", ".join(_codes(copied, policy)) or "unnamed errors"
        detail = f"tolerance window exceeded; platform errors: {codes}"
    else:
        detail = "tolerance window exceeded; the platform reports no error and no lock"
    return ExpiryDecision(ExpiryVerdict.FAILED, detail, copied, ReasonCode.TOLERANCE_EXCEEDED)


# --- internals -----------------------------------------------------------------------------------

# Words of an error code, whatever its style: CONTACT_LIST_LOCKED, contactListLocked, compliance.rule
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _blocking_code(error: Mapping[str, str], policy: PreflightPolicy) -> str | None:
    """The error's code if one of its words starts with a blocking word (so UNLOCKED does not
    match LOCK, but LOCKED and LOCK_HELD do)."""
    markers = tuple(w.upper() for w in policy.blocking_code_words)
    for key in policy.error_code_keys:
        code = error.get(key)
        if not isinstance(code, str):
            continue
        if any(word.upper().startswith(markers) for word in _WORDS.findall(code)):
            return code
    return None


def _codes(errors: Sequence[Mapping[str, str]], policy: PreflightPolicy) -> list[str]:
    codes: list[str] = []
    for error in errors:
        for key in policy.error_code_keys:
            code = error.get(key)
            if isinstance(code, str) and code:
                codes.append(code)
                break
    return codes


def _join(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head


def _defer(reason: ReasonCode, detail: str, wait_for: WaitFor, wait_id: str, now: float, recheck: float,
           policy: PreflightPolicy, deferred_at: float | None) -> PreflightDecision:
    expires_at = (now if deferred_at is None else deferred_at) + policy.deferral_ttl
    return PreflightDecision(
        GateVerdict.DEFER, reason, detail, wait_for, wait_id,
        retry_at=min(now + recheck, expires_at), expires_at=expires_at,
    )
