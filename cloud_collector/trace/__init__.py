"""Trace queries: which lot a person means (resolve), where it came from and where it went
(walk), what the answer lacks (gaps), the recall list (recall), the recall by condition
(condition) and the spreadsheet forms (render). Every answer lists the gaps it met.

Callers import this package (`from cloud_collector import trace`; `trace.resolve`,
`trace.trace`, `trace.recall_csv`, ...): the modules are its parts, not its interface.
"""

from cloud_collector.trace.condition import condition_roots, recall_by_condition
from cloud_collector.trace.gaps import MASS_BALANCE_TOLERANCE, BatchGap, BatchGapKind, batch_gaps
from cloud_collector.trace.models import (
    AmbiguousLot,
    BatchLot,
    Condition,
    ConditionBatch,
    ConditionRecall,
    Direction,
    Link,
    Lot,
    PlaceStock,
    QcResult,
    Recall,
    RecallLine,
    Receipt,
    ShipmentLine,
    Trace,
    TracedBatch,
    UnknownLot,
)
from cloud_collector.trace.recall import on_hand_by_place, recall
from cloud_collector.trace.render import (
    RECALL_CSV_COLUMNS,
    TRACE_CSV_COLUMNS,
    condition_recall_xlsx,
    recall_csv,
)
from cloud_collector.trace.resolve import resolve
from cloud_collector.trace.walk import (
    count_reachable,
    reachable,
    shipment_lines,
    trace,
    traced_batches,
)

__all__ = [
    "MASS_BALANCE_TOLERANCE",
    "RECALL_CSV_COLUMNS",
    "TRACE_CSV_COLUMNS",
    "AmbiguousLot",
    "BatchGap",
    "BatchGapKind",
    "BatchLot",
    "Condition",
    "ConditionBatch",
    "ConditionRecall",
    "Direction",
    "Link",
    "Lot",
    "PlaceStock",
    "QcResult",
    "Recall",
    "RecallLine",
    "Receipt",
    "ShipmentLine",
    "Trace",
    "TracedBatch",
    "UnknownLot",
    "batch_gaps",
    "condition_recall_xlsx",
    "condition_roots",
    "count_reachable",
    "on_hand_by_place",
    "reachable",
    "recall",
    "recall_by_condition",
    "recall_csv",
    "resolve",
    "shipment_lines",
    "trace",
    "traced_batches",
]
