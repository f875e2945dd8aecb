-- Holds on lots (cloud_collector/holds.py; /api/v1/lots/{lot}/hold, /release, /api/v1/holds)
-- and the alerts a held lot read at a shipping door raises (/api/v1/alerts).

-- The quality team puts lots on hold and releases them: a role of its own, so that neither
-- a reader nor an ERP integration can stop or free goods.
alter table api_credentials drop constraint api_credentials_role_check;
alter table api_credentials add constraint api_credentials_role_check
    check (role in ('reader', 'provisioner', 'importer', 'admin', 'partner', 'quality'));

-- Every hold ever put, released ones kept for the record: who held and released, when, why.
-- At most one hold in force per lot (the partial unique index): holding a held lot is a
-- conflict the API names, never a second row that one release would leave behind.
create table lot_holds (
    hold_id        bigint generated always as identity primary key,
    lot_id         bigint not null references lots,
    reason         text not null check (length(reason) between 1 and 2000),
    held_by        text not null,
    held_at        timestamptz not null default now(),
    -- The hold this one came with when a lot was held "with everything downstream": its
    -- descendants' holds name the hold of the lot the person named. Null: named itself.
    origin_hold    bigint references lot_holds,
    released_at    timestamptz,
    released_by    text,
    release_reason text,
    check ((released_at is null) = (released_by is null)),
    check (released_at is null or released_at >= held_at)
);
create unique index lot_holds_in_force on lot_holds (lot_id) where released_at is null;
create index lot_holds_lot on lot_holds (lot_id, held_at);
create index lot_holds_origin on lot_holds (origin_hold) where origin_hold is not null;

-- What needs someone's attention, recorded where it happened. The delivery of alerts
-- (webhooks, e-mail) is a later part; for now they are recorded and listed.
create table alerts (
    alert_id     bigint generated always as identity primary key,
    kind         text not null check (kind in ('held_lot_at_door')),
    raised_at    timestamptz not null default now(),
    event_id     text references trace_events on delete cascade,
    event_time   timestamptz,
    source_edge  text,
    read_point   text,
    biz_location text,
    biz_step     text,
    documents    jsonb not null default '[]',
    -- The event's lots the collector knows to be held at the event's time or now: lot_id,
    -- gtin, lot_code, hold_id, reason, held_at, held_by.
    lots         jsonb not null default '[]'
);
create unique index alerts_event on alerts (kind, event_id) where event_id is not null;
create index alerts_raised on alerts (raised_at);

-- An event an edge flagged `held_lot` raises its alert in the transaction that stores it,
-- whichever path stored it (the MQTT ingest, a resend, a replay): a constraint trigger
-- deferred to the commit, so the event's items and the units the genealogy projected from
-- them are there to name the held lots. Only flagged events pay for it (WHEN).
create function alert_held_lot_at_door() returns trigger language plpgsql as $$
begin
    insert into alerts (kind, event_id, event_time, source_edge, read_point, biz_location,
                        biz_step, documents, lots)
    select 'held_lot_at_door', new.event_id, new.event_time, new.source_edge, new.read_point,
           new.biz_location, new.biz_step, new.biz_transactions,
           coalesce((
               select jsonb_agg(jsonb_build_object(
                          'lot_id', l.lot_id, 'gtin', l.gtin, 'lot_code', l.lot_code,
                          'hold_id', h.hold_id, 'reason', h.reason, 'held_at', h.held_at,
                          'held_by', h.held_by) order by l.lot_id)
               from lots l
               join lot_holds h on h.hold_id = (
                   select h2.hold_id from lot_holds h2
                   where h2.lot_id = l.lot_id
                     and (h2.released_at is null
                          or (h2.held_at <= new.event_time and h2.released_at > new.event_time))
                   order by h2.released_at nulls first limit 1)
               where l.lot_id in (
                   select l2.lot_id from event_items i
                   join lots l2 on l2.lot_code = i.lot and l2.gtin = coalesce(i.gtin, '')
                   where i.event_id = new.event_id and i.lot is not null
                   union
                   select u.lot_id from event_items i
                   join units u on u.epc = i.epc or (i.sscc is not null and u.sscc = i.sscc)
                   where i.event_id = new.event_id and u.lot_id is not null)
           ), '[]'::jsonb)
    on conflict (kind, event_id) where event_id is not null do nothing;
    return null;
end
$$;

create constraint trigger trace_events_held_lot_alert
    after insert on trace_events
    deferrable initially deferred
    for each row when ('held_lot' = any(new.flags))
    execute function alert_held_lot_at_door();
