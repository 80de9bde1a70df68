"""Settings and the layered loader.

Precedence, lowest first: built-in defaults < /etc/hostcore/hostcore.toml <
./hostcore.toml < --config FILE < HOSTCORE_* environment (``__`` nests) <
--set key.path=value. Tables merge deeply; lists and scalars are replaced.
Every value remembers the layer it came from, so errors and ``config show``
can name the file, variable or flag.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import tempfile
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hostcore.errors import ConfigError
from hostcore.redaction import REDACTED, redact_database_url, redact_url, secret_paths

APP_NAME = "hostcore"
log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/hostcore/hostcore.toml")
LOCAL_CONFIG = Path("hostcore.toml")
ENV_PREFIX = "HOSTCORE_"
# Carries --config/--set to processes the CLI spawns (uvicorn --reload); not a setting.
CLI_LAYERS_ENV = "HOSTCORE_CLI_LAYERS"
DEFAULT_SOURCE = "default"
DATABASE_URL_KEY = "database.url"


def _is_root() -> bool:
    return os.geteuid() == 0


def _xdg_home(variable: str, fallback: str) -> Path:
    """An XDG base directory: ``$variable`` when set to an absolute path (the spec
    ignores a relative one), else ``~/fallback``."""
    value = os.environ.get(variable, "").strip()
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / fallback


def _default_data_dir() -> Path:
    if _is_root():
        return Path("/var/lib/hostcore")
    return _xdg_home("XDG_DATA_HOME", ".local/share") / APP_NAME


def _default_log_dir() -> Path:
    """Logs are state in the XDG spec: ``~/.local/state/hostcore/log``."""
    if _is_root():
        return Path("/var/log/hostcore")
    return _xdg_home("XDG_STATE_HOME", ".local/state") / APP_NAME / "log"


def _default_run_dir() -> Path:
    if _is_root():
        return Path("/run/hostcore")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / APP_NAME
    # No session runtime dir (a container, a cron job): a private dir under /tmp.
    return Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"


class Section(BaseModel):
    """Base of every settings table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _octal_mode(value: Any) -> Any:
    """A file mode as TOML writes it (``0o660``) or as a string (``--set``, environment)."""
    if isinstance(value, str):
        try:
            mode = int(value.strip().lower().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(f"{value!r} is not an octal file mode such as 0o660") from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f"{value!r} is not a file mode: 0o000 to 0o777")
        return mode
    if isinstance(value, int) and not 0 <= value <= 0o777:
        raise ValueError(f"{value} is not a file mode: write 0o660 in TOML, or the string '660'")
    return value


FileMode = Annotated[
    int,
    BeforeValidator(_octal_mode),
    PlainSerializer(lambda mode: f"0o{mode:03o}", return_type=str, when_used="json"),
]
_PROXY_IDENTITY = re.compile(r"^(uid|gid):\d+$|^(user|group):[A-Za-z0-9._][A-Za-z0-9._-]*$")


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    uds: Path | None = None
    uds_mode: FileMode = Field(
        0o660, description="Mode of the unix socket: 0o660 admits its owner and its group."
    )
    uds_group: str | None = Field(
        None, description="Group of the unix socket (the web server's, e.g. www-data)."
    )
    workers: int = Field(1, ge=1, le=64, description="More than 1 runs gunicorn.")
    docs: bool = Field(True, description="Serve /docs, /redoc and the OpenAPI document.")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_ws_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Larger websocket messages close the socket (1009), before they are held.",
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="Request line and headers; more get 431."
    )
    max_headers: int = Field(100, ge=8, le=1000, description="More header fields get 431.")
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="To send the request line and headers; slower get 408."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="More, after the headers' deadline, for the body."
    )
    keepalive_timeout_s: int = Field(
        5, ge=1, le=600, description="An idle keep-alive connection is closed after this."
    )
    graceful_timeout_s: int = Field(10, ge=1, le=600)
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["unix"],
        description='Peers whose X-Forwarded-For is believed: "unix" (any peer the socket '
        'admits), "user:NAME", "uid:N", "group:NAME", "gid:N" (unix-socket peers), IPs, CIDRs.',
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_entries(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if entry == "unix" or _PROXY_IDENTITY.fullmatch(entry):
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is neither unix, user:/uid:/group:/gid:, an IP nor a network"
                ) from None
        return entries

    @model_validator(mode="after")
    def _socket_admits_only_trusted_peers(self) -> ServerSettings:
        if "unix" in self.trusted_proxies and self.uds_mode & 0o002:
            raise ValueError(
                f"uds_mode 0o{self.uds_mode:03o} lets every local user connect, and "
                'trusted_proxies "unix" would believe their X-Forwarded-For: trust the '
                'proxy by "user:NAME" or "group:NAME" instead, or drop the bits for others'
            )
        return self


