"""The one statement behind every FSMA 204 spreadsheet: the Critical Tracking Events of a
set of lots, one row per event per lot line, with what their Key Data Elements need joined
in (products, documents, the ERP's shipment, the traceability lot code source), in the
order the spreadsheet shows them: by event time, then lot. Places come back as their ids:
the locations table is master data, read once per spreadsheet (LOCATIONS), not joined
five times into every row."""

# Parameters: %(lots)s the selected lot ids; %(start)s / %(end)s an optional time range.
# A transformation that used or made a selected lot comes whole (every food used and
# every food made), since its KDEs link the new lot to the lots used.
CTE_ROWS = """
with sel as (select distinct unnest(%(lots)s::bigint[]) as lot_id),
tx as (  -- two index probes per lot, not one OR that scans every link
    select k.event_id from lot_links k join sel on sel.lot_id = k.input_lot
    union
    select k.event_id from lot_links k join sel on sel.lot_id = k.output_lot
),
events as (
    select 1 as kind, r.time, r.event_id, r.position, r.lot_id, r.quantity, r.uom,
           r.location as place, coalesce(r.supplier, l.supplier) as source,
           r.document, null::text as shipment, null::text as new_lots, null::text as batch
    from receipts r join sel using (lot_id) join lots l using (lot_id)
    union all
    select 2, s.time, s.event_id, s.position, s.lot_id, s.quantity, s.uom,
           s.location, null, null, s.shipment, null, null
    from shipment_lines s join sel using (lot_id)
    union all
    select 3, e.event_time, k.event_id, 0, k.input_lot, max(k.quantity),
           max(k.uom), coalesce(e.biz_location, e.read_point), null, null, null,
           string_agg(distinct o.lot_code, '; '), e.batch_id
    from lot_links k join tx using (event_id) join trace_events e using (event_id)
    join lots o on o.lot_id = k.output_lot
    group by k.event_id, k.input_lot, e.event_time, e.biz_location, e.read_point, e.batch_id
    union all
    select distinct 4, e.event_time, k.event_id, 0, k.output_lot, o.quantity, o.uom,
           coalesce(e.biz_location, e.read_point), null, null, null, null, e.batch_id
    from lot_links k join tx using (event_id) join trace_events e using (event_id)
    join lots o on o.lot_id = k.output_lot
)
select ev.kind, ev.time, ev.event_id, ev.lot_id, ev.quantity, ev.uom, ev.place, ev.source,
       ev.document, ev.shipment, ev.new_lots, ev.batch,
       l.gtin, l.lot_code, l.batch_id as made_by, p.name as product,
       m.order_id, m.customer_id, m.ship_to, c.name as customer, c.address as customer_address,
       t.location_id as tlc_location_id, t.reference as tlc_reference, made.place as made_at,
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
order by ev.time, l.lot_code, ev.kind, ev.event_id, ev.position
"""

LOCATIONS = "select location_id, name, address, phone, gln, tlc_source_reference from locations"

# The lots of one product (for a request by product and date range).
PRODUCT_LOTS = "select lot_id from lots where gtin = %s"
PRODUCT_NAME = "select name from products where gtin = %s"
