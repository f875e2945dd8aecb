"""The one statement behind every FSMA 204 spreadsheet: the Critical Tracking Events of a
set of lots, one row per event per traceability lot (the units of one lot in one event
summed, their ids kept), with what their Key Data Elements need joined in (products,
documents, the ERP's shipment, the traceability lot code source), in the order the
spreadsheet shows them: by event time, then lot. Places come back as their ids: the
locations table is master data, read once per spreadsheet (LOCATIONS), not joined five
times into every row.

Quantities are the batch node's (batch_inputs, batch_outputs) and the receipt and
shipment lines', summed per event and lot in one unit of measure; several units are never
added: the row's quantity is then empty and `mixed` says what was recorded."""

# Parameters: %(lots)s the selected lot ids; %(start)s / %(end)s an optional time range.
# A transformation that used or made a selected lot comes whole (every food used and
# every food made), since its KDEs link the new lot to the lots used.
# A transformation is an initial packing (§ 1.1330, not § 1.1350: the rule's transformation
# excludes initial packing) when a lot it used has a grower's harvest record or it happened
# at a place flagged as initial packing; it makes a row per lot packed per lot harvested,
# the quantity packed on the first of them only (a sum over the rows counts it once).
# The receipt of a lot with a harvest record is no receiving CTE (§ 1.1345(c)): its date
# and quantity are KDEs of the initial packing. Any other receipt keeps its row.

# One event's quantities of one lot, over rows of one unit of measure each (`q` their sum,
# `u` the unit, '' for none, `n` items, `missing` items without a quantity).
_SUMMED = """
case when count({q}) <= 1 then sum({q}) end as quantity,
case when count({q}) = 1 then nullif(min({u}) filter (where {q} is not null), '') end as uom,
case when count({q}) > 1 then string_agg({q} || ' ' || coalesce(nullif({u}, ''), '(no unit)'),
    ', ' order by {u}) end as mixed,
sum({n})::int as items, sum({missing})::int as unquantified"""
_BATCH_SIDE = _SUMMED.format(q="b.quantity", u="b.uom", n="b.items", missing="b.unquantified")