class LoggingSettings(Section):
    access_log: bool = Field(
        False, description="One INFO line per request (the activity table records them anyway)."
    )
    max_bytes: int = Field(
        10 * 1024 * 1024, ge=0, description="Rotate log files at this size (single process)."
    )
    backup_count: int = Field(3, ge=0, le=100)


class RunnerSettings(Section):
    timeout_s: float = Field(10.0, gt=0, le=3600, description="Default process timeout.")
    max_output_bytes: int = Field(1024 * 1024, ge=1024, description="Per stream; rest dropped.")
    max_concurrency: int = Field(4, ge=1, le=256, description="Processes running at once.")


class DatabaseSettings(Section):
    url: str | None = Field(
        None, description="SQLAlchemy async URL; default SQLite at <data_dir>/hostcore.db."
    )
    url_file: Path | None = Field(None, description="A file holding the URL (it has a password).")
    pool_size: int = Field(5, ge=1, le=100)
    busy_timeout_ms: int = Field(5000, ge=0, le=600_000, description="SQLite lock wait.")


ScopeName = Annotated[
    str, StringConstraints(pattern=r"^(\*|[a-z*][a-z0-9_*-]*:[a-z*][a-z0-9_*-]*)$")
]


ClientName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
SECRETS_DIR = "secrets"
SHARED_HMAC_FILE = "hmac.secret"


class ClientSettings(Section):
    """One entry of the allowed-services list."""

    scopes: list[ScopeName] = Field(default_factory=list)
    secret_file: Path | None = Field(
        None,
        description="A secret file you keep, instead of <data_dir>/secrets/<client>.secret.",
    )
    secret_group: str | None = Field(
        None, description="Group that may read <data_dir>/secrets/<client>.secret."
    )
    shared_secret: bool = Field(
        False, description="Sign with the shared secret (auth.hmac_secret_file) instead."
    )

    @model_validator(mode="after")
    def _one_secret(self) -> ClientSettings:
        if self.shared_secret and self.secret_file is not None:
            raise ValueError("secret_file and shared_secret exclude each other")
        if self.secret_group is not None and (self.shared_secret or self.secret_file):
            raise ValueError(
                "secret_group is for <data_dir>/secrets/<client>.secret only "
                "(the shared secret's group is auth.secret_group)"
            )
        return self


class AuthSettings(Section):
    issuer: str = "hostcore"
    audience: str = "hostcore"
    algorithm: Literal["EdDSA", "HS256"] = "EdDSA"
    token_ttl_s: int = Field(3600, ge=60, description="Default token lifetime.")
    max_token_ttl_s: int = Field(7 * 86400, ge=60, description="Longest lifetime one may ask for.")
    leeway_s: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    key_rotation_days: float = Field(30, ge=0, description="0 turns automatic rotation off.")
    hmac_window_s: int = Field(300, ge=5, le=3600, description="Accepted timestamp skew.")
    hmac_secret_file: Path | None = Field(
        None, description="The shared secret; default <data_dir>/secrets/hmac.secret."
    )
    secret_group: str | None = Field(None, description="Group that may read the shared secret.")
    revocation_poll_s: float = Field(0.5, gt=0, le=1.0)
    password_min_length: int = Field(10, ge=8, le=1024, description="For new passwords.")
    login_concurrency: int = Field(
        2, ge=1, le=16, description="Password checks at once per worker (19 MiB each)."
    )
    login_queue: int = Field(
        8, ge=0, le=1000, description="Logins that may wait for a check; more get 503."
    )
    login_max_failures: int = Field(
        5, ge=1, le=1000, description="Failed logins of one username that lock it."
    )
    login_failure_window_s: float = Field(900, gt=0, description="Within this time.")
    login_lockout_s: float = Field(300, gt=0, le=86400, description="How long it stays locked.")
    token_retention_days: float = Field(
        30, ge=0, description="Expired (and revoked) token records are kept this long."
    )
    clients: dict[ClientName, ClientSettings] = Field(default_factory=dict)
    roles: dict[str, list[ScopeName]] = Field(
        default_factory=lambda: {
            "admin": ["*"],
            "operator": ["*:read", "*:control"],
            "viewer": ["*:read"],
        }
    )


