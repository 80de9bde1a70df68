from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from hostcore.builtin.system.dbus import (
    HostnameRead,
    PowerActionRead,
    TimeRead,
    UnitJobRead,
    UnitRead,
)
from hostcore.builtin.system.info import SystemInfoRead
from hostcore.builtin.system.journal import LogEntryRead
from hostcore.builtin.system.parsers import PackageRead
from hostcore.builtin.system.schemas import (
    MAX_LOGS_LIMIT,
    HostnameUpdate,
    PowerRequest,
    TimezoneUpdate,
    UnitAction,
    UnitName,
)
from hostcore.builtin.system.service import SystemService
from hostcore.builtin.system.stats import SystemStatsRead
from hostcore.errors import error_responses
from hostcore.inputs import EpochSeconds
from hostcore.responses import CONDITIONAL_GET, revalidated
from hostcore.security.deps import RequireScope

READ = [RequireScope("system:read")]
CONTROL = [RequireScope("system:control")]
POWER = [RequireScope("system:power")]
LOGS = [RequireScope("system:logs")]
BUS_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503, 504)


async def _service(request: Request) -> SystemService:
    # async: a plain def dependency would be run in the threadpool on every request.
    service: SystemService = request.app.state.system
    return service


System = Annotated[SystemService, Depends(_service)]


Unit = Annotated[UnitName, Path(description="A unit on the allowed-units list.")]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/info", dependencies=READ, responses=error_responses(401, 403, 429, 503))
    async def info(system: System) -> SystemInfoRead:
        """Hostname, OS, kernel, device model, serial, CPU, memory, boot time, uptime."""
        return await system.info()

    @router.get(
        "/stats",
        dependencies=READ,
        response_model=SystemStatsRead,
        responses=error_responses(401, 403, 429, 503),
        openapi_extra=CONDITIONAL_GET,
    )
    async def stats(request: Request) -> Response:
        """The newest background sample: CPU, load, memory, disks, temperatures, network.

        Polled by every consumer: the sample is encoded once and answered as those bytes
        with an ``ETag``; a poller that sends it back in ``If-None-Match`` gets 304 until
        the next sample.
        """
        system: SystemService = request.app.state.system
        return revalidated(request, await system.stats_sample())

    @router.get("/services", dependencies=READ, responses=BUS_ERRORS)
    async def services(system: System) -> list[UnitRead]:
        """State of every unit on the allowed-units list."""
        return await system.units()

    @router.get("/services/{unit}", dependencies=READ, responses=BUS_ERRORS)
    async def service(unit: Unit, system: System) -> UnitRead:
        return await system.unit(unit)

    @router.post("/services/{unit}/{action}", dependencies=CONTROL, responses=BUS_ERRORS)
    async def control(unit: Unit, action: UnitAction, system: System) -> UnitJobRead:
        """Start, stop or restart an allowed unit."""
        return await system.control(unit, action)

    @router.post("/power/reboot", dependencies=POWER, responses=BUS_ERRORS)
    async def reboot(system: System, body: PowerRequest | None = None) -> PowerActionRead:
        """Reboot through logind, now or after ``delay_s``; answered before the host goes down."""
        return await system.power("reboot", (body or PowerRequest()).delay_s)

    @router.post("/power/shutdown", dependencies=POWER, responses=BUS_ERRORS)
    async def shutdown(system: System, body: PowerRequest | None = None) -> PowerActionRead:
        """Power off through logind, now or after ``delay_s``."""
        return await system.power("shutdown", (body or PowerRequest()).delay_s)

    @router.get("/time", dependencies=READ, responses=BUS_ERRORS)
    async def time(system: System) -> TimeRead:
        """Time, timezone and NTP state from timedated."""
        return await system.time()

    @router.put("/time/timezone", dependencies=CONTROL, responses=BUS_ERRORS)
    async def set_timezone(body: TimezoneUpdate, system: System) -> TimeRead:
        return await system.set_timezone(body.timezone)

    @router.get("/hostname", dependencies=READ, responses=BUS_ERRORS)
    async def hostname(system: System) -> HostnameRead:
        return await system.hostname()

    @router.put("/hostname", dependencies=CONTROL, responses=BUS_ERRORS)
    async def set_hostname(body: HostnameUpdate, system: System) -> HostnameRead:
        """Set the static and transient hostname through hostnamed (RFC 1123)."""
        return await system.set_hostname(body.hostname)

    @router.get("/logs", dependencies=LOGS, responses=BUS_ERRORS)
    async def logs(
        system: System,
        unit: Annotated[UnitName | None, Query()] = None,
        priority: Annotated[int | None, Query(ge=0, le=7, description="0 emerg … 7 debug")] = None,
        since: Annotated[EpochSeconds | None, Query(description="UNIX seconds")] = None,
        limit: Annotated[
            int | None, Query(ge=1, le=MAX_LOGS_LIMIT, description="Default 100.")
        ] = None,
    ) -> list[LogEntryRead]:
        """Journal entries of the allowed units, oldest first."""
        return await system.logs(unit, priority, since, limit)

    @router.get("/packages", dependencies=READ, responses=error_responses(401, 403, 429, 503))
    async def packages(system: System) -> list[PackageRead]:
        """Versions of the configured Debian packages (from the dpkg status file)."""
        return await system.packages()

    return router
