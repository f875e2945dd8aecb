"""Recall cases: a recall as a process, not a query. A case is opened from a lot or from a
process condition (as the recall takes them); it freezes the affected set the recall gives
then (lots, shipment lines, customers, on-hand places with quantities) and keeps it current
as late events arrive: the collector recomputes open cases on a schedule (and on asking,
and before an export or the close), adds what is new with when it was found, and marks
(never drops) what is no longer found. On a case the quality
team records which customers were told (when, by whom, how) and what came back, what was
held or destroyed at each place, puts the case's lots on hold (cloud_collector/holds.py),
and closes it with a summary; every action is kept with who and when. The case's record
exports as JSON or XLSX with the FSMA 204 sortable spreadsheet of its lots.

A mock-recall drill is a case marked `drill`: the time from its opening to its first
complete export is its measure (FSMA 204 asks for the records within 24 hours).

Parts: models (what the API takes and answers), affected (the set, from the recall's
answer), cases (the database), export (the files), schedule (the collector's task that
recomputes open cases every TRACE_RECALL_CASES_REFRESH_S between reads). Routes:
cloud_collector/routes/recall_cases.py.
"""

from cloud_collector.recall_cases.cases import (
    CaseClosed,
    NotOfCase,
    UnknownCase,
    case_record,
    cases,
    close,
    exported,
    hold_lots,
    open_case,
    record,
    refresh,
)
from cloud_collector.recall_cases.export import CaseExport, as_json, as_xlsx
from cloud_collector.recall_cases.models import (
    Case,
    CaseRecord,
    CaseState,
    Close,
    HoldLots,
    LotsHeld,
    Notice,
    OpenCase,
    PlaceAction,
    Return,
)
from cloud_collector.recall_cases.schedule import keep_cases_current, refresh_open_cases

__all__ = [
    "Case",
    "CaseClosed",
    "CaseExport",
    "CaseRecord",
    "CaseState",
    "Close",
    "HoldLots",
    "LotsHeld",
    "NotOfCase",
    "Notice",
    "OpenCase",
    "PlaceAction",
    "Return",
    "UnknownCase",
    "as_json",
    "as_xlsx",
    "case_record",
    "cases",
    "close",
    "exported",
    "hold_lots",
    "keep_cases_current",
    "open_case",
    "record",
    "refresh",
    "refresh_open_cases",
]