CTE_ROWS = f"""
with sel as (select distinct unnest(%(lots)s::bigint[]) as lot_id),
tx as (  -- two index probes per lot, not one OR that scans every batch line
    select b.event_id from batch_inputs b join sel using (lot_id)
    union
    select b.event_id from batch_outputs b join sel using (lot_id)
),
packing as (
    select tx.event_id from tx join trace_events e using (event_id)
    where exists (
        select 1 from locations p
        where p.location_id = coalesce(e.biz_location, e.read_point) and p.initial_packing
    ) or exists (
        select 1 from batch_inputs b join lots i on i.lot_id = b.lot_id
        join harvests h on h.gtin = i.gtin and h.lot_code = i.lot_code
        where b.event_id = tx.event_id
    )
),
-- The foods an initial packing packs: inputs with a harvest record, or with no supplier's
-- traceability lot code (one that has one was packed before: a food used, not harvested).
harvested as (
    select distinct b.event_id, b.lot_id as input_lot from batch_inputs b
    join packing using (event_id) join lots i on i.lot_id = b.lot_id
    where exists (select 1 from harvests h where h.gtin = i.gtin and h.lot_code = i.lot_code)
       or not exists (
           select 1 from lot_tlc_sources t where t.gtin = i.gtin and t.lot_code = i.lot_code)
),
unpacked as (  -- not food from a fishing vessel: its receipt is a CTE of its own (§ 1.1335)
    select l.lot_id from sel join lots l using (lot_id)
    join harvests h on h.gtin = l.gtin and h.lot_code = l.lot_code
    where not exists (
        select 1 from receipts r join locations s
            on s.location_id = coalesce(r.supplier, l.supplier) and s.fishing_vessel
        where r.lot_id = l.lot_id)
),
-- Receipt and shipment lines per event, lot and unit of measure, as the batch lines are.
receipt_lines as (
    select r.event_id, r.lot_id, coalesce(r.uom, '') as uom, sum(r.quantity) as quantity,
           count(*) as items, count(*) - count(r.quantity) as unquantified,
           string_agg(r.epc, ' ' order by r.position) as units, min(r.time) as time,
           min(r.position) as position, min(r.location) as location,
           min(r.supplier) as supplier, min(r.document) as document
    from receipts r join sel using (lot_id)
    where r.lot_id not in (select lot_id from unpacked)
    group by r.event_id, r.lot_id, coalesce(r.uom, '')
),
shipment_rows as (
    select s.event_id, s.lot_id, coalesce(s.uom, '') as uom, sum(s.quantity) as quantity,
           count(*) as items, count(*) - count(s.quantity) as unquantified,
           string_agg(s.epc, ' ' order by s.position) as units, min(s.time) as time,
           min(s.position) as position, min(s.location) as location,
           min(s.shipment) as shipment
    from shipment_lines s join sel using (lot_id)
    group by s.event_id, s.lot_id, coalesce(s.uom, '')
),
events as (
    select 1 as kind, min(r.time) as time, r.event_id, min(r.position) as position, r.lot_id,
           {_SUMMED.format(q="r.quantity", u="r.uom", n="r.items", missing="r.unquantified")},
           string_agg(r.units, ' ' order by r.position) as units,
           min(r.location) as place, coalesce(min(r.supplier), min(l.supplier)) as source,
           min(r.document) as document, null::text as shipment, null::text as new_lots,
           null::text as batch, null::bigint as used_lot, null::timestamptz as received,
           null::float8 as quantity_received, null::text as uom_received, true as first_of_lot,
           null::text as recipient
    from receipt_lines r join lots l using (lot_id)
    group by r.event_id, r.lot_id
    union all
    select 2, min(s.time), s.event_id, min(s.position), s.lot_id,
           {_SUMMED.format(q="s.quantity", u="s.uom", n="s.items", missing="s.unquantified")},
           string_agg(s.units, ' ' order by s.position), min(s.location), null, null,
           min(s.shipment), null, null, null, null, null, null, true, null
    from shipment_rows s group by s.event_id, s.lot_id
    union all
    select 3, e.event_time, b.event_id, 0, b.lot_id, {_BATCH_SIDE}, null,
           coalesce(e.biz_location, e.read_point), null, null, null,
           (select string_agg(distinct o.lot_code, '; ') from batch_outputs x
            join lots o on o.lot_id = x.lot_id where x.event_id = b.event_id),
           e.batch_id, null, null, null, null, true, null
    from batch_inputs b join tx using (event_id) join trace_events e using (event_id)
    where (b.event_id, b.lot_id) not in (select event_id, input_lot from harvested)
    group by b.event_id, b.lot_id, e.event_time, e.biz_location, e.read_point, e.batch_id
    union all
    select 4, e.event_time, b.event_id, 0, b.lot_id, {_BATCH_SIDE}, null,
           coalesce(e.biz_location, e.read_point), null, null, null, null, e.batch_id,
           null, null, null, null, true, null
    from batch_outputs b join tx using (event_id) join trace_events e using (event_id)
    where b.event_id not in (select event_id from harvested)
    group by b.event_id, b.lot_id, e.event_time, e.biz_location, e.read_point, e.batch_id
    union all
    select 5, e.event_time, p.event_id, 0, p.lot_id,
           case when p.first then p.quantity end, p.uom, case when p.first then p.mixed end,
           p.items, p.unquantified, null, coalesce(e.biz_location, e.read_point), null, null,
           null, null, e.batch_id, p.input_lot, got.received, got.quantity, got.uom, p.first,
           null
    from (
        select o.*, h.input_lot,
               row_number() over (partition by o.event_id, o.lot_id order by i.lot_code) = 1
                   as first
        from (select b.event_id, b.lot_id, {_BATCH_SIDE} from batch_outputs b
              where b.event_id in (select event_id from harvested)
              group by b.event_id, b.lot_id) o
        join harvested h using (event_id) join lots i on i.lot_id = h.input_lot
    ) p join trace_events e using (event_id)
    left join lateral (  -- the harvested lot's receipt: one quantity when one unit
        select min(r.time) as received,
               case when count(distinct r.uom) <= 1 then sum(r.quantity) end as quantity,
               case when count(distinct r.uom) = 1 then min(r.uom) end as uom
        from receipts r where r.lot_id = p.input_lot having count(*) > 0
    ) got on true
    union all
    -- Cooling before initial packing done at a site of ours (§ 1.1325(b)): a row per lot
    -- the grower's record says we cooled, dated that day, its recipient the initial packer.
    select 8, (h.cooling_date + time '12:00') at time zone 'UTC', null, 0, l.lot_id,
           got.quantity, got.uom, null, null, null, null, h.cooling_location, null,
           got.document, null, null, packer.batch, l.lot_id, null, null, null, true,
           packer.place
    from sel join lots l using (lot_id)
    join harvests h on h.gtin = l.gtin and h.lot_code = l.lot_code
    join locations c on c.location_id = h.cooling_location and c.our_site
    left join lateral (
        select case when count(distinct r.uom) <= 1 then sum(r.quantity) end as quantity,
               case when count(distinct r.uom) = 1 then min(r.uom) end as uom,
               min(r.document) as document
        from receipts r where r.lot_id = l.lot_id
    ) got on true
    left join lateral (
        select coalesce(e.biz_location, e.read_point) as place, e.batch_id as batch
        from batch_inputs b join trace_events e using (event_id)
        where b.lot_id = l.lot_id order by e.event_time limit 1
    ) packer on true
    where h.cooling_date is not null
)
select case when ev.kind = 1 and src.fishing_vessel then 7
            when ev.kind = 1 and not src.covered_by_rule then 6 else ev.kind end as kind,
       ev.time, ev.event_id, ev.lot_id, ev.quantity, ev.uom, ev.mixed, ev.items,
       ev.unquantified, ev.units, ev.first_of_lot, ev.place, ev.source, ev.document,
       ev.shipment, ev.new_lots, ev.batch, l.gtin, l.lot_code, l.supplier_lot,
       l.batch_id as made_by, p.name as product, p.pack_size, p.pack_style,
       m.order_id, m.customer_id, m.ship_to, c.name as customer, c.address as customer_address,
       t.location_id as tlc_location_id, t.reference as tlc_reference, made.place as made_at,
       b.edge_id as batch_edge,
       u.lot_code as used_lot_code, ev.recipient, h.harvest_end_date, ev.received,
       ev.quantity_received, ev.uom_received, h.commodity,
       h.variety, h.farm, h.growing_area, h.harvester, h.harvest_date, h.cooling_location,
       h.cooling_date,
       (select jsonb_agg(jsonb_build_array(d.type, d.id) order by d.type, d.id)
        from event_documents d where d.event_id = ev.event_id) as documents
from events ev join lots l using (lot_id)
left join products p using (gtin)
left join shipments m on m.shipment = ev.shipment
left join customers c on c.customer_id = m.customer_id
left join lot_tlc_sources t on t.gtin = l.gtin and t.lot_code = l.lot_code
left join batches b on b.batch_id = ev.batch
left join locations src on ev.kind = 1 and src.location_id = ev.source
left join lots u on u.lot_id = coalesce(ev.used_lot, case when src.fishing_vessel then l.lot_id end)
left join harvests h on h.gtin = u.gtin and h.lot_code = u.lot_code
left join lateral (
    select coalesce(x.biz_location, x.read_point) as place from trace_events x
    where x.batch_id = l.batch_id and x.event_type = 'TransformationEvent'
    order by x.event_time desc limit 1
) made on true
where (%(start)s::timestamptz is null or ev.time >= %(start)s)
  and (%(end)s::timestamptz is null or ev.time < %(end)s)
order by ev.time, l.lot_code, 1, ev.event_id, ev.position, u.lot_code
"""

LOCATIONS = "select location_id, name, address, phone, gln, tlc_source_reference from locations"

# The lots of one product (for a request by product and date range).
PRODUCT_LOTS = "select lot_id from lots where gtin = %s"
PRODUCT_NAME = "select name from products where gtin = %s"
