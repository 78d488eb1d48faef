"""Typed settings of the remote-repair logbook (roles/logbook, `siaga logbook`). SOP RA-5, RA-6."""

from pydantic import BaseModel, ConfigDict, Field


class LogbookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # An interactive session still without an analysis this many days after it ended is flagged
    # overdue (SOP RA-5: every remote repair documented and closed in the logbook).
    analysis_due_days: int = Field(3, ge=1, le=60)
    # How far back `siaga logbook collect` reads each host's journal. Collecting more often than
    # this loses nothing; records already on the workstation are never re-added.
    lookback_days: int = Field(40, ge=1, le=400)
    # SSH connections the firewall refuses (sources outside ssh_allowlist never reach sshd) are
    # logged to the journal through NFLOG and ulogd2, rate-limited, as failed attempts.
    log_refused: bool = True
    log_refused_per_minute: int = Field(6, ge=1, le=600)
    # The NFLOG group the firewall's log rule and ulogd2 share (any group nothing else on the host uses).
    nflog_group: int = Field(7, ge=1, le=65535)
