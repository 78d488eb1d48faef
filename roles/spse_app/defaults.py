"""Typed settings of the spse_app role: the SPSE application (or the lab's stand-in) and Apache."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PATH_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


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