# One limit in limits' notation (``limits.util.SINGLE_EXPR``, anchored): checked here
# without importing limits, which every command line would pay for. tests/test_config.py
# holds the two to the same answers.
_ONE_LIMIT = re.compile(r"\s*([0-9]+)\s*(?:/|\s*per\s*)\s*([0-9]+)?\s*([a-z]+)\s*", re.I)
_GRANULARITIES = frozenset({"year", "month", "day", "hour", "minute", "second"})


def is_one_rate_limit(text: str) -> bool:
    """Whether ``text`` is exactly one limit in limits' notation (``"600/minute"``,
    ``"10 per 2 seconds"``): what ``limits.parse_many`` reads as one limit."""
    match = _ONE_LIMIT.fullmatch(text)
    if match is None:
        return False
    unit = match[3].lower()
    return unit in _GRANULARITIES or (unit.endswith("s") and unit[:-1] in _GRANULARITIES)


def _one_rate_limit(text: str) -> str:
    """``text`` if it is exactly one limit in limits' notation (``"600/minute"``)."""
    if not is_one_rate_limit(text):
        raise PydanticCustomError(
            "rate_limit",
            "{text} is not one rate limit such as '600/minute' or '10 per second'",
            {"text": repr(text)},
        )
    return text


RateLimit = Annotated[str, AfterValidator(_one_rate_limit)]

# Storages named by a word; anything else is a URL of a limits storage.
_NAMED_STORAGES = ("shared", "memory")
# hostcore's own storage (hostcore.security.ratelimit.SharedMemoryStorage) registers this
# scheme with limits only when that module is imported, which this one must not do.
_SHARED_MEMORY_SCHEME = "hostcore-shm"


def _sync_storage_schemes() -> set[str]:
    """The URL schemes of limits' synchronous storages, hostcore's own included."""
    from limits.storage import Storage

    schemes = {_SHARED_MEMORY_SCHEME}
    pending: list[type] = [Storage]
    while pending:
        storage = pending.pop()
        pending.extend(storage.__subclasses__())
        declared = getattr(storage, "STORAGE_SCHEME", None) or []
        schemes.update([declared] if isinstance(declared, str) else declared)
    return schemes


def _usable_rate_limit_storage(value: str) -> str:
    if value in _NAMED_STORAGES:
        return value
    scheme = value.partition("://")[0] if "://" in value else ""
    if scheme.startswith("async+"):
        raise PydanticCustomError(
            "rate_limit_storage",
            "{value} is an asynchronous limits storage; use a synchronous one",
            {"value": repr(redact_url(value))},
        )
    if scheme not in _sync_storage_schemes():
        raise PydanticCustomError(
            "rate_limit_storage",
            'unknown storage scheme in {value}: use "shared", "memory" or the URL of '
            "a limits storage such as redis://localhost:6379",
            {"value": repr(redact_url(value))},
        )
    return value


# Every login costs an argon2 check: guessing must not be cheap. Configured routes are
# merged over these (naming one replaces its limit), so adding a limit keeps them.
DEFAULT_ROUTE_LIMITS = {"POST /api/v1/auth/token": "10/minute"}


class RateLimitSettings(Section):
    enabled: bool = True
    default: RateLimit = Field(
        "600/minute", description="Per principal (else per address), per route."
    )
    routes: dict[str, RateLimit] = Field(
        default_factory=lambda: dict(DEFAULT_ROUTE_LIMITS),
        description='"METHOD /route/template" -> limit, e.g. "10/minute"; merged over the '
        "defaults.",
    )
    storage: Annotated[str, AfterValidator(_usable_rate_limit_storage)] = Field(
        "shared",
        description='"shared" (memory-mapped file, all workers), "memory", or a limits URL.',
    )

    @field_validator("routes")
    @classmethod
    def _merged_over_the_defaults(cls, routes: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_ROUTE_LIMITS, **routes}


class ActivitySettings(Section):
    enabled: bool = True
    flush_interval_s: float = Field(1.0, gt=0, le=60)
    batch_size: int = Field(500, ge=1, le=100_000)
    retention_days: float = Field(30, gt=0)
    max_rows: int = Field(1_000_000, ge=1000)


class PluginsSettings(BaseModel):
    """``enabled``/``disabled`` choose what loads; every other key is a plugin's own table."""

    model_config = ConfigDict(extra="allow")

    enabled: list[str] | None = Field(None, description="Only these load (all when unset).")
    disabled: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sections_are_tables(self) -> PluginsSettings:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"unknown key plugins.{key} (plugin settings must be a table)")
        return self

    def section(self, name: str) -> dict[str, Any]:
        value = (self.model_extra or {}).get(name, {})
        return dict(value)

    def section_names(self) -> list[str]:
        return list(self.model_extra or {})

    def is_enabled(self, name: str) -> bool:
        if name in self.disabled:
            return False
        return self.enabled is None or name in self.enabled


