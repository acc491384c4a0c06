"""`campaign-fsm simulate`: run the platform simulator as a process until SIGINT or SIGTERM.

On start it prints one JSON line to stdout, `{"url": "http://127.0.0.1:PORT", ...}`, so a parent
process can read where to connect; the client secret is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import orjson

from schemas.types import CampaignState, DialerType

from ..devtools.simulator.app import Simulator, SimulatorConfig
from ..devtools.simulator.faults import FaultConfig
from ..devtools.simulator.server import SimulatorServerError, run_simulator
from ..devtools.simulator.tenant import Tenant, TenantError, generate_tenant, load_tenant
from .arguments import count, non_negative, positive, probability

__all__ = ["build_simulator", "main", "register", "run"]

_EPILOG = """\
tenant file (--tenant FILE, JSON; unknown keys are refused):
  {
    "dialers":      [{"id": "dialer-1", "licensedCapacity": 200}],
    "contactLists": [{"id": "list-1", "name": "Retention", "state": "ACTIVE",
                      "importStatus": "COMPLETED", "size": 5000}],
    "campaigns":    [{"id": "campaign-1", "name": "Q3", "dialerType": "PREDICTIVE",
                      "dialerId": "dialer-1", "contactListId": "list-1",
                      "state": "STOPPED", "activeCalls": 40}]
  }
  dialerType PREDICTIVE|PROGRESSIVE|POWER; state one of STOPPED STARTING RUNNING PAUSING
  PAUSED STOPPING FAILED (default STOPPED); contact list state ACTIVE|IMPORTING|LOCKED,
  importStatus COMPLETED|IN_PROGRESS|FAILED; activeCalls = calls carried while dialing
  (a predictive stop drains 30 + 1.5 s per call, at most 120 s). Without --tenant, a tenant
  is generated from --campaigns/--dialers. See examples/tenant.json and docs/simulator.md.

fault switches (probabilities 0..1, rolled with --seed; times in simulated seconds):
  --dialer-limit N        refuse a transition when N campaigns are already transitional
                          on its dialer (409, or 500 with --overload-500 P); 0 disables
  --read-limit R          429 above R outbound GETs per second per tenant (0 disables)
  --list-lock P           a start/stop locks the contact list for --list-lock-seconds,
                          holding the campaign in STARTING/STOPPING with empty errors
  --stall P               a transition stalls for --stall-seconds (past every tolerance window)
  --fail P                a transition ends in FAILED with errors
  --drop-notifications P  a notification is dropped
  --socket-close P        at each heartbeat, a socket gets v2.system.socket_closing and closes
                          --socket-close-grace seconds later

admin API (no auth; same host): GET /admin/state, GET|POST /admin/faults,
  POST /admin/campaigns/{id}/state|transition|release, POST /admin/contactlists/{id},
  POST /admin/dialers/{id}, POST /admin/notifications/drop|close, GET /admin/notifications,
  POST /admin/channels/{id}/expire, POST /admin/tokens/revoke, GET|DELETE /admin/traffic.
  Details in docs/simulator.md.
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run the dialing-platform simulator (guide or Genesys Cloud API) over HTTP and WebSocket",
        description="Serve a simulated outbound dialing platform: OAuth, campaigns, contact lists, dialer "
        "stats, notification channels over WebSocket, fault injection and an admin API.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    net.add_argument("--profile", choices=("guide", "genesys"), default="guide",
                     help="API profile served (default guide)")
    net.add_argument("--time-scale", type=positive, default=1.0,
                     help="simulated seconds per real second (100 => a 120 s drain takes 1.2 s)")
    net.add_argument("--rate-clock", choices=("wall", "sim"), default="wall",
                     help="clock of the 10 reads/s window: real seconds, or simulated seconds so a client "
                          "sharing --time-scale is held to the limit in simulated time (default wall)")
    net.add_argument("--seed", type=int, default=0, help="seed for generated tenants and fault dice")
    net.add_argument("--active-campaign-cap", type=count, default=None, metavar="N",
                     help="refuse a start that would make more than N campaigns active at once "
                          "(default: 50 on genesys, as Genesys does; none on guide; 0: none)")
    net.add_argument("--heartbeat-seconds", type=positive, default=30.0,
                     help="WebSocket heartbeat interval, simulated seconds (default 30)")
    net.add_argument("--channel-ttl", type=positive, default=86_400.0,
                     help="notification channel lifetime, simulated seconds (default 86400)")
    auth = parser.add_argument_group("auth")
    auth.add_argument("--client-id", default="campaign-fsm-sim", help="OAuth client id (default campaign-fsm-sim)")
    auth.add_argument("--client-secret", default=None,
                      help="OAuth client secret (default: $CAMPAIGN_FSM_SIM_CLIENT_SECRET or campaign-fsm-sim-secret)")
    auth.add_argument("--token-ttl", type=positive, default=3600.0,
                      help="access token lifetime in real seconds (default 3600)")
    tenant = parser.add_argument_group("tenant")
    tenant.add_argument("--tenant", metavar="FILE", help="tenant JSON file (format below)")
    tenant.add_argument("--campaigns", type=int, default=3, help="generated campaigns (default 3)")
    tenant.add_argument("--dialers", type=int, default=1, help="generated dialer instances (default 1)")
    tenant.add_argument("--dialer-types", default="PREDICTIVE,PROGRESSIVE,POWER",
                        help="comma list cycled over generated campaigns")
    tenant.add_argument("--initial-state", choices=[s.value for s in CampaignState], default="STOPPED",
                        help="state of generated campaigns (default STOPPED)")
    tenant.add_argument("--licensed-capacity", type=int, default=100, help="capacity of generated dialers")
    tenant.add_argument("--max-active-calls", type=int, default=60,
                        help="generated campaigns carry 0..N active calls (default 60)")
    faults = parser.add_argument_group("faults")
    d = FaultConfig()
    faults.add_argument("--dialer-limit", type=int, default=d.dialer_transition_limit, metavar="N",
                        help=f"transitional campaigns per dialer before refusing (default {d.dialer_transition_limit})")
    faults.add_argument("--overload-500", type=probability, default=d.overload_500_probability, metavar="P",
                        help="share of overload refusals answered 500 instead of 409 (default 0)")
    faults.add_argument("--read-limit", type=non_negative, default=d.read_limit_per_s, metavar="R",
                        help=f"outbound GETs per second per tenant before 429 (default {d.read_limit_per_s:g})")
    faults.add_argument("--list-lock", type=probability, default=d.list_lock_probability, metavar="P",
                        help="probability a start/stop locks the campaign's contact list (default 0)")
    faults.add_argument("--list-lock-seconds", type=non_negative, default=d.list_lock_seconds, metavar="S",
                        help=f"how long such a lock lasts (default {d.list_lock_seconds:g})")
    faults.add_argument("--stall", type=probability, default=d.stall_probability, metavar="P",
                        help="probability a transition stalls (default 0)")
    faults.add_argument("--stall-seconds", type=non_negative, default=d.stall_seconds, metavar="S",
                        help=f"how long a stalled transition lasts (default {d.stall_seconds:g})")
    faults.add_argument("--fail", type=probability, default=d.fail_probability, metavar="P",
                        help="probability a transition ends in FAILED with errors (default 0)")
    faults.add_argument("--drop-notifications", type=probability, default=d.drop_notification_probability,
                        metavar="P", help="probability a notification is dropped (default 0)")
    faults.add_argument("--socket-close", type=probability, default=d.socket_close_probability, metavar="P",
                        help="probability, per heartbeat, that a socket is told to close (default 0)")
    faults.add_argument("--socket-close-grace", type=non_negative, default=d.socket_close_grace_seconds,
                        metavar="S", help=f"socket_closing warning to close (default {d.socket_close_grace_seconds:g})")
    parser.set_defaults(func=run)


