-- Trace events shaped after GS1 EPCIS 2.0 (object and transformation events) and the items
-- they are about, keyed so that genealogy queries join on plain GS1 keys.

create table trace_events (
    event_id     text primary key,
    event_type   text not null check (event_type in ('ObjectEvent', 'TransformationEvent')),
    event_time   timestamptz not null,
    record_time  timestamptz not null default now(),
    action       text check (action in ('ADD', 'OBSERVE', 'DELETE')),
    biz_step     text not null,
    disposition  text,
    read_point   text not null,
    biz_location text,
    line_id      text,
    batch_id     text,
    operator     text,
    device       text,
    flags        text[] not null default '{}',
    biz_transactions jsonb not null default '[]',
    source_edge  text,   -- null for events captured from partners (EPCIS capture)
    stream_id    integer references edge_streams,
    seq          bigint,
    body         jsonb not null  -- the event as received, for EPCIS export and audits
);
create unique index trace_events_stream_seq on trace_events (stream_id, seq)
    where stream_id is not null;
create index trace_events_time on trace_events (event_time);
create index trace_events_batch on trace_events (batch_id) where batch_id is not null;

create table event_items (
    event_id   text not null references trace_events on delete cascade,
    role       text not null check (role in ('observed', 'input', 'output')),
    position   integer not null,
    epc        text,
    epc_class  text,
    quantity   double precision,
    uom        text,
    gtin       text,
    lot        text,
    serial     text,
    sscc       text,
    raw        text,
    unknown_reason text,
    primary key (event_id, role, position)
);
create index event_items_lot on event_items (gtin, lot) where lot is not null;
create index event_items_sscc on event_items (sscc) where sscc is not null;
create index event_items_epc on event_items (epc) where epc is not null;

-- Purchase orders, shipments and other business documents an event refers to.
create table event_documents (
    event_id text not null references trace_events on delete cascade,
    type     text not null,
    id       text not null,
    primary key (event_id, type, id)
);
create index event_documents_id on event_documents (type, id);
