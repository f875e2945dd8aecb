-- EPCIS 2.0 repository. Events captured from partners (POST /epcis/capture) live in
-- trace_events beside our own edges' events, so one query answers for both and the
-- genealogy joins one table. `body_format` says how `body` reads: 'trace.v1' is an edge's
-- record (protocols/mqtt/contract.py, rendered as EPCIS at query time), 'epcis' the
-- EPCIS JSON-LD event as captured. The columns beside it are what queries filter on.

alter table trace_events drop constraint trace_events_event_type_check;
alter table trace_events add constraint trace_events_event_type_check check (event_type in
    ('ObjectEvent', 'AggregationEvent', 'TransactionEvent', 'TransformationEvent',
     'AssociationEvent'));
-- EPCIS makes both optional (an AssociationEvent may have no bizStep, any event no readPoint).
alter table trace_events alter column biz_step drop not null;
alter table trace_events alter column read_point drop not null;
alter table trace_events
    add column body_format text not null default 'trace.v1'
        check (body_format in ('trace.v1', 'epcis')),
    add column epcis_context jsonb,       -- inline @context prefixes of the captured document
    add column event_id_assigned boolean not null default false,  -- eventID is our hash
    add column capture_id text;

create index trace_events_record_time on trace_events (record_time, event_id);
create index trace_events_event_time_id on trace_events (event_time, event_id);
create index trace_events_biz_step on trace_events (biz_step, event_time);
create index trace_events_disposition on trace_events (disposition, event_time)
    where disposition is not null;
create index trace_events_read_point on trace_events (read_point, event_time);
create index trace_events_biz_location on trace_events (biz_location, event_time)
    where biz_location is not null;
create index trace_events_type on trace_events (event_type, event_time);

-- EPCIS lists beyond observed/input/output: AggregationEvent and AssociationEvent parents
-- (parentID) and children (childEPCs, childQuantityList).
alter table event_items drop constraint event_items_role_check;
alter table event_items add constraint event_items_role_check
    check (role in ('observed', 'input', 'output', 'parent', 'child'));
-- MATCH_* take exact ids and patterns (urn:epc:idpat:sgtin:0614141.107346.*): prefix
-- searches need the pattern operator class (the database collation is not C).
create index event_items_epc_pattern on event_items (epc text_pattern_ops)
    where epc is not null;
create index event_items_epc_class_pattern on event_items (epc_class text_pattern_ops)
    where epc_class is not null;
create index event_items_serial on event_items (gtin, serial) where serial is not null;

-- A capture job (the REST binding's /capture/{captureID}). Capture is synchronous and all or
-- nothing here: a job exists only for a document that was accepted and committed.
create table epcis_capture_jobs (
    capture_id     text primary key,
    created_at     timestamptz not null,
    finished_at    timestamptz,
    running        boolean not null,
    success        boolean not null,
    error_behaviour text not null default 'rollback',
    events         integer not null,
    stored         integer not null,  -- new events; the rest had been captured before
    errors         jsonb not null default '[]',
    captured_by    text not null,     -- the credential's name
    partner_id     text               -- set when a partner's key captured it
);