def build_simulator(args: argparse.Namespace) -> Simulator:
    """The simulator the arguments describe. Raises TenantError or ValueError with a clear message."""
    tenant: Tenant
    if args.tenant:
        tenant = load_tenant(args.tenant)
    else:
        try:
            types = tuple(DialerType(t.strip().upper()) for t in args.dialer_types.split(",") if t.strip())
        except ValueError:
            raise TenantError(f"--dialer-types: expected PREDICTIVE, PROGRESSIVE or POWER, got "
                              f"{args.dialer_types!r}") from None
        tenant = generate_tenant(args.campaigns, args.dialers, dialer_types=types,
                                 state=CampaignState(args.initial_state), licensed_capacity=args.licensed_capacity,
                                 max_active_calls=args.max_active_calls, seed=args.seed)
    faults = FaultConfig(
        dialer_transition_limit=args.dialer_limit, overload_500_probability=args.overload_500,
        read_limit_per_s=args.read_limit, list_lock_probability=args.list_lock,
        list_lock_seconds=args.list_lock_seconds, stall_probability=args.stall, stall_seconds=args.stall_seconds,
        fail_probability=args.fail, drop_notification_probability=args.drop_notifications,
        socket_close_probability=args.socket_close, socket_close_grace_seconds=args.socket_close_grace,
    )
    secret = args.client_secret or os.environ.get("CAMPAIGN_FSM_SIM_CLIENT_SECRET") or "campaign-fsm-sim-secret"
    config = SimulatorConfig(
        profile=args.profile, client_id=args.client_id, client_secret=secret, token_ttl=args.token_ttl,
        heartbeat_seconds=args.heartbeat_seconds, channel_ttl=args.channel_ttl, seed=args.seed, faults=faults,
        rate_clock=args.rate_clock, active_campaign_cap=_cap(args),
    )
    return Simulator(tenant, config, time_scale=args.time_scale)


def _cap(args: argparse.Namespace) -> int | None:
    cap: int | None = args.active_campaign_cap
    if cap is None:
        return 50 if args.profile == "genesys" else None
    return cap or None


async def _serve(args: argparse.Namespace, sim: Simulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_simulator(simulator=sim, host=args.host, port=args.port) as (url, _):
            line = {"url": url, "profile": sim.config.profile, "clientId": sim.config.client_id,
                    "campaigns": len(sim.tenant.campaigns), "timeScale": args.time_scale, "pid": os.getpid()}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    try:
        sim = build_simulator(args)
    except (TenantError, ValueError) as exc:
        print(f"campaign-fsm simulate: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, sim))
    except SimulatorServerError as exc:
        print(f"campaign-fsm simulate: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand alone: `python -m adapters.cli.simulate [options]`."""
    parser = argparse.ArgumentParser(prog="campaign-fsm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
