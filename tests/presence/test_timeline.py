"""The admin's timeline picture: a pure function from history entries to an SVG document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from presence.timeline import DEVICE_COLORS, STATUS_COLORS, DeviceChange, StatusChange, render

SVG = "{http://www.w3.org/2000/svg}"
END = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
START = END - timedelta(hours=24)


def at(hours_before_end: float) -> datetime:
    return END - timedelta(hours=hours_before_end)


def bands(svg: str) -> list[tuple[str, str, str]]:
    """(row kind, state, fill) of every band, in drawing order."""
    root = ET.fromstring(svg)
    found = []
    for rect in root.iter(f"{SVG}rect"):
        classes = rect.get("class", "").split()
        if classes and classes[0] == "band":
            assert classes[2] == f"state-{rect.get('data-state')}"
            found.append((classes[1], rect.get("data-state"), rect.get("fill")))
    return found


def row_labels(svg: str) -> list[str]:
    return [text.text for text in ET.fromstring(svg).iter(f"{SVG}text") if text.get("class") == "row-label"]


def test_the_status_band_has_a_segment_per_change_in_its_color():
    status = [
        StatusChange(at(30), "offline", "no_live_device"),  # before the window: how it opens
        StatusChange(at(8), "available", "device_active"),
        StatusChange(at(6), "busy", "in_call"),
        StatusChange(at(5), "away", "all_devices_idle_or_hidden"),
    ]

    svg = render(START, END, status, [])

    assert ET.fromstring(svg).tag == f"{SVG}svg"
    assert [b for b in bands(svg) if b[0] == "status"] == [
        ("status", "offline", STATUS_COLORS["offline"]),
        ("status", "available", STATUS_COLORS["available"]),
        ("status", "busy", STATUS_COLORS["busy"]),
        ("status", "away", STATUS_COLORS["away"]),
    ]


def test_segments_are_placed_and_sized_by_time():
    status = [StatusChange(at(12), "available"), StatusChange(at(6), "dnd")]

    root = ET.fromstring(render(START, END, status, []))

    rects = [r for r in root.iter(f"{SVG}rect") if r.get("data-state")]
    available, dnd = (float(r.get("width")) for r in rects)
    assert available == dnd  # six hours each
    assert float(rects[0].get("x")) + available == float(rects[1].get("x"))


def test_each_device_gets_a_band_of_its_reported_states():
    devices = [
        DeviceChange(at(10), "d1", "laptop", "live"),
        DeviceChange(at(9), "d1", "laptop", "hidden"),
        DeviceChange(at(8), "d2", "phone", "in_call"),
        DeviceChange(at(7), "d1", "laptop", "idle"),
        DeviceChange(at(6), "d2", "phone", "signed_out"),
    ]

    svg = render(START, END, [StatusChange(at(10), "available")], devices)

    assert row_labels(svg) == ["Status", "laptop", "phone"]
    device_bands = [b for b in bands(svg) if b[0] == "device"]
    assert device_bands == [
        ("device", "live", DEVICE_COLORS["live"]),
        ("device", "hidden", DEVICE_COLORS["hidden"]),
        ("device", "idle", DEVICE_COLORS["idle"]),
        ("device", "in_call", DEVICE_COLORS["in_call"]),  # then signed out: the band ends
    ]


def test_devices_show_offline_while_the_status_says_no_device_was_live():
    status = [StatusChange(at(10), "available", "device_active"), StatusChange(at(4), "offline", "no_live_device")]
    devices = [DeviceChange(at(10), "d1", "laptop", "live")]

    svg = render(START, END, status, devices)

    assert [b[1] for b in bands(svg) if b[0] == "device"] == ["live", "offline"]


def test_labels_and_notes_are_escaped():
    hostile = '<script>alert("x")</script> & co'
    status = [StatusChange(at(3), "dnd", "manual_status", note=hostile)]
    devices = [DeviceChange(at(3), "d1", hostile, "live")]

    svg = render(START, END, status, devices, title=hostile)

    assert "<script>" not in svg
    root = ET.fromstring(svg)  # still well-formed
    assert root.find(f"{SVG}title").text == hostile
    assert hostile[:23] in row_labels(svg)[1]
    assert any(hostile in (t.text or "") for t in root.iter(f"{SVG}title"))


def test_an_empty_history_draws_empty_rows_and_the_axis():
    root = ET.fromstring(render(START, END, [], []))

    assert bands(ET.tostring(root, encoding="unicode")) == []
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith(":00")]
    assert ticks[:3] == ["18:00", "21:00", "00:00"]


def test_the_picture_reads_on_light_and_dark_themes_alike():
    """The admin has a dark theme: text, axis and the empty band take the colour of the text around
    the picture, and only the states have colours of their own."""
    root = ET.fromstring(render(START, END, [StatusChange(at(10), "busy")], []))
    ns = "{http://www.w3.org/2000/svg}"

    assert root.get("fill") == "currentColor"
    assert all(text.get("fill") is None for text in root.iter(f"{ns}text"))
    assert {line.get("stroke") for line in root.iter(f"{ns}line")} == {"currentColor"}
    [empty] = [rect for rect in root.iter(f"{ns}rect") if rect.get("class") == "no-data"]
    assert (empty.get("fill"), float(empty.get("fill-opacity"))) == ("currentColor", 0.1)
    colours = {rect.get("fill") for rect in root.iter(f"{ns}rect") if "band" in (rect.get("class") or "")}
    assert colours == {STATUS_COLORS["busy"]}
