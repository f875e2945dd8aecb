-- Backfilled readings are marked; device gaps and outbox drops reported by edges are kept;
-- sequence gaps per edge stream and epoch can be listed.

-- A reading that reached the collector long after it was taken (an outage drained).
alter table readings add column backfill boolean not null default false;

create table device_events (
    stream_id   integer not null references edge_streams,
    seq         bigint not null,
    time        timestamptz not null,
    kind        text not null check (kind in ('device_offline', 'device_online')),
    line_id     text not null,
    device      text not null,
    detail      text,
    received_at timestamptz not null,
    primary key (stream_id, seq)
);
create index device_events_device on device_events (device, time);

-- Readings an edge deleted from a full outbox by its policy: a known gap, not a lost one.
create table readings_dropped (
    stream_id     integer not null references edge_streams,
    seq           bigint not null,
    time          timestamptz not null,
    dropped_stream text not null,
    count         integer not null,
    first_seq     bigint not null,
    last_seq      bigint not null,
    policy        text not null,
    received_at   timestamptz not null,
    primary key (stream_id, seq)
);

-- Holes in what was committed of each (edge, stream, epoch): the proof of completeness,
-- or the list of what is missing. A hole at the end (not yet sent) is not listed.
create view stream_gaps as
with ordered as (
    select stream_id, first_seq, last_seq,
           max(last_seq) over (
               partition by stream_id order by first_seq, last_seq
               rows between unbounded preceding and 1 preceding
           ) as covered_through
    from stream_commits
)
select s.edge_id, s.stream, s.epoch, o.stream_id,
       coalesce(o.covered_through, -1) + 1 as first_missing,
       o.first_seq - 1 as last_missing
from ordered o join edge_streams s using (stream_id)
where o.first_seq > coalesce(o.covered_through, -1) + 1;
