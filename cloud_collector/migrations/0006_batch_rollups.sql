-- Per-batch rollups kept at ingest, so that a trace or a batch's parameters never scan the
-- batch's readings (a fermentation runs a million of them). The Apache edition of
-- TimescaleDB has no continuous aggregates: the collector adds each committed message's
-- readings to these rows in the statement that inserts them.

-- Per batch, device and tag: counts by quality, statistics over the good readings, and the
-- excursions against the spec limits in force when the readings arrived.
create table batch_tag_stats (
    batch_id        text not null,
    device          text not null,
    tag             text not null,
    unit            text,              -- the latest reading's unit
    count           bigint not null,   -- every reading, whatever its quality
    good_count      bigint not null,   -- good readings with a value: the statistics' basis
    bad_count       bigint not null,
    uncertain_count bigint not null,
    min             double precision,
    max             double precision,
    sum             double precision not null,
    first_time      timestamptz not null,
    last_time       timestamptz not null,
    low             double precision,  -- the spec limits counted against
    high            double precision,
    below           bigint not null,
    above           bigint not null,
    excursion_min   double precision,
    excursion_max   double precision,
    excursion_first timestamptz,
    excursion_last  timestamptz,
    primary key (batch_id, device, tag)
);

-- The same per minute, for the downsampled series a chart draws (buckets of whole minutes
-- once a batch is longer than its chart has points).
create table batch_tag_minutes (
    batch_id   text not null,
    device     text not null,
    tag        text not null,
    minute     timestamptz not null,
    count      bigint not null,
    good_count bigint not null,
    sum        double precision not null,
    min        double precision,
    max        double precision,
    primary key (batch_id, device, tag, minute)
);

-- Percentiles cannot be added up message by message: they are computed from the readings
-- and kept with the reading count they were computed at; a count that moved on (late
-- readings) makes them stale, and the next reader recomputes them.
create table batch_tag_percentiles (
    batch_id text not null,
    device   text not null,
    tag      text not null,
    at_count bigint not null,
    p05      double precision,
    p50      double precision,
    p95      double precision,
    primary key (batch_id, device, tag)
);

-- When each sequence gap happened (the readings on both sides of it), kept at ingest, so a
-- trace can tell which batches a hole falls into without looking at readings.
alter table edge_streams add column high_water_time timestamptz;
alter table sequence_gaps add column before_time timestamptz;  -- null: nothing before it
alter table sequence_gaps add column after_time timestamptz;

update sequence_gaps g set
    before_time = (select r.time from readings r
                   where r.stream_id = g.stream_id and r.seq = g.first_missing - 1 limit 1),
    after_time = (select r.time from readings r
                  where r.stream_id = g.stream_id and r.seq = g.last_missing + 1 limit 1);
update edge_streams e set high_water_time = (
    select r.time from readings r where r.stream_id = e.stream_id and r.seq = e.high_water limit 1);

drop view stream_gaps;
create view stream_gaps as
select s.edge_id, s.stream, s.epoch, g.stream_id, g.first_missing, g.last_missing,
       g.before_time, g.after_time
from sequence_gaps g join edge_streams s using (stream_id);

-- Rollups of the readings already stored (the statements cloud_collector/rollups.py runs
-- at ingest, over every reading).
insert into batch_tag_stats as s (batch_id, device, tag, unit, count, good_count, bad_count,
    uncertain_count, min, max, sum, first_time, last_time, low, high, below, above,
    excursion_min, excursion_max, excursion_first, excursion_last)

select r.batch_id, r.device, r.tag, (array_agg(r.unit order by r.time desc))[1],
       count(*), count(*) filter (where r.quality = 'good' and r.value is not null),
       count(*) filter (where r.quality = 'bad'), count(*) filter (where r.quality = 'uncertain'),
       min(r.value) filter (where r.quality = 'good' and r.value is not null), max(r.value) filter (where r.quality = 'good' and r.value is not null),
       coalesce(sum(r.value) filter (where r.quality = 'good' and r.value is not null), 0), min(r.time), max(r.time),
       sp.low, sp.high,
       count(*) filter (where r.quality = 'good' and r.value is not null and r.value < sp.low),
       count(*) filter (where r.quality = 'good' and r.value is not null and r.value > sp.high),
       min(r.value) filter (where r.quality = 'good' and r.value is not null and (r.value < sp.low or r.value > sp.high)), max(r.value) filter (where r.quality = 'good' and r.value is not null and (r.value < sp.low or r.value > sp.high)),
       min(r.time) filter (where r.quality = 'good' and r.value is not null and (r.value < sp.low or r.value > sp.high)), max(r.time) filter (where r.quality = 'good' and r.value is not null and (r.value < sp.low or r.value > sp.high))
from readings r left join tag_specs sp using (device, tag)
where r.batch_id is not null
group by r.batch_id, r.device, r.tag, sp.low, sp.high
order by r.batch_id, r.device, r.tag

on conflict (batch_id, device, tag) do update set
    unit = excluded.unit,
    count = s.count + excluded.count,
    good_count = s.good_count + excluded.good_count,
    bad_count = s.bad_count + excluded.bad_count,
    uncertain_count = s.uncertain_count + excluded.uncertain_count,
    min = least(s.min, excluded.min),
    max = greatest(s.max, excluded.max),
    sum = s.sum + excluded.sum,
    first_time = least(s.first_time, excluded.first_time),
    last_time = greatest(s.last_time, excluded.last_time),
    low = excluded.low,
    high = excluded.high,
    below = s.below + excluded.below,
    above = s.above + excluded.above,
    excursion_min = least(s.excursion_min, excluded.excursion_min),
    excursion_max = greatest(s.excursion_max, excluded.excursion_max),
    excursion_first = least(s.excursion_first, excluded.excursion_first),
    excursion_last = greatest(s.excursion_last, excluded.excursion_last);

insert into batch_tag_minutes as m (batch_id, device, tag, minute, count, good_count, sum,
    min, max)
select r.batch_id, r.device, r.tag, time_bucket('1 minute', r.time) as minute, count(*),
       count(*) filter (where r.quality = 'good' and r.value is not null), coalesce(sum(r.value) filter (where r.quality = 'good' and r.value is not null), 0),
       min(r.value) filter (where r.quality = 'good' and r.value is not null), max(r.value) filter (where r.quality = 'good' and r.value is not null)
from readings r where r.batch_id is not null
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (batch_id, device, tag, minute) do update set
    count = m.count + excluded.count,
    good_count = m.good_count + excluded.good_count,
    sum = m.sum + excluded.sum,
    min = least(m.min, excluded.min),
    max = greatest(m.max, excluded.max);
