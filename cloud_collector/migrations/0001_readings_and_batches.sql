-- Readings in a hypertable, batches, and the bookkeeping that makes ingest idempotent.
create extension if not exists timescaledb;

-- One row per (edge, stream, epoch): readings refer to it by a small integer so that the
-- idempotency key (stream_id, seq) stays narrow on hundreds of millions of rows.
create table edge_streams (
    stream_id   integer generated always as identity primary key,
    edge_id     text not null,
    stream      text not null,
    epoch       text not null,
    first_seen  timestamptz not null default now(),
    unique (edge_id, stream, epoch)
);

-- Every message a collector committed: written in the same transaction as its rows, so a
-- resend is recognised, and gaps in an edge's numbering can be proven later.
create table stream_commits (
    stream_id    integer not null references edge_streams,
    first_seq    bigint not null,
    last_seq     bigint not null,
    records      integer not null,
    inserted     integer not null,  -- 0 for a pure resend
    committed_at timestamptz not null default now(),
    check (first_seq <= last_seq)
);
create index stream_commits_range on stream_commits (stream_id, first_seq);

create table batches (
    batch_id    text primary key,
    line_id     text not null,
    edge_id     text not null,
    started_at  timestamptz,
    started_by  text,
    ended_at    timestamptz,
    ended_by    text,
    first_seen  timestamptz not null default now()
);

create table readings (
    time         timestamptz not null,       -- when the edge took the reading
    device_time  timestamptz,                -- the device's own timestamp, when it has one
    received_at  timestamptz not null,       -- when the collector committed it
    line_id      text not null,
    batch_id     text,                       -- null: the line was idle (explicitly no batch)
    device       text not null,
    tag          text not null,
    value        double precision,
    unit         text,
    quality      text not null check (quality in ('good', 'uncertain', 'bad')),
    detail       text,
    stream_id    integer not null,
    seq          bigint not null
);
select create_hypertable('readings', by_range('time', interval '1 day'));
-- The idempotency key; a hypertable's unique index must contain its time column.
create unique index readings_stream_seq on readings (stream_id, seq, time);
create index readings_batch_tag on readings (batch_id, device, tag, time) where batch_id is not null;

create table batch_events (
    stream_id   integer not null references edge_streams,
    seq         bigint not null,
    time        timestamptz not null,
    kind        text not null check (kind in ('batch_started', 'batch_ended')),
    line_id     text not null,
    batch_id    text not null,
    actor       text not null,
    received_at timestamptz not null,
    primary key (stream_id, seq)
);
create index batch_events_batch on batch_events (batch_id, time);

-- What could not be ingested, with the reason, so nothing vanishes silently.
create table dead_letters (
    id          bigint generated always as identity primary key,
    received_at timestamptz not null default now(),
    topic       text not null,
    edge_id     text,
    reason      text not null,
    payload     bytea not null
);
