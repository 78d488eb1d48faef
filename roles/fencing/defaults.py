"""Typed settings of the fencing role (site key `fencing`): the guard that keeps a superseded
primary from accepting writes (drc/hostside/fence.py)."""

from pydantic import BaseModel, ConfigDict, Field


class FencingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Seconds the guard asks the peer before PostgreSQL starts as a primary. No answer within it and
    # no authority on this host (granted by `siaga failover` or `siaga fence release`): PostgreSQL
    # stays down (it may have been superseded). Longer rides out a WAN blip at boot; the cost is a
    # slower start when the peer is really gone.
    guard_wait_s: int = Field(20, ge=1, le=600)
    # How often a running primary asks its peer whether it was superseded (a newer timeline): an old
    # primary reconnected after a partition fences itself within this many seconds.
    watch_interval_s: int = Field(5, ge=1, le=300)
