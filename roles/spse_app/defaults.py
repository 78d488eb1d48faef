"""Typed settings of the spse_app role: the SPSE application (or the lab's stand-in) and Apache."""

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PATH_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


# The notice Apache shows while the app is down for a runbook (503; SOP IN-3), written and removed
# by drc/runbooks/switchover.py.
MAINTENANCE_PAGE = "/var/lib/siaga/maintenance.html"
# During a switch-over the old site's Apache forwards the app to the new site until the DNS TTL has
# passed (clients holding the old address are still served); the runbook writes this file, the
# site deploy that ends the switch-over removes it (SOP EM-2 step 6).
FORWARD_CONF = "/etc/apache2/siaga-forward.conf"


# Mozilla's "intermediate" TLS 1.2 suites (ssl-config.mozilla.org, guidelines 5.7): forward secret and
# AEAD only (no CBC, no RSA key exchange). TLS 1.3's suites are OpenSSL's, all AEAD.
MOZILLA_INTERMEDIATE_CIPHERS = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
]


class SpseAppSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # `standin`: siaga installs its small stand-in (the real SPSE installer is not public).
    # `external`: a real SPSE is installed by LKPP's procedure; siaga only manages its unit,
    # Apache and the directories, with the names below.
    install: Literal["standin", "external"] = "standin"
    # OS account that owns and runs the application, as on SPSE servers (/home/appserv).
    user: str = Field("appserv", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Directory name under /home/<user>/ and name of the control script inside it.
    app_name: str = Field("spse4", pattern=PATH_NAME)
    control_script: str = Field("spse", pattern=PATH_NAME)
    # systemd unit wrapping `<control_script> start|stop`; runbooks start and stop this.
    unit: str = Field("spse.service", pattern=r"^[A-Za-z0-9@._-]+\.service$")
    # Where the application listens (loopback only: Apache is the only way in) and its context path.
    listen_port: int = Field(9000, ge=1024, le=65535)
    context_path: str = Field("/eproc4", pattern=r"^/[A-Za-z0-9._-]+$")
    # Uploaded documents (SPSE's layout); replicated to the DRC by roles/uploads_sync.
    uploads_root: str = "/home/file"
    uploads_dir: str = "/home/file/file_prod"
    # Largest accepted upload (bytes): tender documents are scanned PDFs.
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # Public name of the service (TLS certificate and ServerName); default: the host's name.
    server_name: str | None = None
    # A real certificate and key already on the host (paths). Unset: a self-signed certificate is
    # made on the host (lab only: browsers warn). SOP IN-2 (SSL on the application).
    tls_certificate_file: str | None = None
    tls_key_file: str | None = None
    tls_chain_file: str | None = None
    # Files on the admin workstation that the deploy copies to the paths above (certificate and
    # chain 0644, key 0600 root): for certificates made off the host (the lab's own CA). Unset:
    # the files are already on the host. Never keep them in the repository.
    tls_certificate_source: Path | None = None
    tls_key_source: Path | None = None
    tls_chain_source: Path | None = None
    # TLS 1.2 suites Apache offers (TLS 1.2 and 1.3 only, SSLProtocol is fixed): Mozilla's
    # intermediate profile. Only forward-secret AEAD suites are accepted: CBC suites are refused.
    tls_ciphers: list[str] = Field(default_factory=lambda: list(MOZILLA_INTERMEDIATE_CIPHERS), min_length=1)
    # Strict-Transport-Security max-age (seconds): browsers then refuse plain HTTP and certificate
    # errors for the name this long (Mozilla: 2 years). 0 sends no header (a name not yet on TLS for good).
    hsts_max_age: int = Field(63072000, ge=0)

    # What `siaga backup restore-test` compares (SOP BK-4): the application profile. Unset: the
    # stand-in's profile with `install: standin` (today's checks), with `install: external` no
    # named table (tables sampled at random only) and files compared with production's own files.
    restore_test: "RestoreTestProfile | None" = None

    @field_validator("tls_ciphers")
    @classmethod
    def _aead_only(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"(ECDHE|DHE)-(ECDSA|RSA)-[A-Z0-9-]+", name) or not re.search(r"-GCM-|CHACHA20-POLY1305|-CCM", name):
                raise ProfileError(f"TLS cipher suite {name!r} is not a forward-secret AEAD suite (Mozilla intermediate: no CBC, no RSA key exchange)",
                                   "list OpenSSL names of ECDHE/DHE suites with GCM or CHACHA20-POLY1305, e.g. ECDHE-RSA-AES128-GCM-SHA256, or drop the key for the default")
        return value

    @model_validator(mode="after")
    def _tls_sources(self) -> "SpseAppSettings":
        for what in ("certificate", "key", "chain"):
            if getattr(self, f"tls_{what}_source") and not getattr(self, f"tls_{what}_file"):
                raise ProfileError(f"tls_{what}_source given without tls_{what}_file",
                                   f"set tls_{what}_file: the path on the hosts where the deploy puts it")
        if self.tls_certificate_file and not self.tls_key_file:
            raise ProfileError("tls_certificate_file without tls_key_file", "set tls_key_file: the certificate's private key on the host")
        return self

    @model_validator(mode="after")
    def _profile(self) -> "SpseAppSettings":
        if self.restore_test is None:
            self.restore_test = standin_profile() if self.install == "standin" else RestoreTestProfile(files="production")
        return self


class ProfileError(ValueError):
    """A wrong application profile: the problem and its fix (drc.site.model prints both)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix, self.key = problem, fix, None


IDENT = r"[a-z_][a-z0-9_$]{0,62}"


def _ident(value: str, what: str, example: str) -> str:
    if not re.fullmatch(IDENT, value):
        raise ProfileError(f"{what} {value!r} is not a lowercase SQL identifier",
                           f"write the name as PostgreSQL lists it (lowercase, unquoted), e.g. {example}")
    return value


class TableProfile(BaseModel):
    """One table restore-test always compares. SOP BK-4."""

    model_config = ConfigDict(extra="forbid")

    # schema.table, e.g. public.tender_document.
    table: str
    # A column set when a row is written (timestamp, timestamptz or date): the rows older than the
    # backup are compared (count + checksum), those written later are left out.
    timestamp_column: str | None = None
    # A small table without such a column: compared whole; rows written after the backup (their
    # transaction did not commit in the restored copy) are told apart from a bad restore.
    whole_table: bool = False

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not re.fullmatch(rf"{IDENT}\.{IDENT}", value):
            raise ProfileError(f"table {value!r} is not schema.table", "write the schema and the table, e.g. public.tender_document")
        return value

    @field_validator("timestamp_column")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        return value if value is None else _ident(value, "timestamp_column", "uploaded_at")

    @model_validator(mode="after")
    def _one_way(self) -> "TableProfile":
        if self.timestamp_column and self.whole_table:
            raise ProfileError(f"table {self.table}: both timestamp_column and whole_table given",
                               "keep timestamp_column (rows older than the backup are compared), or whole_table: true for a small table")
        if not self.timestamp_column and not self.whole_table:
            raise ProfileError(f"table {self.table}: neither timestamp_column nor whole_table given, so nothing could be compared",
                               "name the column set when a row is written (timestamp_column: ...), or set whole_table: true "
                               "for a small table without one")
        return self

    @property
    def schema_name(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[1]


class FileRecordsProfile(BaseModel):
    """The application's own record of each uploaded file and its sha256 (the stand-in has one)."""

    model_config = ConfigDict(extra="forbid")

    table: str = "public.tender_document"
    path_column: str = "path"
    sha256_column: str = "sha256"
    timestamp_column: str = "uploaded_at"

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return TableProfile._table(value)

    @field_validator("path_column", "sha256_column", "timestamp_column")
    @classmethod
    def _column(cls, value: str) -> str:
        return _ident(value, "column", "path")


class RestoreTestProfile(BaseModel):
    """What restore-test compares for this application (site file: spse_app.restore_test)."""

    model_config = ConfigDict(extra="forbid")

    # Tables always compared (others are sampled at random besides, up to --tables in all).
    tables: list[TableProfile] = Field(default_factory=list)
    # A whole-table comparison reads every row's checksum, and asks the restored copy about each
    # distinct transaction that wrote them (ids on the probe's command line): bigger tables need a
    # timestamp_column.
    whole_table_max_rows: int = Field(5000, ge=1, le=50_000)
    # Zone of `timestamp without time zone` values (the application's clock). Unset: base.timezone.
    time_zone: str | None = None
    # Sampled upload files compared with `production`'s own files older than the snapshot, or with
    # the application's `records` of their sha256 (file_records).
    files: Literal["production", "records"] = "production"
    file_records: FileRecordsProfile | None = None

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        from zoneinfo import ZoneInfo

        try:
            value is None or ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            raise ProfileError(f"unknown time zone {value!r}", "use an IANA name such as Asia/Jakarta (WIB), Asia/Makassar "
                               "(WITA) or Asia/Jayapura (WIT), or leave it unset for base.timezone") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RestoreTestProfile":
        seen = set()
        for t in self.tables:
            if t.table in seen:
                raise ProfileError(f"table {t.table} listed twice", "keep one entry per table")
            seen.add(t.table)
        if self.files == "records" and self.file_records is None:
            raise ProfileError("files: records without file_records",
                               "name the table and its path, sha256 and timestamp columns under file_records, or use files: production")
        return self


def standin_profile() -> RestoreTestProfile:
    """The stand-in's profile: `tender_document` by `uploaded_at`, files against its sha256 column."""
    return RestoreTestProfile(tables=[TableProfile(table="public.tender_document", timestamp_column="uploaded_at")],
                              files="records", file_records=FileRecordsProfile())


SpseAppSettings.model_rebuild()
