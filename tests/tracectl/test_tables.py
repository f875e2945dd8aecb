"""What tracectl prints of the API's answers: control characters from outside escaped, a
genealogy as a tree whose shared lots and loops are named, not walked again."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from tracectl.genealogy import lot_path, trace_tree
from tracectl.tables import quantity, safe, table, when


def test_control_characters_never_reach_the_terminal() -> None:
    assert safe("LOT\x1b[2J\x1b]0;owned\x07") == "LOT\\x1b[2J\\x1b]0;owned\\x07"
    assert safe("a\nb\rc\u202e") == "a\\nb\\rc\\u202e"
    assert safe("Müller 面粉 lot") == "Müller 面粉 lot"
    assert "\x1b" not in table(["LOT"], [["\x1b[31mred"]])


def test_tables_align_and_cut_long_cells() -> None:
    text = table(["A", "N"], [["x", 1], ["longer", 10.5], ["y" * 60, None]])
    lines = text.splitlines()
    assert lines[0] == "A" + " " * 47 + "  " + "   N"
    assert lines[1].endswith("   1") and lines[2].endswith("10.5")
    assert "…" in lines[3] and len(lines[3].split()[0]) == 48
    assert quantity(1000.0, "KGM") == "1,000 KGM" and quantity(None, "EA") == "-"


def lot(lot_id: int, code: str) -> dict[str, Any]:
    return {"lot_id": lot_id, "lot_code": code, "gtin": "", "origin": "own"}


def test_a_lot_met_twice_is_shown_once_and_a_loop_is_marked() -> None:
    # FLOUR -> B1 -> DOUGH -> B2 -> BREAD and -> B3 -> CAKE; BREAD -> RW -> DOUGH (rework);
    # CAKE also from DOUGH via B4 (a second path to the same lot).
    body = {
        "direction": "forward",
        "lot": lot(1, "FLOUR"),
        "lots": [lot(1, "FLOUR"), lot(2, "DOUGH"), lot(3, "BREAD"), lot(4, "CAKE")],
        "links": [
            {"input_lot": 1, "output_lot": 2, "batch_id": "B1"},
            {"input_lot": 2, "output_lot": 3, "batch_id": "B2"},
            {"input_lot": 2, "output_lot": 4, "batch_id": "B3"},
            {"input_lot": 3, "output_lot": 2, "batch_id": "RW"},
            {"input_lot": 3, "output_lot": 4, "batch_id": "B4"},
        ],
        "batches": [],
        "receipts": [],
        "shipments": [{"lot_id": 4, "shipment": "SH-1", "customer": "Bakery", "time": None}],
    }
    assert trace_tree(body) == [
        "lot FLOUR  [made here]",
        "└─ batch B1",
        "   └─ lot DOUGH  [made here]",
        "      ├─ batch B2",
        "      │  └─ lot BREAD  [made here]",
        "      │     ├─ batch RW",
        "      │     │  └─ ↻ lot DOUGH (a loop: above)",
        "      │     └─ batch B4",
        "      │        └─ lot CAKE  [made here]",
        "      │           └─ shipped SH-1 to Bakery, -, -",
        "      └─ batch B3",
        "         └─ lot CAKE  [made here] (shown above)",
    ]


def test_a_scanned_label_is_escaped_in_the_url_path() -> None:
    assert lot_path("01/09506000134352/10/L 1?x#y%") == "01/09506000134352/10/L%201%3Fx%23y%25"
    assert lot_path("(01)09506000134352(10)L1") == "(01)09506000134352(10)L1"
    assert lot_path("]C1010950600013435210L1\x1d") == "%5DC1010950600013435210L1%1D"


def test_times_are_the_plant_s_with_the_zone_named() -> None:
    instant = "2026-11-20T06:00:00+00:00"
    assert when(instant, ZoneInfo("Asia/Shanghai")) == "2026-11-20 14:00:00 CST"
    assert when(instant, ZoneInfo("America/Los_Angeles")) == "2026-11-19 22:00:00 PST"
    assert when(instant, ZoneInfo("UTC")) == "2026-11-20 06:00:00 UTC"
    assert when(None) == "-" and when("not a time\x1b") == "not a time\\x1b"
