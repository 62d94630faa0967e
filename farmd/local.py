"""`farmd up`: a supervisor and N workers in one process, for a single-host farm.

The workers are ordinary agents: they connect to the supervisor over TCP on the loopback
address with the farm's token, exactly as remote ones would, so a farm started this way
behaves like a real one and can grow later by starting `farmd worker` on other hosts.
"""

from __future__ import annotations

import logging
import signal
import socket

import trio

from farmd.agent import Agent, AgentConfig
from farmd.config import Address, SupervisorConfig
from farmd.logs import log_event
from farmd.supervisor import Supervisor
from farmd.web.server import https_for

log = logging.getLogger("farmd.up")


def dashboard_url(supervisor: Supervisor) -> str:
    """The dashboard's address, as a browser on this host opens it (log in with the
    token in STATE/token)."""
    where = supervisor.http_address
    assert where is not None
    secure = https_for(where, supervisor.config.tls.mode, supervisor.tls_files is not None)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(where.host, where.host)
    return f"{'https' if secure else 'http'}://{Address(host, where.port)}/"


async def run_local_farm(config: SupervisorConfig, workers: int, slots: int) -> None:
    supervisor = Supervisor(config)
    host = socket.gethostname()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            address: Address = await nursery.start(supervisor.run)
            connect = Address(
                "127.0.0.1" if address.host in ("0.0.0.0", "") else address.host, address.port
            )
            for number in range(1, workers + 1):
                name = f"{host}-{number}"
                agent = Agent(
                    AgentConfig(
                        supervisor=connect,
                        token=supervisor.token,
                        name=name,
                        slots=slots,
                        log_dir=config.state_dir / "worker-logs" / name,
                    )
                )
                await nursery.start(agent.run)
            log_event(
                log,
                "info",
                "local farm up",
                address=str(address),
                workers=workers,
                slots=slots,
                state_dir=str(config.state_dir),
            )
            print(
                f"farmd up: supervisor on {address}, {workers} worker(s) x {slots} slot(s); "
                f"state in {config.state_dir}. Try: farmd submit -- echo hello",
                flush=True,
            )
            if supervisor.http_address is not None:
                print(f"farmd up: dashboard at {dashboard_url(supervisor)}", flush=True)
            async for signum in signals:
                log_event(log, "info", "shutting down", signal=signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
