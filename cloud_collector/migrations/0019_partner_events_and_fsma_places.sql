-- A partner's events never change our own stock (issue 10): the quantity, shipped and
-- consumed quantities and last place of a lot of ours (one an event of ours, or the ERP,
-- ever named) come from our events only; a partner's events count only for the lots that
-- are the partner's alone (its own products, which it made or received from elsewhere).
-- Events with no trace_events row (a bulk load) are ours.

create function partner_event(event text) returns boolean language sql stable as $$
    select exists (select 1 from trace_events t where t.event_id = event
                   and t.partner_id is not null)
$$;

create or replace function recount_lots(lot_ids bigint[]) returns void language sql as $$
with ids as (
    select l.lot_id, l.supplier is not null or exists (
            select 1 from receipts x where x.lot_id = l.lot_id and not partner_event(x.event_id))
        or exists (select 1 from shipment_lines x
                   where x.lot_id = l.lot_id and not partner_event(x.event_id))
        or exists (select 1 from batch_outputs x
                   where x.lot_id = l.lot_id and not partner_event(x.event_id))
        or exists (select 1 from batch_inputs x
                   where x.lot_id = l.lot_id and not partner_event(x.event_id)) as ours
    from lots l where l.lot_id in (select unnest(lot_ids))
),
made as (
    select o.lot_id, o.uom, sum(o.quantity) as quantity
    from batch_outputs o join ids using (lot_id)
    where o.quantity is not null and not (ids.ours and partner_event(o.event_id))
    group by o.lot_id, o.uom
),
got as (
    select r.lot_id, coalesce(r.uom, '') as uom, sum(r.quantity) as quantity
    from receipts r join ids using (lot_id)
    where r.quantity is not null and not (ids.ours and partner_event(r.event_id))
      and not exists (select 1 from batch_outputs o where o.lot_id = r.lot_id
                      and not (ids.ours and partner_event(o.event_id)))
    group by r.lot_id, coalesce(r.uom, '')
),
source as (
    select lot_id, count(*) as units, sum(quantity) as quantity, min(uom) as uom,
           string_agg(quantity || ' ' || coalesce(nullif(uom, ''), '(no unit)'), ', '
                      order by uom) as parts
    from (select * from made union all select * from got) s group by lot_id
),
counted as (
    select ids.lot_id, ids.ours,
           case when s.units = 1 then s.quantity end as quantity,
           case when s.units = 1 then nullif(s.uom, '') end as uom,
           case when s.units > 1 then 'made or received in several units of measure ('
                || s.parts || '): not added' end as note
    from ids left join source s using (lot_id)
),
gone as (
    select c.*,
           (select sum(x.quantity) from shipment_lines x
            where x.lot_id = c.lot_id and x.uom is not distinct from c.uom
              and not (c.ours and partner_event(x.event_id))) as shipped,
           (select sum(x.quantity) from batch_inputs x
            where x.lot_id = c.lot_id and x.uom = coalesce(c.uom, '')
              and not (c.ours and partner_event(x.event_id))) as consumed,
           (select string_agg(x.quantity || ' ' || coalesce(x.uom, '(no unit)'), ', ')
            from (select quantity, uom, event_id from shipment_lines where lot_id = c.lot_id
                  union all select quantity, nullif(uom, ''), event_id from batch_inputs
                  where lot_id = c.lot_id) x
            where x.quantity is not null and c.quantity is not null
              and x.uom is distinct from c.uom
              and not (c.ours and partner_event(x.event_id))) as elsewhere,
           p.location, p.time as located_at
    from counted c left join lateral (
        select x.location, x.time from lot_locations x
        where x.lot_id = c.lot_id and not (c.ours and partner_event(x.event_id))
        order by x.time desc limit 1) p on true
),
result as (
    select g.lot_id, g.quantity, g.uom, g.shipped, g.consumed,
           nullif(concat_ws('; ', g.note, 'shipped or used in another unit of measure ('
               || g.elsewhere || '): not subtracted'), '') as note,
           g.location, g.located_at
    from gone g
)
update lots l set quantity = r.quantity, uom = r.uom, shipped_quantity = r.shipped,
    consumed_quantity = r.consumed, quantity_note = r.note,
    location = coalesce(r.location, l.location), located_at = coalesce(r.located_at, l.located_at)
from result r where r.lot_id = l.lot_id
  and (l.quantity, l.uom, l.shipped_quantity, l.consumed_quantity, l.quantity_note, l.location,
       l.located_at)
      is distinct from (r.quantity, r.uom, r.shipped, r.consumed, r.note,
                        coalesce(r.location, l.location), coalesce(r.located_at, l.located_at))
$$;

select recount_lots(array(select lot_id from lots));

-- FSMA 204 events the rule words by who the other party is (issue 16): a receipt from a
-- fishing vessel is the first land-based receiving (§ 1.1335); a receipt from a supplier
-- to whom Subpart S does not apply gets its traceability lot code from us (§ 1.1345(b));
-- cooling a harvest record places at a site of ours was done by us, before initial
-- packing (§ 1.1325(b)).
alter table locations add column fishing_vessel boolean not null default false;
alter table locations add column covered_by_rule boolean not null default true;
alter table locations add column our_site boolean not null default false;
-- A fishing trip's harvest dates run from harvest_date to this (§ 1.1335(d)).
alter table harvests add column harvest_end_date date;

-- The rule's product description includes the packaging size and style (§ 1.1310): the
-- ERP's word for each, apart from the name, so a missing one can be named.
alter table products add column pack_size text;
alter table products add column pack_style text;
