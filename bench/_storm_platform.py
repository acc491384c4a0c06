"""The storm bench's platform: the tenant (`storm_tenant`) and the simulator as a process of its own
(`SimProcess`), with or without its diagnostics (`_storm_simdiag.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from schemas.types import Action

__all__ = ["CLIENT_ID", "SimProcess", "storm_plan", "storm_tenant"]

CLIENT_ID = "storm-bench"
ROOT = Path(__file__).resolve().parent.parent


def storm_tenant(campaigns: int, dialers: int, *, high: int, max_calls: int, capacity: int,
                 seed: int, running: int | None = None) -> tuple[dict[str, Any], list[str], set[str]]:
    """The tenant document, the campaign ids, and the ids of the HIGH priority ones. The first
    `running` campaigns (all if None) are RUNNING, the others STOPPED."""
    rng = random.Random(seed)
    width = max(4, len(str(campaigns)))
    dialer_ids = [f"dialer-{i + 1:02d}" for i in range(dialers)]
    doc: dict[str, Any] = {"dialers": [{"id": d, "licensedCapacity": capacity} for d in dialer_ids],
                           "contactLists": [], "campaigns": []}
    ids: list[str] = []
    for i in range(campaigns):
        cid, lid = f"campaign-{i + 1:0{width}d}", f"list-{i + 1:0{width}d}"
        nth_on_dialer = i // dialers
        # Types alternate within each dialer (not across dialers), so every dialer is half predictive.
        dialer_type = ("PREDICTIVE" if nth_on_dialer % 2 == 0
                       else "PROGRESSIVE" if nth_on_dialer % 4 == 1 else "POWER")
        doc["contactLists"].append({"id": lid, "name": f"Contacts {i + 1}"})
        doc["campaigns"].append({"id": cid, "name": f"Campaign {i + 1}", "dialerType": dialer_type,
                                 "dialerId": dialer_ids[i % dialers], "contactListId": lid,
                                 "state": "RUNNING" if running is None or i < running else "STOPPED",
                                 "activeCalls": rng.randint(0, max_calls)})
        ids.append(cid)
    return doc, ids, set(ids[:high])


def storm_plan(profile: str, ids: list[str], wave: int) -> list[list[tuple[str, Action]]]:
    """The storm as waves of (campaign, action), each published at once when the one before has ended.

    guide: one wave, every campaign stopped. genesys: the shift change under the active-campaign cap,
    one group of `wave` campaigns after another: group 0 runs; each wave stops group k - 1 and starts
    group k (the starts held by the cap gate until the stops free their places); the last wave stops
    the last group. So every campaign is stopped once and all but the first group started once.
    """
    if profile == "guide":
        return [[(cid, Action.STOP) for cid in ids]]
    groups = [ids[i:i + wave] for i in range(0, len(ids), wave)]
    waves = [[(cid, Action.STOP) for cid in groups[k - 1]] + [(cid, Action.START) for cid in groups[k]]
             for k in range(1, len(groups))]
    return [*waves, [(cid, Action.STOP) for cid in groups[-1]]]


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the bench dies without cleaning up (SIGKILL, crash).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SimProcess:
    """`python -m adapters.cli.simulate` on a free port; stopped (TERM, then KILL) on the way out."""

    def __init__(self, tenant_file: Path, scale: float, secret: str, log_file: Path, seed: int, *,
                 diag: bool = False, profile: str = "guide") -> None:
        entry = ["-m", "bench._storm_simdiag"] if diag else ["-m", "adapters.cli.simulate"]
        self._argv = [sys.executable, *entry, "--profile", profile, "--tenant", str(tenant_file),
                      "--time-scale", f"{scale:g}", "--rate-clock", "sim", "--client-id", CLIENT_ID,
                      "--seed", str(seed), "--port", "0"]
        self._env = {**os.environ, "CAMPAIGN_FSM_SIM_CLIENT_SECRET": secret}
        self._log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.pid: int | None = None

    async def __aenter__(self) -> SimProcess:
        with self._log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=self._env, cwd=ROOT,
                start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self._process.pid
        try:
            assert self._process.stdout is not None
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout=60)
            if not line:
                raise RuntimeError(f"the simulator exited ({await self._process.wait()}): "
                                   f"{self._log_file.read_text(errors='replace')[-2000:]}")
            self.url = orjson.loads(line)["url"]
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def admin(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            resp = await client.get(path)
            resp.raise_for_status()
            return resp.json()
