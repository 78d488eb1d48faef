"""The capacity report's figures from Prometheus series (pure: unit-tested on recorded series).

A trend is a least-squares line through a series over the report's window; "days until full" is
the free space divided by that line's growth per day (none when it does not grow). SOP IN-3:
disk and memory watched daily, replaced or added before they are critical.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_S = 86400.0

Series = list[tuple[float, float]]  # (unix time, value)


def slope_per_day(points: Series) -> float | None:
    """Growth per day of the least-squares line through the points (None: fewer than two, or no time span)."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / var * DAY_S


def days_until_full(free_now: float, growth_per_day: float | None) -> float | None:
    """Days until `free_now` is used up at `growth_per_day` (None: not growing)."""
    if growth_per_day is None or growth_per_day <= 0:
        return None
    return free_now / growth_per_day


@dataclass
class Row:
    host: str
    what: str
    now: float | None  # the last value
    growth_per_day: float | None
    total: float | None = None  # capacity, where there is one (a filesystem's size)
    days_left: float | None = None

    @property
    def used_percent(self) -> float | None:
        return 100.0 * self.now / self.total if self.total and self.now is not None else None


def disk_rows(used: dict[tuple[str, str], Series], size: dict[tuple[str, str], Series]) -> list[Row]:
    """Per (host, mountpoint): used bytes now, growth per day, days until the filesystem is full."""
    rows = []
    for key in sorted(used):
        series, total = used[key], (size.get(key) or [(0, 0)])[-1][1]
        if not series:
            continue
        growth = slope_per_day(series)
        now = series[-1][1]
        rows.append(Row(key[0], key[1], now, growth, total, days_until_full(max(total - now, 0), growth)))
    return rows


def series_rows(series: dict[tuple[str, str], Series]) -> list[Row]:
    """Per (host, name): the last value and its growth per day (memory, database, uploads)."""
    return [Row(k[0], k[1], s[-1][1], slope_per_day(s)) for k, s in sorted(series.items()) if s]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} TiB"
