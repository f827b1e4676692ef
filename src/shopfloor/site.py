"""The site file: one YAML document that describes a Shopfloor deployment.

It is loaded once by ``hub_config/jupyterhub_config.py`` and validated by :class:`SiteConfig`.
Every admin setting lives here, with its meaning in the field's description; a broken file
raises :class:`SiteConfigError` whose message names the bad field and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shopfloor.accounts.settings import AccountingSettings
from shopfloor.auth_site import OidcSettings
from shopfloor.catalog_site import CatalogSettings, HomeSettings, SupportSettings
from shopfloor.timeutil import format_minutes, parse_walltime

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class SiteConfigError(ValueError):
    """The site file is missing or invalid; the message says which field and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Upper bounds on what one request may ask for. ``None`` means "no extra limit"."""

    max_nodes: int | None = Field(None, ge=1, description="Most nodes one job may use.")
    max_cpus: int | None = Field(None, ge=1, description="Most CPUs per node one job may use.")
    max_memory_gb: float | None = Field(
        None, gt=0, description="Most memory per node, in GiB, one job may use."
    )
    max_gpus: int | None = Field(None, ge=0, description="Most GPUs per node one job may use.")
    max_walltime: str | None = Field(
        None, description="Longest walltime, as Slurm writes it (e.g. '4:00:00' or '1-00:00:00')."
    )

    @field_validator("max_walltime")
    @classmethod
    def _walltime(cls, value: str | None) -> str | None:
        if value is not None:
            parse_walltime(value)
        return value

    @property
    def max_walltime_minutes(self) -> int | None:
        return parse_walltime(self.max_walltime) if self.max_walltime else None


class PartitionPolicy(Limits):
    """What users may ask of one Slurm partition, and how the spawn page describes it."""

    description: str = Field("", description="One line shown to users on the spawn page.")
    default_cpus: int = Field(1, ge=1, description="CPUs preselected on the spawn page.")
    default_memory_gb: float = Field(2, gt=0, description="Memory (GiB) preselected.")
    default_gpus: int = Field(0, ge=0, description="GPUs preselected.")
    default_walltime: str = Field("1:00:00", description="Walltime preselected.")
    groups: list[Name] = Field(
        default_factory=list,
        description="Unix/hub groups whose members may use this partition; empty means everyone.",
    )
    qos: list[Name] = Field(
        default_factory=list, description="QoS names users may ask for on this partition."
    )
    demo_gpus: bool = Field(
        False, description="True when the partition's GPUs are demo devices, not real GPUs."
    )

    @field_validator("default_walltime")
    @classmethod
    def _default_walltime(cls, value: str) -> str:
        parse_walltime(value)
        return value


class SlurmSettings(_Strict):
    """How the hub talks to Slurm."""

    bin_dir: str = Field("", description="Folder of sbatch/squeue/...; empty means use PATH.")
    conf_file: str = Field(
        "",
        description="The cluster's slurm.conf when it is not where the Slurm tools look by "
        "default (/etc/slurm/slurm.conf), e.g. '/etc/slurm-prod/slurm.conf': the hub and its "
        "services run every Slurm command with SLURM_CONF set to it (through sudo too; jobs "
        "get it from slurmd). An absolute path; empty means Slurm's own default. Workshop "
        "reservations and accounts pass it to the root helper, which accepts only a file "
        "owned by root and writable by nobody else, in root-owned folders, with no link.",
    )
    poll_interval: float = Field(
        5.0, gt=0, le=300,
        description="Seconds between the hub's batched squeue calls for running servers.",
    )
    pending_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between squeue calls while a spawn is pending."
    )
    info_cache_seconds: float = Field(
        10.0, ge=0, le=600, description="How long sinfo/scontrol answers are reused."
    )
    job_log_dir: str = Field(
        "{home}/.shopfloor/logs",
        description="Where job logs go; {home} and {user} are filled in. Must be user-writable.",
    )

    @field_validator("conf_file")
    @classmethod
    def _conf_file(cls, value: str) -> str:
        if value and (not value.startswith("/") or any(c in value for c in "\n\r\0")):
            raise ValueError("must be an absolute path to slurm.conf, e.g. /etc/slurm/slurm.conf")
        return value

    def environment(self) -> dict[str, str]:
        """What every Slurm command of the hub gets in its environment (``SLURM_CONF``)."""
        return {"SLURM_CONF": self.conf_file} if self.conf_file else {}


class AuthSettings(_Strict):
    """Who may log in."""

    admin_users: list[Name] = Field(default_factory=list, description="Hub administrators.")
    allowed_users: list[Name] = Field(
        default_factory=list, description="Users allowed to log in (with their Unix password)."
    )
    allowed_groups: list[Name] = Field(
        default_factory=list, description="Unix groups whose members may log in."
    )
    method: Literal["pam", "oidc"] = Field(
        "pam", description="How users log in: pam (their Unix password; the demo's) or oidc "
        "(the site's OpenID Connect provider, see auth.oidc; allowed_groups then also matches "
        "groups from auth.oidc.groups_claim, and with neither allowed list set every identity "
        "with a Unix account may log in).",
    )
    oidc: OidcSettings = Field(
        default_factory=OidcSettings, description="OpenID Connect login (auth.method: oidc)."
    )

    @model_validator(mode="after")
    def _oidc_complete(self) -> AuthSettings:
        problems = self.oidc.problems() if self.method == "oidc" else []
        if problems:
            raise ValueError("auth.method is oidc, but auth.oidc." + "; auth.oidc.".join(problems))
        return self


class HubSettings(_Strict):
    """Where the hub listens and keeps its state."""

    bind_url: str = Field("http://127.0.0.1:8000", description="Public URL users open.")
    hub_bind_url: str = Field(
        "http://127.0.0.1:8081", description="Internal hub API URL; compute nodes must reach it."
    )
    proxy_api_url: str = Field(
        "http://127.0.0.1:8001", description="Where the hub talks to configurable-http-proxy."
    )
    state_dir: str = Field("/var/lib/shopfloor", description="Hub database, cookie secret, logs.")
    service_user: Name | None = Field(
        None,
        description="Unprivileged Unix user the hub and its services run as, e.g. shopfloor "
        "(set it up with `shopfloor service-user shopfloor`; docs/deploy.md). `shopfloor demo` "
        "starts the hub as this user and the doctor checks its sudoers rule. Empty: the hub "
        "runs as whoever starts it (root).",
    )
    python: str = Field(
        "/opt/shopfloor/venv/bin/python",
        description="Python that jobs run (readable and executable by every user).",
    )
    start_timeout: int = Field(
        600, ge=30, description="Seconds a session may take from submit to ready, queue included."
    )
    http_timeout: int = Field(
        120, ge=10,
        description="Seconds a session's server may take to answer once its job runs, "
        "e.g. 120; after that the start fails and the job is cancelled.",
    )
    named_server_limit_per_user: int = Field(
        5, ge=0, description="Most sessions one user may have at once, e.g. 5; 0: no limit."
    )
    server_poll_interval: int | None = Field(
        None, ge=1,
        description="Seconds between the hub's checks that each running session's job is "
        "still there, e.g. 10. Empty: twice slurm.poll_interval, at least 10.",
    )
    default_url: str = Field(
        "/lab", description="Page a session opens on, e.g. /lab or /tree."
    )
    login_message: str = Field(
        "", description="Line shown on the login page. Empty: '<name>: log in with your "
        "cluster account.'",
    )
    help_url: str = Field(
        "", description="The site's help page, opened by the Help card in JupyterLab "
        "(e.g. https://hpc.example.org/jupyter-help). Empty: the card shows session facts only.",
    )
    warn_minutes: list[int] = Field(
        default_factory=lambda: [15, 5],
        description="Minutes before a session's Slurm job ends at which JupyterLab warns, with "
        "a 'Save all' button, e.g. [15, 5]. Empty: no warnings.",
    )
    db_url: str = Field(
        "",
        description="The hub's database. Empty: SQLite in state_dir (jupyterhub.sqlite, "
        "0600), the demo's choice. A site: PostgreSQL, e.g. "
        "postgresql://shopfloor@db.example.org:5432/jupyterhub. Never a password here: "
        "db_password_file, or libpq's own $PGPASSWORD / ~/.pgpass.",
    )
    db_password_file: str = Field(
        "",
        description="File holding the database password on its first line (mode 0600 or "
        "0400, owned by the hub's user), e.g. /etc/shopfloor/db-password. Empty: libpq finds "
        "it ($PGPASSWORD, ~/.pgpass) or the server needs none (peer login).",
    )
    sqlite_wal: bool = Field(
        True,
        description="SQLite only: open the database in write-ahead-log mode, e.g. true. One "
        "fsync per commit instead of several: spawn bursts run faster. false: SQLite's "
        "rollback journal (needed only if state_dir is on a network filesystem).",
    )

    @field_validator("db_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
            raise ValueError("db_url must be empty (SQLite in state_dir), sqlite:///PATH or "
                             f"postgresql://USER@HOST:PORT/DB; got a {scheme or 'bare'!r} URL")
        if scheme != "sqlite" and urlparse(value).password is not None:
            raise ValueError("db_url must not hold a password (it would reach logs and "
                             "backups): put it in db_password_file")
        return value

    @property
    def database_url(self) -> str:
        """The database the hub uses: :attr:`db_url`, or SQLite in :attr:`state_dir`."""
        return self.db_url or f"sqlite:///{Path(self.state_dir) / 'jupyterhub.sqlite'}"

    @field_validator("warn_minutes")
    @classmethod
    def _positive_minutes(cls, value: list[int]) -> list[int]:
        if any(m <= 0 for m in value):
            raise ValueError(f"warn_minutes must be positive minutes, e.g. [15, 5]; got {value}")
        return sorted(set(value), reverse=True)


class AppsSettings(_Strict):
    """Published notebook apps (the ``apps`` hub service): who may see them, how they run."""

    allow_public: bool = Field(
        False,
        description="Whether owners may publish apps anyone can open without logging in.",
    )
    idle_stop_minutes: float = Field(
        30, gt=0, le=24 * 60,
        description="Minutes without a viewer after which an app's Slurm job is stopped; "
        "the next visit starts it again (e.g. 30; 0.5 for tests).",
    )
    pool_size: int = Field(
        1, ge=0, le=8,
        description="Preheated Voila kernels kept ready per running app (0 turns preheating "
        "off; each kernel costs about 40-90 MiB on the node).",
    )
    partition: Name | None = Field(
        None, description="Partition preselected for apps; the site's default if empty."
    )
    cpus: int = Field(1, ge=1, description="CPUs preselected for an app's job.")
    memory_gb: float = Field(1, gt=0, description="Memory (GiB) preselected for an app's job.")
    walltime: str = Field(
        "8:00:00",
        description="Longest an app's job runs before it is restarted on the next visit.",
    )
    service_port: int | None = Field(
        None, ge=1, le=65535,
        description="Port of the apps service on the hub's internal address; empty means the "
        "hub API port + 10 (sessions find it the same way).",
    )
    store_dir: str = Field(
        "",
        description="Where published versions are kept (owned by the service, read-only to "
        "owners; every folder above it must be traversable, o+x, by owners); empty means "
        "an 'apps' folder beside hub.state_dir (which is private to the hub).",
    )
    max_files: int = Field(20, ge=0, le=1000, description="Most extra files one app may declare.")
    max_file_mb: float = Field(
        20, gt=0, description="Largest notebook or declared file, in MiB."
    )
    max_total_mb: float = Field(100, gt=0, description="Largest snapshot of one version, in MiB.")
    start_timeout: int = Field(
        300, ge=30, description="Seconds an app's job may take from submit to serving."
    )
    origin_url: str = Field(
        "",
        description="Public URL of the apps' own origin, where viewers open app pages. Its "
        "host name must differ from hub.bind_url's (browsers share cookies across the ports "
        "of one host), so owners' code in apps never reaches the hub's cookies; e.g. "
        "https://apps.example.org. Empty means the demo's: hub.bind_url's scheme and port "
        "on the second loopback address 127.0.0.2 (one machine only: set it on a real site).",
    )
    origin_bind_url: str = Field(
        "",
        description="Where the apps service listens for origin_url (e.g. "
        "http://10.0.0.1:8443 behind a TLS proxy); empty means origin_url itself.",
    )
    max_kernels_per_viewer: int = Field(
        3, ge=1, le=100,
        description="Most app pages (kernels) one viewer may hold open in one app at once.",
    )
    max_kernels_per_app: int = Field(
        20, ge=1, le=1000,
        description="Most viewer kernels one running app serves at once (each costs about "
        "40-90 MiB on the app's node).",
    )

    @field_validator("origin_url", "origin_bind_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        url = urlparse(value)
        if value and (url.scheme not in ("http", "https") or not url.hostname
                      or url.path not in ("", "/")):
            raise ValueError("must be a URL such as https://apps.example.org (no path)")
        return value.rstrip("/")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        parse_walltime(value)
        return value


class RaySettings(_Strict):
    """Ray clusters that users start from their sessions (:mod:`shopfloor.ray.cluster`)."""

    idle_timeout_minutes: int = Field(
        30, ge=0, le=7 * 24 * 60,
        description="A Ray cluster with no running Ray job for this many minutes stops itself "
        "(0 turns the idle stop off; the walltime still applies). Users may choose less.",
    )
    idle_check_seconds: float = Field(
        15.0, gt=0, le=600, description="Seconds between the head's checks for running jobs."
    )
    object_store_fraction: float = Field(
        0.15, gt=0, le=0.8,
        description="Share of each node's job memory given to Ray's object store (Ray's own "
        "default, 30% of the node's RAM, ignores the Slurm allocation).",
    )
    min_object_store_mb: int = Field(
        80, ge=76, description="Smallest object store per node in MB (Ray needs at least 75 MiB)."
    )
    temp_root: str = Field(
        "/tmp",
        description="Node-local folder under which each node of a cluster gets its own Ray "
        "temp folder (sfray-<user>-<job>-<node index>-<random>, made with mode 700 "
        "by mkdtemp, so no other user can make it first). It must be owned by root and "
        "sticky like /tmp (or not writable by users); the launcher refuses it otherwise. "
        "Keep it short: Ray's socket paths must stay under 107 characters.",
    )
    state_dir: str = Field(
        "{home}/.shopfloor/ray",
        description="Per-user folder (mode 700) with each cluster's state, ports and auth "
        "token; {home} and {user} are filled in. Must be on storage the compute nodes share.",
    )
    ready_timeout_seconds: int = Field(
        300, ge=30, description="How long a node waits for its cluster's head before giving up."
    )


class ModelSettings(_Strict):
    """Fine-tuning (:mod:`shopfloor.finetune.recipe`): the model catalog and where runs are kept."""

    catalog_dir: str = Field(
        "/opt/shopfloor/models",
        description="Folder of the site model catalog: one Hugging Face-format model per "
        "sub-folder, each with a shopfloor-model.json card (task, licence, description). "
        "Must be readable by every user; `shopfloor models build-demo` fills it with the demo "
        "models. Sessions get it as $SHOPFLOOR_MODEL_CATALOG.",
    )
    runs_dir: str = Field(
        "~/shopfloor-runs",
        description="Where users' fine-tuning runs keep checkpoints, progress and metrics "
        "(one folder per run name); '~' is the user's home. Must be on storage every compute "
        "node sees. Sessions get it as $SHOPFLOOR_RUNS_DIR.",
    )


class WorkshopSettings(_Strict):
    """Workshops run by trainers (``workshop`` hub service, :mod:`shopfloor.workshops.client`)."""

    creators: list[Name] = Field(
        default_factory=list,
        description="Users who may create workshops (hub admins always may).",
    )
    creator_groups: list[Name] = Field(
        default_factory=list, description="Unix/hub groups whose members may create workshops."
    )
    partitions: list[Name] = Field(
        default_factory=list,
        description="Partitions a workshop may reserve compute on; empty means any partition "
        "listed in this file.",
    )
    max_nodes: int = Field(
        2, ge=0, description="Most whole nodes one workshop's Slurm reservation may hold."
    )
    max_cores: int = Field(
        8, ge=0, description="Most cores one workshop's Slurm reservation may hold "
        "(reservations by cores leave the rest of the nodes to other users).",
    )
    max_hours: float = Field(
        8, gt=0, le=24 * 14, description="Longest workshop (and reservation), in hours."
    )
    max_capacity: int = Field(
        60, ge=1, le=1000, description="Most participants one workshop may have."
    )
    participant_group: Name = Field(
        "workshop",
        description="Hub group every participant joins, so that `group_limits` for it cap "
        "each participant's sessions (e.g. 1 CPU, 1 GiB).",
    )
    stuck_minutes: float = Field(
        10, gt=0, le=24 * 60,
        description="Minutes without a new checkpoint after which the trainer panel shows a "
        "participant as stuck (a failed last check counts at once).",
    )
    join_failures_per_minute: int = Field(
        10, ge=1, le=1000,
        description="Wrong workshop codes one address may try per minute before the join page "
        "refuses it for a minute.",
    )
    export_dir: str = Field(
        "{home}/workshop-exports",
        description="Where the end of a workshop puts each participant's archive and the "
        "progress table (a sub-folder per workshop); {home} and {user} are those of the "
        "trainer who ends it. Written as that trainer.",
    )
    state_dir: str = Field(
        "",
        description="Folder of the workshop service's database (root only); empty means a "
        "'workshops' folder inside hub.state_dir.",
    )
    service_port: int | None = Field(
        None, ge=1, le=65535,
        description="Port of the workshop service on the hub's internal address; empty means "
        "the hub API port + 12 (sessions are told the URL).",
    )


class IdleSettings(_Strict):
    """Idle sessions end: JupyterHub's ``jupyterhub-idle-culler`` as a hub service."""

    enabled: bool = Field(
        True, description="Stop sessions nobody used for idle_minutes (their Slurm job is "
        "cancelled), so forgotten sessions stop burning allocations.",
    )
    idle_minutes: int = Field(
        120, ge=1, description="Minutes without activity (no browser request, no running "
        "kernel) after which a session is stopped, e.g. 120.",
    )
    partition_minutes: dict[Name, int] = Field(
        default_factory=dict,
        description="Idle minutes per partition instead of idle_minutes, e.g. {'gpu': 30}: "
        "idle GPUs cost most. Partitions not listed use idle_minutes.",
    )
    warn_minutes: int = Field(
        10, ge=0, description="Minutes before an idle session is stopped at which JupyterLab "
        "warns the user, e.g. 10; 0: no warning.",
    )
    check_seconds: int = Field(
        60, ge=5, description="Seconds between the culler's looks at every session's last "
        "activity, e.g. 60; a session ends at most this much after its idle limit.",
    )

    @field_validator("partition_minutes")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"partition_minutes must be whole minutes of at least 1; got {bad}")
        return value

    def minutes_for(self, partition: str) -> int:
        """The idle limit of a session on ``partition``."""
        return self.partition_minutes.get(partition, self.idle_minutes)


