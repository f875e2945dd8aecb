-- Dead letters kept once per message range, and resends that differ from what was committed.

-- A message is dead-lettered once per (edge, stream, epoch, first_seq..last_seq), or, when it
-- does not even parse into a range, once per (topic, payload): the edge's resends of the
-- same bad message count up `repeats` and move `last_seen` instead of adding rows. The
-- collector deletes rows whose last_seen is older than its retention setting.
alter table dead_letters
    add column stream      text,
    add column epoch       text,
    add column first_seq   bigint,
    add column last_seq    bigint,
    -- true: the message was acknowledged with its refused records (the edge quarantines
    -- them); false: nothing could be acknowledged (no range, or not from that edge).
    add column refused     boolean not null default false,
    add column fingerprint bytea,  -- sha256 of the key above; null for rows older than this
    add column repeats     integer not null default 1,
    add column last_seen   timestamptz;
update dead_letters set last_seen = received_at;
alter table dead_letters alter column last_seen set not null,
    alter column last_seen set default now();
create unique index dead_letters_fingerprint on dead_letters (fingerprint);
create index dead_letters_last_seen on dead_letters (last_seen);

-- A record resent under a (stream, seq) already committed with other content: the resend
-- is refused (its edge quarantines it) and both versions are kept here, once per distinct
-- resend, as an alarm for a person to settle (a line PC restored from an old disk image
-- numbers again from an old point and lands here). Never pruned.
create table record_conflicts (
    id              bigint generated always as identity primary key,
    stream_id       integer not null references edge_streams,
    seq             bigint not null,
    kind            text not null,          -- the record's kind (reading, batch_started, ...)
    fields          text[] not null,        -- the fields whose values differ
    committed       jsonb not null,         -- the record as committed under this number
    received        jsonb not null,         -- the resend that differs
    received_digest bytea not null,         -- sha256 of `received`, to count its repeats
    first_seen      timestamptz not null default now(),
    last_seen       timestamptz not null default now(),
    repeats         integer not null default 1,
    unique (stream_id, seq, received_digest)
);
create index record_conflicts_first_seen on record_conflicts (first_seen);

create view ingest_conflicts as
select c.id, s.edge_id, s.stream, s.epoch, c.seq, c.kind, c.fields, c.committed, c.received,
       c.first_seen, c.last_seen, c.repeats
from record_conflicts c join edge_streams s using (stream_id);
