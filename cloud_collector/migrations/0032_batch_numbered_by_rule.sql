-- Batch ids the edge made by its line's numbering rule (device_profiles/numbering.py): the
-- batch started without an id, so the id is the edge's, not the MES's, a label's or a PLC's.
alter table batch_events add column numbered_by_rule boolean not null default false;
alter table batches add column numbered_by_rule boolean not null default false;
