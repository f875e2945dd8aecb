-- Quantities by construction (issue 16). A batch is the node between the lots it used and
-- the lots it made: per transformation event, how much of each input lot it consumed (the
-- sum of its consumed items) and how much of each output lot it produced (the sum of its
-- output items), one row per unit of measure: quantities in different units are never
-- added. lot_links stays the trace walk's edge table (input lot -> output lot), derived from
-- these two in the database, and carries no quantity: a quantity copied onto every
-- input x output pair counted an input once per output.

create table batch_inputs (
    event_id     text not null,
    batch_id     text not null,
    lot_id       bigint not null references lots,
    uom          text not null default '',  -- '': the items named no unit of measure
    quantity     double precision,          -- the items' sum; null: none of them gave one
    items        integer not null,          -- how many items (units, lot lines) of the lot
    unquantified integer not null default 0,  -- of them, how many gave no quantity
    primary key (event_id, lot_id, uom)
);
create index batch_inputs_lot on batch_inputs (lot_id);
create index batch_inputs_batch on batch_inputs (batch_id);

create table batch_outputs (like batch_inputs including defaults including constraints);
alter table batch_outputs add primary key (event_id, lot_id, uom);
alter table batch_outputs add foreign key (lot_id) references lots;
create index batch_outputs_lot on batch_outputs (lot_id);
create index batch_outputs_batch on batch_outputs (batch_id);

