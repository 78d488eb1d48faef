"""Typed settings of the modsecurity role: ModSecurity 2 with the OWASP Core Rule Set (CRS 3.3) on
Apache, from Debian's libapache2-mod-security2 and modsecurity-crs. SOP IN-2."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Rule IDs siaga's own exclusions use (ModSecurity's range for local rules; CRS uses 900000-999999).
LOCAL_RULE_ID_BASE = 10100

UrlPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/%-]*$")]
RuleId = Annotated[int, Field(ge=1, le=99_999_999)]


class RuleExclusion(BaseModel):
    """Requests whose path starts with `path`: the listed CRS rules are not run for them, and with
    `inspect_body: false` their body is not read by ModSecurity at all (a file upload: ClamAV scans
    the stored file instead, roles/clamav). Headers, path and query string are still inspected."""

    model_config = ConfigDict(extra="forbid")

    path: UrlPath
    rule_ids: list[RuleId] = Field(default_factory=list)
    inspect_body: bool = True

    @model_validator(mode="after")
    def _does_something(self) -> RuleExclusion:
        if not self.rule_ids and self.inspect_body:
            raise ValueError(f"the exclusion for {self.path} excludes nothing: list rule_ids (the CRS rule IDs in the "
                             "ModSecurity log), or set inspect_body: false for an upload path")
        return self


class ModsecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # False: the security2 module is disabled in Apache (the files stay, unused).
    enabled: bool = True
    # On: a request whose anomaly score reaches the threshold is refused (403) and logged.
    # DetectionOnly: it is only logged (a new site's first weeks, to find false positives).
    engine: Literal["On", "DetectionOnly"] = "On"
    # CRS paranoia level 1-4: higher catches more and needs more exclusions (CRS: start at 1).
    paranoia_level: int = Field(1, ge=1, le=4)
    # Anomaly score at which a request (inbound) or a response (outbound) is blocked (CRS defaults).
    inbound_anomaly_threshold: int = Field(5, ge=1, le=1000)
    outbound_anomaly_threshold: int = Field(4, ge=1, le=1000)
    # CRS rules switched off everywhere (a false positive that is not tied to one path).
    removed_rules: list[RuleId] = Field(default_factory=list)
    # Per-path exclusions besides the application's own upload endpoints (below).
    exclusions: list[RuleExclusion] = Field(default_factory=list)
    # Path prefixes that take file uploads as the request body: not read by ModSecurity (a 50 MB
    # scanned PDF is not a form; ClamAV scans the stored file). Unset: the stand-in's
    # <context_path>/dokumen with `spse_app.install: standin`, none with `external`.
    upload_paths: list[UrlPath] | None = None
    # Where blocked and warned requests are written in full (headers only, no bodies: passwords).
    audit_log: str = "/var/log/apache2/modsec_audit.log"

    @field_validator("engine", mode="before")
    @classmethod
    def _yaml_on(cls, value):
        # YAML reads an unquoted On as true (and Off as false).
        if value is True:
            return "On"
        if value is False:
            raise ValueError("Off is not an engine mode: to switch ModSecurity off set modsecurity.enabled: false; "
                             "to log without blocking use engine: DetectionOnly")
        return value
