"""The admin's picture of a user's day: a band per device and the resulting status, as SVG.

Pure: entries and the window in, an SVG document (a string) out; no Django, no clock, no
JavaScript. Every text that reaches the picture (device labels, messages) is escaped.

A band shows what was recorded: the status as published, and what each device reported
(live, idle, hidden, in a call, offline, signed out). A device that stopped sending without
saying so is not recorded as such; but while the status says no device was live, every device
band shows offline too, as that is what the engine concluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

STATUS_COLORS: dict[str, str] = {
    "available": "#2e7d32",
    "busy": "#c62828",
    "dnd": "#6a1b9a",
    "away": "#f9a825",
    "offline": "#9e9e9e",
}
DEVICE_COLORS: dict[str, str] = {
    "live": "#2e7d32",
    "idle": "#f9a825",
    "hidden": "#ef6c00",
    "in_call": "#c62828",
    "offline": "#9e9e9e",
}
DEVICE_STATE_LABELS: dict[str, str] = {
    "live": "live",
    "idle": "idle",
    "hidden": "hidden",
    "in_call": "in a call or meeting",
    "offline": "offline",
}
# Text, the axis and the "no data" band take the colour of the text around the picture
# (`currentColor`), so that it reads on the admin's light and dark themes alike; the states keep
# colours that read on both.
NO_DATA_COLOR = "currentColor"
NO_DATA_OPACITY = 0.1
_AXIS_STROKE = 'stroke="currentColor" stroke-opacity="0.6"'
NO_LIVE_DEVICE = "no_live_device"
SIGNED_OUT = "signed_out"

WIDTH = 960
LABEL_WIDTH = 170
ROW_HEIGHT = 22
ROW_GAP = 8
TOP = 10
AXIS_HEIGHT = 24
LEGEND_HEIGHT = 22
TICK_HOURS = 3


@dataclass(frozen=True, slots=True)
class StatusChange:
    at: datetime
    status: str
    reason: str = ""
    note: str = ""  # shown on hover: the reason, the source, the message


@dataclass(frozen=True, slots=True)
class DeviceChange:
    at: datetime
    device_id: str
    label: str
    state: str  # a key of DEVICE_COLORS, or "signed_out" (the band ends)


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime
    end: datetime
    state: str
    note: str = ""
    reason: str = ""


def status_segments(changes: Sequence[StatusChange], start: datetime, end: datetime) -> list[Segment]:
    """The status band: each change holds until the next one; before the first, no data."""
    segments: list[Segment] = []
    ordered = sorted(changes, key=lambda c: c.at)
    for index, change in enumerate(ordered):
        until = ordered[index + 1].at if index + 1 < len(ordered) else end
        begin = max(change.at, start)
        if min(until, end) > begin:
            segments.append(Segment(begin, min(until, end), change.status, change.note, change.reason))
    return segments


def device_segments(
    changes: Sequence[DeviceChange], start: datetime, end: datetime, status: Sequence[StatusChange]
) -> dict[str, tuple[str, list[Segment]]]:
    """Per device (by id, in order of first appearance): its label and its band."""
    bands: dict[str, tuple[str, list[Segment]]] = {}
    by_device: dict[str, list[DeviceChange]] = {}
    for change in sorted(changes, key=lambda c: c.at):
        by_device.setdefault(change.device_id, []).append(change)
    no_live = [(s.start, s.end) for s in status_segments(status, start, end) if s.reason == NO_LIVE_DEVICE]
    for device_id, entries in by_device.items():
        label = entries[-1].label or device_id[:12]
        segments: list[Segment] = []
        for index, change in enumerate(entries):
            if change.state == SIGNED_OUT:
                continue
            until = entries[index + 1].at if index + 1 < len(entries) else end
            begin = max(change.at, start)
            if min(until, end) > begin:
                segments.append(Segment(begin, min(until, end), change.state))
        bands[device_id] = (label, _overlay(segments, no_live, "offline"))
    return bands


def _overlay(segments: list[Segment], intervals: list[tuple[datetime, datetime]], state: str) -> list[Segment]:
    """`segments` with the parts inside `intervals` turned into `state`."""
    result: list[Segment] = []
    for segment in segments:
        cursor = segment.start
        for begin, until in intervals:
            if until <= cursor or begin >= segment.end:
                continue
            if begin > cursor:
                result.append(Segment(cursor, begin, segment.state))
            result.append(Segment(max(begin, cursor), min(until, segment.end), state))
            cursor = min(until, segment.end)
        if cursor < segment.end:
            result.append(Segment(cursor, segment.end, segment.state))
    return result


def render(
    start: datetime,
    end: datetime,
    status: Sequence[StatusChange],
    devices: Sequence[DeviceChange],
    title: str = "",
) -> str:
    """The timeline of [start, end] as an SVG document."""
    span = (end - start).total_seconds() or 1.0
    plot_width = WIDTH - LABEL_WIDTH - 10

    def x_of(moment: datetime) -> float:
        return LABEL_WIDTH + plot_width * (moment - start).total_seconds() / span

    rows: list[tuple[str, str, list[Segment], dict[str, str], dict[str, str]]] = [
        ("status", "Status", status_segments(status, start, end), STATUS_COLORS, {k: k for k in STATUS_COLORS})
    ]
    for label, segments in device_segments(devices, start, end, status).values():
        rows.append(("device", label, segments, DEVICE_COLORS, DEVICE_STATE_LABELS))
    height = TOP + len(rows) * (ROW_HEIGHT + ROW_GAP) + AXIS_HEIGHT + LEGEND_HEIGHT * 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" font-family="sans-serif" font-size="12" fill="currentColor">',
        f"<title>{escape(title or 'Presence timeline')}</title>",
    ]
    # State classes are prefixed: the admin's stylesheet hides anything of class "hidden".
    for index, (kind, label, segments, colors, names) in enumerate(rows):
        y = TOP + index * (ROW_HEIGHT + ROW_GAP)
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + ROW_HEIGHT * 0.7:.1f}" text-anchor="end" '
            f'class="row-label">{escape(_shorten(label))}</text>'
        )
        parts.append(
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{plot_width}" height="{ROW_HEIGHT}" fill="{NO_DATA_COLOR}" '
            f'fill-opacity="{NO_DATA_OPACITY}" class="no-data"><title>no data</title></rect>'
        )
        for segment in segments:
            left, right = x_of(segment.start), x_of(segment.end)
            color = colors.get(segment.state, STATUS_COLORS["offline"])
            name = names.get(segment.state, segment.state)
            note = f"{name} {segment.start:%H:%M:%S} to {segment.end:%H:%M:%S}"
            if segment.note:
                note += f" · {segment.note}"
            parts.append(
                f'<rect x="{left:.2f}" y="{y}" width="{max(right - left, 0.5):.2f}" height="{ROW_HEIGHT}" '
                f'fill="{color}" class={quoteattr(f"band {kind} state-{segment.state}")} '
                f"data-state={quoteattr(segment.state)}><title>{escape(note)}</title></rect>"
            )
    axis_y = TOP + len(rows) * (ROW_HEIGHT + ROW_GAP)
    parts.append(
        f'<line x1="{LABEL_WIDTH}" y1="{axis_y}" x2="{LABEL_WIDTH + plot_width}" y2="{axis_y}" {_AXIS_STROKE}/>'
    )
    for tick in _ticks(start, end):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.2f}" y1="{axis_y}" x2="{x:.2f}" y2="{axis_y + 5}" {_AXIS_STROKE}/>')
        parts.append(f'<text x="{x:.2f}" y="{axis_y + 18}" text-anchor="middle">{tick:%H:%M}</text>')
    legend_y = axis_y + AXIS_HEIGHT + 4
    parts.extend(_legend("Status", STATUS_COLORS, {k: k for k in STATUS_COLORS}, legend_y))
    parts.extend(_legend("Devices", DEVICE_COLORS, DEVICE_STATE_LABELS, legend_y + LEGEND_HEIGHT))
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(title: str, colors: dict[str, str], names: dict[str, str], y: float) -> list[str]:
    parts = [f'<text x="{LABEL_WIDTH - 8}" y="{y + 11}" text-anchor="end" class="legend">{escape(title)}</text>']
    x = float(LABEL_WIDTH)
    for state, color in colors.items():
        name = names.get(state, state)
        parts.append(f'<rect x="{x:.0f}" y="{y + 1}" width="12" height="12" fill="{color}" class="legend-swatch"/>')
        parts.append(f'<text x="{x + 16:.0f}" y="{y + 11}">{escape(name)}</text>')
        x += 28 + 7 * len(name)
    return parts


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    first = start.replace(minute=0, second=0, microsecond=0)
    while first < start or first.hour % TICK_HOURS:
        first += timedelta(hours=1)
    ticks = []
    while first <= end:
        ticks.append(first)
        first += timedelta(hours=TICK_HOURS)
    return ticks


def _shorten(label: str, limit: int = 24) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
