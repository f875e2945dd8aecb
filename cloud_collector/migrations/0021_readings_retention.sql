-- Each round of readings retention that dropped chunks (cloud_collector/retention.py): what
-- went and when, so that an answer reaching into that time can say its readings are gone
-- (recall by condition, a batch's series) instead of answering "nothing found", and an
-- auditor can see what was removed, by whom, under which setting.
create table readings_retention (
    id             bigint generated always as identity primary key,
    ran_at         timestamptz not null default now(),
    -- Every reading taken before this instant is gone (the end of the newest chunk dropped).
    dropped_before timestamptz not null,
    chunks         integer not null check (chunks > 0),
    keep_days      double precision not null,
    collector      text not null
);
create index readings_retention_dropped_before on readings_retention (dropped_before);