-- A lot's quantity is the sum of what made or received it; what it lost is the sum of its
-- shipment lines and of what batches consumed of it (both in the lot's unit); why a
-- quantity is missing or a line was not subtracted (several units of measure) is said here.
alter table lots add column consumed_quantity double precision;  -- null: none consumed
alter table lots add column quantity_note text;

-- A consumed pallet named by its tag alone holds what its receipt said it held.
create index receipts_unit on receipts (epc) where epc is not null;

-- Existing data: the items of every stored TransformationEvent, resolved to lots as the
-- projection resolves them (an explicit lot; else the unit's lot; else the unit's
-- placeholder lot; outputs without a lot hold the event's first output lot or the batch's
-- own lot).
create temp table migrated_items on commit drop as
select i.event_id, e.batch_id, i.role, i.position,
       case when i.quantity is null then held.uom else i.uom end as uom,
       coalesce(i.quantity, held.quantity) as quantity,
       coalesce(
           (select l.lot_id from lots l where i.lot is not null
                and (i.gtin is not null or i.epc_class is not null)
                and l.gtin = coalesce(i.gtin, '') and l.lot_code = i.lot),
           (select u.lot_id from units u where u.epc = k.unit),
           (select l.lot_id from lots l where l.gtin = '' and l.lot_code = 'unit:' || k.unit)
       ) as lot_id
from event_items i join trace_events e using (event_id)
cross join lateral (select case
    when i.sscc is not null then 'sscc:' || i.sscc
    when i.gtin is not null and i.serial is not null then 'sgtin:' || i.gtin || '.' || i.serial
    else i.epc end as unit) k
left join lateral (
    select r.quantity, r.uom from receipts r
    where i.role = 'input' and i.quantity is null and r.epc = k.unit and r.quantity is not null
    order by r.time desc limit 1) held on true
where e.event_type = 'TransformationEvent' and i.role in ('input', 'output')
  and e.batch_id is not null;

update migrated_items m set lot_id = coalesce(
    (select f.lot_id from migrated_items f
     where f.event_id = m.event_id and f.role = 'output' and f.lot_id is not null
     order by f.position limit 1),
    (select l.lot_id from lots l where l.gtin = '' and l.lot_code = m.batch_id))
where m.role = 'output' and m.lot_id is null;

insert into batch_inputs (event_id, batch_id, lot_id, uom, quantity, items, unquantified)
select event_id, batch_id, lot_id, coalesce(uom, ''), sum(quantity), count(*),
       count(*) - count(quantity)
from migrated_items where role = 'input' and lot_id is not null
group by event_id, batch_id, lot_id, coalesce(uom, '');

insert into batch_outputs (event_id, batch_id, lot_id, uom, quantity, items, unquantified)
select event_id, batch_id, lot_id, coalesce(uom, ''), sum(quantity), count(*),
       count(*) - count(quantity)
from migrated_items where role = 'output' and lot_id is not null
group by event_id, batch_id, lot_id, coalesce(uom, '');

-- Links loaded without their events (a bulk load): the best their rows say, each input
-- lot's quantity once per event (not once per output), each output lot's as it was kept.
insert into batch_inputs (event_id, batch_id, lot_id, uom, quantity, items, unquantified)
select event_id, min(batch_id), input_lot, coalesce(min(uom), ''), max(quantity), 1,
       case when max(quantity) is null then 1 else 0 end
from lot_links k
where not exists (select 1 from batch_inputs b where b.event_id = k.event_id)
group by event_id, input_lot;

insert into batch_outputs (event_id, batch_id, lot_id, uom, quantity, items, unquantified)
select k.event_id, min(k.batch_id), k.output_lot, coalesce(min(l.uom), ''), min(l.quantity), 1,
       case when min(l.quantity) is null then 1 else 0 end
from lot_links k join lots l on l.lot_id = k.output_lot
where not exists (select 1 from batch_outputs b where b.event_id = k.event_id)
group by k.event_id, k.output_lot;

alter table lot_links drop column quantity, drop column uom;

-- Every listed lot's quantity, what left it, and why a quantity is missing or a line was
-- not subtracted, from its history: what made it (its batch outputs) or else what received
-- it (its receipts), in one unit of measure or not added at all. The projection calls it
-- for the lots an event touched (cloud_collector/genealogy.py), so a late event, a unit
-- learning its lot or a resend leaves every lot as its whole history says.
create function recount_lots(lot_ids bigint[]) returns void language sql as $$
with ids as (select distinct unnest(lot_ids) as lot_id),
made as (
    select o.lot_id, o.uom, sum(o.quantity) as quantity
    from batch_outputs o join ids using (lot_id) where o.quantity is not null
    group by o.lot_id, o.uom
),
got as (
    select r.lot_id, coalesce(r.uom, '') as uom, sum(r.quantity) as quantity
    from receipts r join ids using (lot_id)
    where r.quantity is not null
      and not exists (select 1 from batch_outputs o where o.lot_id = r.lot_id)
    group by r.lot_id, coalesce(r.uom, '')
),
source as (
    select lot_id, count(*) as units, sum(quantity) as quantity, min(uom) as uom,
           string_agg(quantity || ' ' || coalesce(nullif(uom, ''), '(no unit)'), ', '
                      order by uom) as parts
    from (select * from made union all select * from got) s group by lot_id
),
counted as (
    select ids.lot_id,
           case when s.units = 1 then s.quantity end as quantity,
           case when s.units = 1 then nullif(s.uom, '') end as uom,
           case when s.units > 1 then 'made or received in several units of measure ('
                || s.parts || '): not added' end as note
    from ids left join source s using (lot_id)
),
gone as (
    select c.*,
           (select sum(x.quantity) from shipment_lines x
            where x.lot_id = c.lot_id and x.uom is not distinct from c.uom) as shipped,
           (select sum(x.quantity) from batch_inputs x
            where x.lot_id = c.lot_id and x.uom = coalesce(c.uom, '')) as consumed,
           (select string_agg(x.quantity || ' ' || coalesce(x.uom, '(no unit)'), ', ')
            from (select quantity, uom from shipment_lines where lot_id = c.lot_id
                  union all select quantity, nullif(uom, '') from batch_inputs
                  where lot_id = c.lot_id) x
            where x.quantity is not null and c.quantity is not null
              and x.uom is distinct from c.uom) as elsewhere
    from counted c
),
result as (
    select g.lot_id, g.quantity, g.uom, g.shipped, g.consumed,
           nullif(concat_ws('; ', g.note, 'shipped or used in another unit of measure ('
               || g.elsewhere || '): not subtracted'), '') as note
    from gone g
)
update lots l set quantity = r.quantity, uom = r.uom, shipped_quantity = r.shipped,
    consumed_quantity = r.consumed, quantity_note = r.note
from result r where r.lot_id = l.lot_id
  and (l.quantity, l.uom, l.shipped_quantity, l.consumed_quantity, l.quantity_note)
      is distinct from (r.quantity, r.uom, r.shipped, r.consumed, r.note)
$$;

select recount_lots(array(select lot_id from lots));

insert into lot_links (input_lot, output_lot, batch_id, event_id)
select distinct i.lot_id, o.lot_id, i.batch_id, i.event_id
from batch_inputs i join batch_outputs o using (event_id)
on conflict do nothing;