class SiteConfig(_Strict):
    """A whole site file."""

    name: str = Field("Shopfloor", description="Name shown in page titles.")
    hub: HubSettings = Field(default_factory=HubSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    partitions: dict[Name, PartitionPolicy] = Field(
        ..., min_length=1, description="Partitions users may ask for, by Slurm name."
    )
    default_partition: Name | None = Field(
        None, description="Partition preselected for new users; the first listed if empty."
    )
    group_limits: dict[Name, Limits] = Field(
        default_factory=dict,
        description="Extra, tighter limits for members of a group (e.g. workshop participants).",
    )
    group_accounts: dict[Name, list[Name]] = Field(
        default_factory=dict,
        description="Slurm accounts the members of each group may charge jobs to, e.g. "
        "{'physics': ['phys-2026']}. A request naming any other account is refused; a user "
        "in no listed group may name none (the job then uses Slurm's default account). "
        "Admins may name any account. Only for sites without Slurm accounting: with "
        "accounting.enabled the user's Slurm associations decide, and this must be empty.",
    )
    models: ModelSettings = Field(
        default_factory=ModelSettings, description="Model catalog and fine-tuning runs."
    )
    ray: RaySettings = Field(
        default_factory=RaySettings, description="Ray clusters started from sessions."
    )
    apps: AppsSettings = Field(
        default_factory=AppsSettings, description="Published notebook apps (Voila on Slurm)."
    )
    workshops: WorkshopSettings = Field(
        default_factory=WorkshopSettings,
        description="Workshops: who may create them, reservation limits, participant caps.",
    )
    catalog: CatalogSettings = Field(
        default_factory=CatalogSettings, description="Models and datasets the site offers."
    )
    home: HomeSettings = Field(
        default_factory=HomeSettings, description="The home page: announcements, refresh."
    )
    support: SupportSettings = Field(
        default_factory=SupportSettings,
        description="Help requests that share one session with the support group for a while.",
    )
    idle: IdleSettings = Field(
        default_factory=IdleSettings,
        description="Idle sessions end (jupyterhub-idle-culler), per partition.",
    )
    accounting: AccountingSettings = Field(
        default_factory=AccountingSettings,
        description="Slurm accounting: accounts, QOS and budgets from slurmdbd.",
    )

    @model_validator(mode="after")
    def _one_source_of_accounts(self) -> SiteConfig:
        # Two lists of who may charge what would drift apart; Slurm enforces its own.
        if self.accounting.enabled and self.group_accounts:
            raise ValueError(
                "group_accounts must be empty when accounting.enabled is true: the users' "
                "Slurm associations (sacctmgr) say which accounts they may charge"
            )
        return self

    @model_validator(mode="after")
    def _default_is_listed(self) -> SiteConfig:
        if self.default_partition and self.default_partition not in self.partitions:
            raise ValueError(
                f"default_partition {self.default_partition!r} is not one of the partitions "
                f"({', '.join(self.partitions)})"
            )
        return self

    @model_validator(mode="after")
    def _idle_partitions_are_listed(self) -> SiteConfig:
        unknown = sorted(set(self.idle.partition_minutes) - set(self.partitions))
        if unknown:
            raise ValueError(
                f"idle.partition_minutes names {', '.join(unknown)}, not one of the "
                f"partitions ({', '.join(self.partitions)})"
            )
        return self

    @property
    def initial_partition(self) -> str:
        return self.default_partition or next(iter(self.partitions))


def describe_errors(exc: ValidationError) -> str:
    """Turn pydantic's errors into lines that name each field and what is allowed."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a known setting (check the spelling)"
        elif err["type"] == "missing":
            msg = "is required"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_site(data: Any, source: str = "site file") -> SiteConfig:
    """Validate already-loaded site data."""
    if not isinstance(data, dict):
        raise SiteConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise SiteConfigError(f"{source} is invalid:\n{describe_errors(exc)}") from None


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate a YAML site file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SiteConfigError(
            f"cannot read site file {path}: {exc.strerror}. "
            "Set SHOPFLOOR_SITE to your site file (hub_config/demo_site.yaml is an example)."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_site(data, str(path))


__all__ = [
    "AppsSettings",
    "AuthSettings",
    "HubSettings",
    "IdleSettings",
    "Limits",
    "ModelSettings",
    "PartitionPolicy",
    "RaySettings",
    "SiteConfig",
    "SiteConfigError",
    "SlurmSettings",
    "WorkshopSettings",
    "format_minutes",
    "load_site",
    "parse_site",
]