class Settings(Section):
    """The one settings object. ``create_app(settings)`` takes it."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    log_dir: Path = Field(default_factory=_default_log_dir)
    run_dir: Path = Field(default_factory=_default_run_dir)
    debug: bool = Field(False, description="DEBUG on the console.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    activity: ActivitySettings = Field(default_factory=ActivitySettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def source_of(self, dotted_key: str) -> str:
        """The layer a key's value came from: a file, an env variable, a flag, or default."""
        return _source_of(self._sources, dotted_key)

    @property
    def sources(self) -> Mapping[str, str]:
        return types.MappingProxyType(self._sources)

    def database_url(self) -> str:
        """The store's URL: from a file, the setting, or SQLite under data_dir."""
        if self.database.url_file is not None:
            try:
                return self.database.url_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"database.url_file {self.database.url_file}: {exc.strerror}"
                ) from exc
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_dir / 'hostcore.db'}"

    def hmac_secret_path(self, client: str | None = None) -> Path:
        """The HMAC secret file ``client`` signs with; the shared secret's when None.

        A client's own ``secret_file``, the shared secret when it opted in with
        ``shared_secret``, else ``<data_dir>/secrets/<client>.secret``.
        """
        own = self.auth.clients.get(client) if client is not None else None
        if client is None or (own is not None and own.shared_secret):
            return self.auth.hmac_secret_file or self.data_dir / SECRETS_DIR / SHARED_HMAC_FILE
        if own is not None and own.secret_file is not None:
            return own.secret_file
        return self.data_dir / SECRETS_DIR / f"{client}.secret"


@dataclass(frozen=True)
class Layer:
    """One configuration layer; ``key_sources`` names a finer source per key (env, --set)."""

    source: str
    data: Mapping[str, Any]
    key_sources: Mapping[str, str] = field(default_factory=dict)

    def source_for(self, dotted_key: str) -> str:
        found = _source_of(self.key_sources, dotted_key)
        return self.source if found == DEFAULT_SOURCE else found


def _source_of(sources: Mapping[str, str], dotted_key: str) -> str:
    """The source of a key, of the value that contains it, or of a table below it."""
    parts = dotted_key.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found is not None:
            return found
    below = sorted(key for key in sources if key.startswith(f"{dotted_key}."))
    return sources[below[0]] if below else DEFAULT_SOURCE


def _deep_merge(
    target: dict[str, Any],
    incoming: Mapping[str, Any],
    source_for: Callable[[str], str],
    sources: dict[str, str],
    prefix: str = "",
) -> None:
    for key, value in incoming.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value, source_for, sources, f"{path}.")
            continue
        for stale in [k for k in sources if k.startswith(f"{path}.")]:
            del sources[stale]
        if isinstance(value, Mapping):
            target[key] = {}
            _deep_merge(target[key], value, source_for, sources, f"{path}.")
        else:
            target[key] = value
            sources[path] = source_for(path)


