-- A shipment of a held lot raises its alert whichever way the event arrived. An edge flags
-- the event `held_lot` at the door (migration 0027); an event captured through
-- /epcis/capture (a partner, a WMS, our own ERP) carries no such flag, so every captured
-- shipping event is checked here against the holds, in the transaction that stores it, and
-- flagged as an edge would have flagged it. A captured shipping event naming no held lot
-- costs one look-up of its items and records nothing.
create or replace function alert_held_lot_at_door() returns trigger language plpgsql as $$
declare
    held jsonb;
begin
    held := coalesce((
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
    ), '[]'::jsonb);
    if not ('held_lot' = any(new.flags)) then
        if held = '[]'::jsonb then
            return null;  -- a captured shipment of nothing on hold
        end if;
        update trace_events set flags = array_append(flags, 'held_lot')
        where event_id = new.event_id;
    end if;
    insert into alerts (kind, event_id, event_time, source_edge, read_point, biz_location,
                        biz_step, documents, lots)
    values ('held_lot_at_door', new.event_id, new.event_time, new.source_edge,
            new.read_point, new.biz_location, new.biz_step, new.biz_transactions, held)
    on conflict (kind, event_id) where event_id is not null do nothing;
    return null;
end
$$;

drop trigger trace_events_held_lot_alert on trace_events;
create constraint trigger trace_events_held_lot_alert
    after insert on trace_events
    deferrable initially deferred
    for each row
    when ('held_lot' = any(new.flags)
          or (new.body_format = 'epcis' and new.biz_step = 'shipping'))
    execute function alert_held_lot_at_door();

-- A hold's record lists the alerts its lots raised (cloud_collector/holds.py record()).
create index alerts_lots on alerts using gin (lots jsonb_path_ops);
