-- Sequence gaps kept up to date at ingest instead of computed from every commit ever made:
-- a trace asks for them per batch, and an edge's history grows by tens of thousands of
-- messages a day. Each stream's high-water mark is locked by the committing transaction,
-- so N collectors keep it consistent.

alter table edge_streams add column high_water bigint not null default -1;

create table sequence_gaps (
    stream_id     integer not null references edge_streams,
    first_missing bigint not null,
    last_missing  bigint not null,
    check (first_missing <= last_missing),
    primary key (stream_id, first_missing)
);

insert into sequence_gaps (stream_id, first_missing, last_missing)
select stream_id, first_missing, last_missing from stream_gaps;

update edge_streams e set high_water = c.last
from (select stream_id, max(last_seq) as last from stream_commits group by stream_id) c
where c.stream_id = e.stream_id;

drop view stream_gaps;
create view stream_gaps as
select s.edge_id, s.stream, s.epoch, g.stream_id, g.first_missing, g.last_missing
from sequence_gaps g join edge_streams s using (stream_id);