def _field_annotation(path: Sequence[str]) -> Any:
    """The annotation of a (possibly nested) Settings field, or None when unknown."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        model = annotation
    return annotation


def _is_list_annotation(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_list_annotation(arg) for arg in typing.get_args(annotation))
    return origin in (list, tuple, set)


def _typed_value(path: Sequence[str], raw: str, source: str) -> Any:
    """A string from the environment or --set, shaped for the field it targets.

    JSON for lists and tables (``["a","b"]``); a comma list is accepted for list
    fields; anything else stays a string for pydantic to convert.
    """
    text = raw.strip()
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: value is not valid JSON: {exc}") from exc
    if _is_list_annotation(_field_annotation(path)):
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def _always(label: str) -> Callable[[str], str]:
    return lambda _key: label


def _nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        nested = {part: nested}
    return nested


def read_toml(path: Path, *, label: str | None = None) -> Layer:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    return Layer(label or str(path), data)


def environment_layer(environ: Mapping[str, str]) -> Layer:
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CLI_LAYERS_ENV:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        value = _typed_value(path, environ[name], f"environment variable {name}")
        _deep_merge(data, _nest(path, value), _always(f"env {name}"), sources)
    return Layer("environment", data, sources)


def override_layer(assignments: Sequence[str]) -> Layer:
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        path = key.split(".")
        if not sep or not all(path):
            raise ConfigError(f"--set {assignment!r}: expected key.path=value")
        value = _typed_value(path, raw, f"--set {key}")
        _deep_merge(data, _nest(path, value), _always(f"--set {key}"), sources)
    return Layer("--set", data, sources)


def cli_layers_from_environment(environ: Mapping[str, str]) -> tuple[Path | None, list[str]]:
    """The --config/--set a parent CLI handed down through CLI_LAYERS_ENV."""
    raw = environ.get(CLI_LAYERS_ENV)
    if not raw:
        return None, []
    decoded = json.loads(raw)
    config = decoded.get("config")
    return (Path(config) if config else None), list(decoded.get("set", []))


def cli_layers_to_environment(config_file: Path | None, overrides: Sequence[str]) -> str:
    return json.dumps({"config": str(config_file) if config_file else None, "set": list(overrides)})


def collect_layers(
    *,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    system_config: Path = SYSTEM_CONFIG,
    local_config: Path = LOCAL_CONFIG,
) -> list[Layer]:
    environ = os.environ if environ is None else environ
    layers: list[Layer] = []
    for candidate in (system_config, local_config):
        try:
            found = candidate.is_file()
        except PermissionError:  # a working directory this user may not search (sudo -u)
            log.warning("%s cannot be read here (permission denied): left out", candidate)
            continue
        if found:
            layers.append(read_toml(candidate, label=str(candidate.absolute())))
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"--config {config_file}: no such file")
        layers.append(read_toml(config_file, label=f"--config {config_file.absolute()}"))
    layers.append(environment_layer(environ))
    layers.append(override_layer(overrides))
    return layers


def merge_layers(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        _deep_merge(merged, layer.data, layer.source_for, sources)
    return merged, sources


def describe_validation_error(
    exc: ValidationError, sources: Mapping[str, str], prefix: str = ""
) -> str:
    lines = []
    for error in exc.errors():
        key = prefix + ".".join(str(part) for part in error["loc"])
        source = _source_of(sources, key)
        origin = "" if source == DEFAULT_SOURCE else f" (from {source})"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown key {key}{origin}")
        else:
            lines.append(f"{key}{origin}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def build_settings(layers: Sequence[Layer]) -> Settings:
    merged, sources = merge_layers(layers)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, sources)) from None
    settings._sources = sources
    return settings


def load_settings(
    *,
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    system_config: Path = SYSTEM_CONFIG,
    local_config: Path = LOCAL_CONFIG,
) -> Settings:
    """Load the effective settings from every layer, in precedence order."""
    layers = collect_layers(
        config_file=config_file,
        overrides=overrides,
        environ=environ,
        system_config=system_config,
        local_config=local_config,
    )
    return build_settings(layers)


def validate_plugin_settings(settings: Settings, name: str, model: type[BaseModel]) -> BaseModel:
    """Validate ``[plugins.<name>]`` against the plugin's model, naming the source on error.

    Unknown keys are refused whatever the model's own ``extra`` setting says.
    """
    section = settings.plugins.section(name)
    known = set(model.model_fields) | {
        field.alias for field in model.model_fields.values() if field.alias
    }
    unknown = [key for key in section if key not in known]
    if unknown:
        lines = [
            f"unknown key plugins.{name}.{key} (from {settings.source_of(f'plugins.{name}.{key}')})"
            for key in unknown
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        message = describe_validation_error(exc, settings.sources, prefix=f"plugins.{name}.")
        raise ConfigError(message) from None


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{path}.")
        else:
            yield path, value


def effective_config(
    settings: Settings, plugin_settings: Mapping[str, BaseModel] | None = None
) -> list[tuple[str, Any, str]]:
    """Every key with its effective value and the layer it came from, secrets redacted.

    Redacted: the settings a model declares secret (``SecretStr``, ``SecretBytes``),
    every value of a plugin table no model has checked (a disabled or missing
    plugin's: which of its keys are secret is unknown), and the credentials in
    every URL.
    """
    plugin_settings = plugin_settings or {}
    data = settings.model_dump(mode="json")
    secret = set(secret_paths(settings))
    for name, model in plugin_settings.items():
        data["plugins"][name] = model.model_dump(mode="json")
        secret.update(secret_paths(model, f"plugins.{name}."))
    unchecked = tuple(
        f"plugins.{name}."
        for name in settings.plugins.section_names()
        if name not in plugin_settings
    )
    rows = []
    for key, value in flatten(data):
        hidden = key in secret or key.startswith(unchecked)
        rows.append((key, _shown(key, value, hidden=hidden), settings.source_of(key)))
    return rows


def _shown(key: str, value: Any, *, hidden: bool) -> Any:
    if value is None or value == "":
        return value
    if hidden:
        return REDACTED
    if key == DATABASE_URL_KEY:
        return redact_database_url(str(value))
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [redact_url(item) if isinstance(item, str) else item for item in value]
    return value
