"""The one statement behind every FSMA 204 spreadsheet: the Critical Tracking Events of a
set of lots, one row per event per lot line, with what their Key Data Elements need joined
in (products, documents, the ERP's shipment, the traceability lot code source), in the
order the spreadsheet shows them: by event time, then lot. Places come back as their ids:
the locations table is master data, read once per spreadsheet (LOCATIONS), not joined
five times into every row."""

# Parameters: %(lots)s the selected lot ids; %(start)s / %(end)s an optional time range.
# A transformation that used or made a selected lot comes whole (every food used and
# every food made), since its KDEs link the new lot to the lots used.
# A transformation is an initial packing (§ 1.1330, not § 1.1350: the rule's transformation
# excludes initial packing) when a lot it used has a grower's harvest record or it happened
# at a place flagged as initial packing; it makes a row per lot packed per lot harvested.
# The receipt of a lot not yet packed (a harvest record, or used by an initial packing) is
# no receiving CTE (§ 1.1345(c)): its date and quantity are KDEs of the initial packing.
CTE_ROWS = """
with sel as (select distinct unnest(%(lots)s::bigint[]) as lot_id),
tx as (  -- two index probes per lot, not one OR that scans every link
    select k.event_id from lot_links k join sel on sel.lot_id = k.input_lot
    union
    select k.event_id from lot_links k join sel on sel.lot_id = k.output_lot
),
packing as (
    select tx.event_id from tx join trace_events e using (event_id)
    where exists (
        select 1 from locations p
        where p.location_id = coalesce(e.biz_location, e.read_point) and p.initial_packing
    ) or exists (
        select 1 from lot_links k join lots i on i.lot_id = k.input_lot
        join harvests h on h.gtin = i.gtin and h.lot_code = i.lot_code
        where k.event_id = tx.event_id
    )
),
-- The foods an initial packing packs: inputs with a harvest record, or with no supplier's
-- traceability lot code (one that has one was packed before: a food used, not harvested).
harvested as (
    select k.event_id, k.input_lot from lot_links k join packing using (event_id)
    join lots i on i.lot_id = k.input_lot
    where exists (select 1 from harvests h where h.gtin = i.gtin and h.lot_code = i.lot_code)
       or not exists (
           select 1 from lot_tlc_sources t where t.gtin = i.gtin and t.lot_code = i.lot_code)
),
unpacked as (
    select k.input_lot as lot_id from harvested k join sel on sel.lot_id = k.input_lot
    union
    select l.lot_id from sel join lots l using (lot_id)
    join harvests h on h.gtin = l.gtin and h.lot_code = l.lot_code
),
events as (
    select 1 as kind, r.time, r.event_id, r.position, r.lot_id, r.quantity, r.uom,
           r.location as place, coalesce(r.supplier, l.supplier) as source,
           r.document, null::text as shipment, null::text as new_lots, null::text as batch,
           null::text as used_lot_code, null::timestamptz as received,
           null::float8 as quantity_received, null::text as uom_received,
           null::text as commodity, null::text as variety, null::text as farm,
           null::text as growing_area, null::text as harvester, null::date as harvest_date,
           null::text as cooling_location, null::date as cooling_date
    from receipts r join sel using (lot_id) join lots l using (lot_id)
    where r.lot_id not in (select lot_id from unpacked)
    union all
    select 2, s.time, s.event_id, s.position, s.lot_id, s.quantity, s.uom,
           s.location, null, null, s.shipment, null, null,
           null, null, null, null, null, null, null, null, null, null, null, null
    from shipment_lines s join sel using (lot_id)
    union all
    select 3, e.event_time, k.event_id, 0, k.input_lot, max(k.quantity),
           max(k.uom), coalesce(e.biz_location, e.read_point), null, null, null,
           string_agg(distinct o.lot_code, '; '), e.batch_id,
           null, null, null, null, null, null, null, null, null, null, null, null
    from lot_links k join tx using (event_id) join trace_events e using (event_id)
    join lots o on o.lot_id = k.output_lot
    where (k.event_id, k.input_lot) not in (select event_id, input_lot from harvested)
    group by k.event_id, k.input_lot, e.event_time, e.biz_location, e.read_point, e.batch_id
    union all
    select distinct 4, e.event_time, k.event_id, 0, k.output_lot, o.quantity, o.uom,
           coalesce(e.biz_location, e.read_point), null, null, null, null, e.batch_id,
           null::text, null::timestamptz, null::float8, null::text, null::text, null::text,
           null::text, null::text, null::text, null::date, null::text, null::date
    from lot_links k join tx using (event_id) join trace_events e using (event_id)
    join lots o on o.lot_id = k.output_lot
    where k.event_id not in (select event_id from harvested)
    union all
    select 5, e.event_time, k.event_id, 0, k.output_lot, o.quantity, o.uom,
           coalesce(e.biz_location, e.read_point), null, null, null, null, e.batch_id,
           i.lot_code, got.received, got.quantity, got.uom, h.commodity, h.variety, h.farm,
           h.growing_area, h.harvester, h.harvest_date, h.cooling_location, h.cooling_date
    from lot_links k join harvested using (event_id, input_lot) join trace_events e using (event_id)
    join lots o on o.lot_id = k.output_lot join lots i on i.lot_id = k.input_lot
    left join harvests h on h.gtin = i.gtin and h.lot_code = i.lot_code
    left join lateral (  -- the harvested lot's receipt: one quantity when one unit
        select min(r.time) as received,
               case when count(distinct r.uom) <= 1 then sum(r.quantity) end as quantity,
               case when count(distinct r.uom) = 1 then min(r.uom) end as uom
        from receipts r where r.lot_id = k.input_lot having count(*) > 0
    ) got on true
)
select ev.kind, ev.time, ev.event_id, ev.lot_id, ev.quantity, ev.uom, ev.place, ev.source,
       ev.document, ev.shipment, ev.new_lots, ev.batch,
       l.gtin, l.lot_code, l.batch_id as made_by, p.name as product,
       m.order_id, m.customer_id, m.ship_to, c.name as customer, c.address as customer_address,
       t.location_id as tlc_location_id, t.reference as tlc_reference, made.place as made_at,
       ev.used_lot_code, ev.received, ev.quantity_received, ev.uom_received, ev.commodity,
       ev.variety, ev.farm, ev.growing_area, ev.harvester, ev.harvest_date,
       ev.cooling_location, ev.cooling_date,
       (select jsonb_agg(jsonb_build_array(d.type, d.id) order by d.type, d.id)
        from event_documents d where d.event_id = ev.event_id) as documents
from events ev join lots l using (lot_id)
left join products p using (gtin)
left join shipments m on m.shipment = ev.shipment
left join customers c on c.customer_id = m.customer_id
left join lot_tlc_sources t on t.gtin = l.gtin and t.lot_code = l.lot_code
left join lateral (
    select coalesce(x.biz_location, x.read_point) as place from trace_events x
    where x.batch_id = l.batch_id and x.event_type = 'TransformationEvent'
    order by x.event_time desc limit 1
) made on true
where (%(start)s::timestamptz is null or ev.time >= %(start)s)
  and (%(end)s::timestamptz is null or ev.time < %(end)s)
order by ev.time, l.lot_code, ev.kind, ev.event_id, ev.position, ev.used_lot_code
"""

LOCATIONS = "select location_id, name, address, phone, gln, tlc_source_reference from locations"

# The lots of one product (for a request by product and date range).
PRODUCT_LOTS = "select lot_id from lots where gtin = %s"
PRODUCT_NAME = "select name from products where gtin = %s"
