"""The platform simulator: a real HTTP + WebSocket server speaking the guide's API or Genesys Cloud's.

It holds a tenant (campaigns, contact lists, dialer instances), moves campaigns through their states
asynchronously on a scaled clock (`adapters.clock.SystemClock`) or a fake one (`fsm.testing.FakeClock`),
pushes notifications, injects the guide's faults (on demand through the admin API, or by seeded
probability) and records every request it served.

Entry points: `Simulator` (the handle; `sim.app` is the ASGI app for `httpx.ASGITransport`),
`run_simulator()` (serve it on 127.0.0.1:<free port>), and `campaign-fsm simulate` (the CLI).
See docs/simulator.md.
"""

from .app import Simulator, SimulatorConfig, StateRecord
from .channels import Hub, NotificationRecord
from .clock import Scheduler
from .engine import DEFAULT_TIMING, DurationSpec, Engine, Timing
from .faults import FaultConfig, FaultInjector, TransitionOverride
from .profiles import GENESYS_STATUS_OF_STATE
from .server import SimulatorServerError, run_simulator
from .tenant import (
    SimCampaign,
    SimContactList,
    SimDialer,
    Tenant,
    TenantError,
    generate_tenant,
    load_tenant,
    parse_tenant,
)
from .traffic import InFlightSample, RequestRecord, TrafficLog

__all__ = [
    "DEFAULT_TIMING",
    "GENESYS_STATUS_OF_STATE",
    "DurationSpec",
    "Engine",
    "FaultConfig",
    "FaultInjector",
    "Hub",
    "InFlightSample",
    "NotificationRecord",
    "RequestRecord",
    "Scheduler",
    "SimCampaign",
    "SimContactList",
    "SimDialer",
    "Simulator",
    "SimulatorConfig",
    "SimulatorServerError",
    "StateRecord",
    "Tenant",
    "TenantError",
    "Timing",
    "TrafficLog",
    "TransitionOverride",
    "generate_tenant",
    "load_tenant",
    "parse_tenant",
    "run_simulator",
]
