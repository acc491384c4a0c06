"""Bench: the shift-change storm. 1,000 running campaigns on 20 dialers, all told to stop at once
(guide); on genesys, 1,000 campaigns under the 50-active cap, in waves of 50.

Three runs, each on a fresh simulator process with a fresh tenant (so nothing carries over):

1. `ws-up`: the service (in-process, `adapters.devtools.stack.local_stack`, its own topics and group)
   with platform notifications followed;
2. `ws-down`: the same with `platform.notifications = False`, so the service never opens a channel
   and tracks every transition by fallback polling (2 s, x1.5, cap 30 s, +-20 % jitter, staggered).
   This is "down for the whole storm": a socket-closing fault would instead make the channel flap
   and reconnect, measuring recovery rather than the steady fallback;
3. `naive`: `bench/_storm_naive.py`, a client without the guide's rules (fixed 2 s polling of every
   campaign, no state gate, no per-dialer limit, no read limiter, 429s ignored) sending the same
   1,000 stops straight to the simulator with httpx.

The tenant: 1,000 campaigns round-robin over 20 dialers; on each dialer every other campaign is
PREDICTIVE and the rest alternate PROGRESSIVE/POWER (so every dialer is half predictive); all
RUNNING; 0..`--max-calls` (10) active calls each on 1,000 licensed lines per dialer, so no dialer
is above 50 % of capacity: the bench measures the storm, not the 80 % capacity deferral (which
would only hold STANDARD stops back). One campaign per dialer (`--high`, 20) is HIGH priority, the
rest STANDARD. The simulator keeps the guide's platform limits: 409/500 above 3 transitions in
flight per dialer, 429 above 10 reads per *simulated* second (`--rate-clock sim`).

The genesys profile (`--profile genesys`): simulator and service speak the Genesys Cloud API, so two
of its limits shape the storm. At most 50 campaigns may be active per organisation (the simulator
refuses a 51st start, 400), so 1,000 campaigns cannot all be RUNNING and a 1,000-stop storm would be
50 stops and 950 no-ops. The storm is instead the shift change as successive waves: the 1,000
campaigns are 20 shifts of `--wave` (50) campaigns, shift 1 RUNNING at the start; each wave stops
shift k and starts shift k + 1 in one burst (stops and starts published at once), the starts held by
the active-campaign cap gate (DEFERRED `ACTIVE_CAMPAIGN_CAP`) until the stops free their places; the
next wave goes when every command of the last one has ended; the last wave stops the last shift.
1,950 commands: every campaign stopped once, all but the first shift started once, each start
through the cap gate while the shift before still holds the places. Chosen over "50 on, all stopped
at once" (50 stops say little about a 300-per-minute budget) and over one start storm of 950 held by
the gate (the held starts would wait for places that never free, until their deferral expires).
Second, the request budget: 300 requests of any method per 60 s per OAuth client, so the run is
bounded by requests, not by the platform: 4,000 to 9,000 simulated seconds per run at 1,000
campaigns (the held starts re-check their contact list and line distribution while they wait, and
spend from it). The figures that matter are the simulator's: `http_429` (0) and
`peak_requests_per_60s`, the most requests of any method (the token POST apart: Genesys takes it at
login.<region>, outside that budget) that arrived in any sliding 60 s of simulated time, <= 300;
also `http_400` (0: no start refused for the cap, no invalid transition) and `cap_deferred`, the
commands held by the gate. Scale 30 for both runs keeps a full run within 5 to 10 minutes: the
budget holds in simulated time at any scale (it is counted on the simulated clock on both sides),
but every real millisecond of the service is 30 simulated ones, so the detection latencies are
reported without the guide's 100 ms target (met only at scale ~2). The naive run speaks the guide's
API only and is not offered on genesys.

Why the simulator runs as a subprocess (`python -m adapters.cli.simulate`): it is the platform,
not part of us. In-process it would share the service's event loop and GIL, so its HTTP and
WebSocket work would delay the service's and inflate (or hide) the detection latency; on its own
process it runs on the other core as a real platform would. What the bench needs from it comes
through its admin API (`GET /admin/traffic`: every request it served with status, kind and
simulated/wall time, and the in-flight timeline of every transitional state entered or left).

Time is scaled: service and simulator share the scale, all rates and delays are in simulated
seconds, and the 15 s STANDARD stagger makes a dialer's 50 stops take >= 750 simulated seconds.
A larger scale shortens the run but multiplies every real millisecond, so each run has its own
scale (`--scale-up`, `--scale-down`, `--scale-naive`):

- ws-up, 2: the detection target is 100 simulated ms, and the service's real p99 from platform
  change to event on Kafka is ~10-35 ms on a shared 2-core machine (x2 = 20-70 sim ms);
- ws-down, 4: no latency target. The read window holds at any scale: the limiter counts a read
  from its answer, so a real stall of either process (which the scale turns into a large part of a
  simulated second) delays reads but cannot bunch eleven into one simulated second at the
  simulator. (Counted from the grant, as before, a 52 ms stall at scale 8 put 11 reads in one
  simulated second, and a full run on a busy machine got 1 and 3 429s at scales 2 and 4.)
- naive, 2: the naive client asks for 500 reads per simulated second; at 2 it keeps its 2 s
  cadence (the table shows the achieved interval), at 4 it cannot and would under-count.

What is measured (from the simulator's own record unless said otherwise):

- `completed`: COMPLETED results on `campaign.command-results` (of `commands`: one stop per campaign
  on the guide, the waves' stops and starts on genesys), per run;
- `peak_requests_per_60s`: the most API requests of any method within any 60 s of simulated time
  (target <= 300 on genesys; reported on the guide too);
- `max_in_flight_per_dialer`: the most campaigns transitional at once on one dialer;
- `peak_reads_per_s`: the most GETs (429s included) within any 1 s of simulated time;
- `http_409`, `http_429`, `http_500`: answers the simulator gave the service, both runs;
- `gets_per_transition`: the service's GETs / campaigns (startup reads included); the JSON key is
  the worse of the two runs, with `_ws_up` and `_ws_down` beside it;
- `naive_gets_per_transition`: every GET the naive client sent / campaigns (client-side count);
- `detect_p99_ms_*`: for each campaign, the wall time at which the simulator moved it to STOPPED
  (its in-flight timeline: the sample where the campaign leaves STOPPING) to the wall time at
  which a dedicated consumer on `campaign.events` (fetch_max_wait `--fetch-wait-ms`) received our
  `CampaignStateChanged` to STOPPED; both are CLOCK_MONOTONIC (shared by the processes of one
  machine), and the real latency is multiplied by the run's scale to give simulated ms. STOPPING
  is not a detection (it is emitted on the 202), so only STOPPED counts. Beside it, from a sink
  wrapper inside the service: when the orchestrator handed the event to the sink (`emit`) and
  when the broker acknowledged it (`acked`, the literal "on Kafka"), to split the latency. The
  table also shows the p99 of the STOPPEDs that happened after the last ACCEPTED result (the
  service's steady state, once the intake backlog is gone), and when the first POST, the last
  HIGH POST and the last ACCEPTED went out, which show how long the storm's intake held
  dispatch and detection back.

Genesys: `.venv/bin/python bench/storm_bench.py --profile genesys` (scales 30 by default; 5 to
10 minutes; `--campaigns 200 --dialers 4` for a three-minute look).

Run: `.venv/bin/python bench/storm_bench.py [--broker noida|tansu|host:port] [--scale-up 2]
[--scale-down 4] [--scale-naive 2] [--runs up,down,naive] [--dump DIR]` (about 18 minutes; `--campaigns
40 --dialers 4 --scale-up 10 --scale-down 10 --scale-naive 10` for a one-minute look). Progress goes
to stderr; the table, then as the last line one JSON object, to stdout. Exit 0 when every target
is met. Everything started here (broker, simulator processes) is stopped on the way out, Ctrl-C
included.

The bench is in five files: this one (the options and the order of the runs), `_storm_platform.py`
(the tenant and the simulator process), `_storm_simdiag.py` (the simulator with `--sim-diag`),
`_storm_runs.py` (the service runs and the naive run), `_storm_report.py` (the table and the JSON
line), beside `_storm_naive.py` (the naive client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _storm_platform import storm_plan, storm_tenant
from _storm_report import report
from _storm_runs import ServiceRun, naive_run, service_run

from adapters.devtools.brokers import BrokerError, BrokerHandle, broker_from_env

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="noida", help="noida (default) | tansu | host:port[,host:port]")
    parser.add_argument("--profile", choices=("guide", "genesys"), default="guide",
                        help="the platform profile of simulator and service (default guide)")
    parser.add_argument("--wave", type=int, default=50,
                        help="genesys: campaigns per shift (on at once), at most the simulator's cap of 50")
    parser.add_argument("--campaigns", type=int, default=1000)
    parser.add_argument("--dialers", type=int, default=20)
    parser.add_argument("--high", type=int, default=20, help="HIGH priority stops (the first N campaigns)")
    parser.add_argument("--max-calls", type=int, default=10, help="active calls per campaign, 0..N")
    parser.add_argument("--capacity", type=int, default=1000, help="licensed lines per dialer")
    parser.add_argument("--scale-up", type=float, default=None,
                        help="time scale of the ws-up run (default: guide 2, genesys 30)")
    parser.add_argument("--scale-down", type=float, default=None,
                        help="time scale of the ws-down run (default: guide 4, genesys 30)")
    parser.add_argument("--scale-naive", type=float, default=2.0, help="time scale of the naive run")
    parser.add_argument("--runs", default=None,
                        help="which runs, comma list of up, down, naive (default: guide all three, genesys up,down)")
    parser.add_argument("--cap-s", type=float, default=None,
                        help="service runs give up after this, sim s (default: guide 3600, genesys 14400)")
    parser.add_argument("--naive-cap-s", type=float, default=1800.0, help="naive run gives up after this, sim s")
    parser.add_argument("--naive-traffic", action="store_true",
                        help="also fetch the naive run's in-flight timeline (large)")
    parser.add_argument("--fetch-wait-ms", type=int, default=5, help="the watching consumer's fetch_max_wait_ms")
    parser.add_argument("--progress-s", type=float, default=15.0, help="progress line every N real s (stderr)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sim-diag", action="store_true",
                        help="the simulator logs its GC pauses and event-loop stalls over 20 ms "
                        "(see _storm_simdiag.py)")
    parser.add_argument("--dump", metavar="DIR", help="write each run's raw record (requests, timeline, results) here")
    args = parser.parse_args(argv)
    genesys = args.profile == "genesys"
    if args.runs is None:
        args.runs = "up,down" if genesys else "up,down,naive"
    if args.scale_up is None:
        args.scale_up = 30.0 if genesys else 2.0
    if args.scale_down is None:
        args.scale_down = 30.0 if genesys else 4.0
    if args.cap_s is None:
        args.cap_s = 14400.0 if genesys else 3600.0
    runs = {r.strip() for r in args.runs.split(",") if r.strip()}
    if not runs or not runs <= {"up", "down", "naive"}:
        parser.error(f"--runs: a comma list of up, down, naive; got {args.runs!r}")
    if genesys and "naive" in runs:
        parser.error("--runs: the naive client speaks the guide's API only; on genesys choose up, down")
    if genesys and not 1 <= args.wave <= 50:
        parser.error(f"--wave: 1..50 (Genesys runs at most 50 campaigns at once), got {args.wave}")
    args.run_set = runs
    if args.campaigns < 1 or args.dialers < 1 or not 0 <= args.high <= args.campaigns or args.max_calls < 0:
        parser.error("--campaigns and --dialers must be >= 1, --high within 0..campaigns, --max-calls >= 0")
    if min(args.scale_up, args.scale_down, args.scale_naive, args.cap_s, args.naive_cap_s) <= 0:
        parser.error("scales and caps must be > 0")
    return args


async def _all_runs(broker: BrokerHandle, args: argparse.Namespace, workdir: Path) -> tuple[str, dict[str, Any]]:
    genesys = args.profile == "genesys"
    tenant, ids, high = storm_tenant(args.campaigns, args.dialers, high=args.high, max_calls=args.max_calls,
                                     capacity=args.capacity, seed=args.seed, running=args.wave if genesys else None)
    plan = storm_plan(args.profile, ids, args.wave)
    runs: list[ServiceRun] = []
    if "up" in args.run_set:
        runs.append(await service_run(broker, args, workdir, tenant, ids, high, label="ws-up",
                                      scale=args.scale_up, notifications=True, plan=plan))
    if "down" in args.run_set:
        runs.append(await service_run(broker, args, workdir, tenant, ids, high, label="ws-down",
                                      scale=args.scale_down, notifications=False, plan=plan))
    naive = None
    if "naive" in args.run_set:
        naive = await naive_run(args, workdir, tenant, ids, scale=args.scale_naive)
    return report(runs, naive, len(ids), profile=args.profile)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    args = _parse(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="storm-bench-") as tmp:
        workdir = Path(tmp)
        try:
            broker = broker_from_env(workdir / "broker", {"CAMPAIGN_FSM_BROKER": args.broker})
        except BrokerError as exc:
            print(f"storm_bench: --broker: {exc}", file=sys.stderr)
            return 2
        print(f"broker {broker.kind} at {broker.bootstrap} (pid {broker.pid})", file=sys.stderr, flush=True)
        try:
            table, summary = asyncio.run(_all_runs(broker, args, workdir))
        except KeyboardInterrupt:
            print("storm_bench: interrupted; everything it started is being stopped", file=sys.stderr)
            return 130
        finally:
            broker.stop()
    summary["real_s_total"] = round(time.monotonic() - began, 1)
    print(table)
    print(json.dumps(summary))
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
