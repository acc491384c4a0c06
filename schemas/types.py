"""The vocabulary every message shares: states, actions, outcomes, reason codes.

These are the words of the contract. The state machine (`fsm/`) and every adapter use them;
renaming a member here is a breaking change for every consumer of the Kafka topics.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONAL_STATES",
    "Action",
    "Anomaly",
    "CampaignState",
    "Cause",
    "DialerType",
    "Halt",
    "Intent",
    "Outcome",
    "Priority",
    "ReasonCode",
]


class CampaignState(StrEnum):
    """The seven states of the design guide (section 1)."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    STOPPING = "STOPPING"
    FAILED = "FAILED"


# The guide's "terminal" states: a transition is finished once one of these is observed.
TERMINAL_STATES = frozenset(
    {CampaignState.STOPPED, CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.FAILED}
)
TRANSITIONAL_STATES = frozenset({CampaignState.STARTING, CampaignState.PAUSING, CampaignState.STOPPING})


class Action(StrEnum):
    """What a downstream service may ask of a campaign."""

    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    RESET = "reset"


class Intent(StrEnum):
    """Why we last turned a campaign off: kept by us because a platform may not tell.

    Genesys has one `off` for both: a campaign turned off and on again continues at its next
    record, whether the user meant a pause or a stop. The intent is recorded when a pause or stop
    is sent, stored with the campaign (`campaign.state`) and read back on restart and takeover.
    """

    PAUSE = "pause"
    STOP = "stop"


class Halt(StrEnum):
    """Why a campaign is not dialing, as an audit names it (the `halt` of a CampaignStateChanged)."""

    PAUSED = "paused"  # paused by us: resume continues at the next record
    STOPPED = "stopped"  # stopped by us
    CONTACTS_EXHAUSTED = "contacts-exhausted"  # the contact list ran out (Genesys `complete`)
    FORCED_OFF = "forced-off"  # the platform forced it off (Genesys `forced_off`, `forced_stopping`)
    OFF = "off"  # off with no pause or stop of ours: created off, or turned off outside this service


class Priority(StrEnum):
    """HIGH is compliance-critical or revenue-generating and skips the dialer stagger (guide, edge case 2)."""

    HIGH = "HIGH"
    STANDARD = "STANDARD"


class DialerType(StrEnum):
    PREDICTIVE = "PREDICTIVE"
    PROGRESSIVE = "PROGRESSIVE"
    POWER = "POWER"


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"
    DEFERRED = "DEFERRED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ReasonCode(StrEnum):
    """Why a command was refused, deferred or failed. Stable codes: consumers switch on them."""

    TRANSITION_IN_FLIGHT = "TRANSITION_IN_FLIGHT"
    ALREADY_IN_STATE = "ALREADY_IN_STATE"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    UNSUPPORTED_BY_PLATFORM = "UNSUPPORTED_BY_PLATFORM"
    EXPECTED_STATE_MISMATCH = "EXPECTED_STATE_MISMATCH"
    UNKNOWN_CAMPAIGN = "UNKNOWN_CAMPAIGN"
    MALFORMED_COMMAND = "MALFORMED_COMMAND"
    CONTACT_LIST_NOT_READY = "CONTACT_LIST_NOT_READY"
    DIALER_OVER_CAPACITY = "DIALER_OVER_CAPACITY"
    DIALER_BUSY = "DIALER_BUSY"
    # A start (or resume) that would make one active campaign more than the organisation may run at
    # once (Genesys: 50 voice campaigns): DEFERRED until a place frees; FAILED if the platform refused it.
    ACTIVE_CAMPAIGN_CAP = "ACTIVE_CAMPAIGN_CAP"
    DEFERRAL_EXPIRED = "DEFERRAL_EXPIRED"
    PLATFORM_CONFLICT = "PLATFORM_CONFLICT"
    PLATFORM_ERROR = "PLATFORM_ERROR"
    TRANSITION_FAILED = "TRANSITION_FAILED"
    TOLERANCE_EXCEEDED = "TOLERANCE_EXCEEDED"
    # Who may command a campaign (fsm/authorization.py): each refusal names what failed.
    UNSIGNED = "UNSIGNED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    STALE_COMMAND = "STALE_COMMAND"
    REPLAYED = "REPLAYED"
    NOT_AUTHORISED = "NOT_AUTHORISED"
    # DEFERRED until the command's `notBefore` instant (a planned shift change).
    SCHEDULED = "SCHEDULED"
    # Limits with reasons (hostile input): a `notBefore` beyond the horizon, too many commands
    # waiting for one campaign.
    NOT_BEFORE_TOO_FAR = "NOT_BEFORE_TOO_FAR"
    TOO_MANY_WAITING = "TOO_MANY_WAITING"
    # Routing on the commands topic: the record's key is not its campaign id, or the record sits on
    # a partition other than the one murmur2(campaignId) names (the instance owning it never sees it).
    KEY_MISMATCH = "KEY_MISMATCH"
    WRONG_PARTITION = "WRONG_PARTITION"
    # The service could not handle the record (a defect or an internal limit); it was not acted on.
    INTERNAL_ERROR = "INTERNAL_ERROR"


class Cause(StrEnum):
    """What made a state change happen (the `cause` of a CampaignStateChanged)."""

    COMMAND = "command"
    NOTIFICATION = "notification"
    POLL = "poll"
    RECONCILE = "reconcile"
    TIMEOUT = "timeout"


class Anomaly(StrEnum):
    """How an observed change differed from the transition table."""

    SKIPPED_STATES = "SKIPPED_STATES"  # a legal path exists but intermediate states were never seen
    UNEXPECTED_TRANSITION = "UNEXPECTED_TRANSITION"  # no legal path leads from the old state to the new
    TRANSITION_DELAYED = "TRANSITION_DELAYED"  # past the tolerance window, but the platform names a lock
