-- Warehouse places and moves (issue 15; cloud_collector/places.py, cloud_collector/stock.py):
-- the place hierarchy (site > warehouse > zone > rack > bin) on the locations the ERP and
-- EPCIS master data already describe, each lot's quantity per place kept at ingest from a
-- ledger of moves and counts, a lot's expiry for FEFO, and the alert of a pick that broke
-- FIFO/FEFO.

-- A place is a row of locations: what kind of place it is, which place it is part of, and
-- the SGLN events may name it by when its id is the ERP's own code. The parent is not a
-- foreign key: the ERP may send a bin before its rack, and master data names children of
-- places it describes later.
alter table locations add column kind text
    check (kind in ('site', 'warehouse', 'zone', 'rack', 'bin'));
alter table locations add column parent_id text;
alter table locations add column sgln text;
create index locations_parent on locations (parent_id) where parent_id is not null;
create unique index locations_sgln on locations (sgln) where sgln is not null;

-- FEFO: the lot's expiry date (GS1 AI 17 on a label, an EPCIS event's ILMD
-- itemExpirationDate / bestBeforeDate): the first one said is kept.
alter table lots add column expiry date;

-- A serialized unit's current place and since when (the place of its latest move); null
-- with placed_at set: it left (shipped, consumed).
alter table units add column place text;
alter table units add column placed_at timestamptz;

-- Every quantity of a lot that moved, one row per event item and place it was taken from:
-- received or made (from_place null) to a place; moved (put away, moved, picked) from a
-- place to another; shipped or consumed (to_place null) from a place. from_place is what
-- the collector found the goods at when it stored the event (stock.py says how); '' is
-- "picked, not put anywhere". quantity null: the item gave none (counted nowhere).
create table stock_moves (
    event_id   text not null,
    role       text not null,  -- as event_items: observed, input, output
    position   integer not null,
    part       integer not null default 0,  -- a lot line taken from several places
    lot_id     bigint not null references lots,
    unit       text,
    from_place text,
    to_place   text,
    quantity   double precision,
    uom        text not null default '',
    time       timestamptz not null,
    biz_step   text not null,
    note       text,  -- why it was taken from no known place, ...
    primary key (event_id, role, position, part)
);
create index stock_moves_lot on stock_moves (lot_id, time);

-- A stocktake or cycle count of a lot at a place: what was counted, what the collector
-- expected there when it stored the count, and the difference. The count sets the place's
-- quantity; moves after it add to or take from it.
create table stock_counts (
    event_id   text not null,
    lot_id     bigint not null references lots,
    place      text not null,
    uom        text not null default '',
    counted    double precision not null,
    expected   double precision not null,
    difference double precision not null,
    time       timestamptz not null,
    biz_step   text not null,
    primary key (event_id, lot_id, place, uom)
);
create index stock_counts_lot on stock_counts (lot_id, place, time);

-- Each lot's quantity per place now, recounted from the ledger after every event that
-- touches the lot (recount_places): the last count at the place plus what arrived minus
-- what left after it. Negative: more left than the records brought (a missed event).
create table place_stock (
    lot_id   bigint not null references lots,
    place    text not null,
    uom      text not null default '',
    quantity double precision not null,
    since    timestamptz not null,  -- when the stock counted here first came (or was counted)
    primary key (lot_id, place, uom)
);
create index place_stock_place on place_stock (place, lot_id);

create function recount_places(lot_ids bigint[]) returns void language sql as $$
delete from place_stock where lot_id = any(lot_ids);
with moves as (
    select lot_id, to_place as place, uom, quantity, time from stock_moves
    where lot_id = any(lot_ids) and to_place is not null and quantity is not null
    union all
    select lot_id, from_place, uom, -quantity, time from stock_moves
    where lot_id = any(lot_ids) and from_place is not null and quantity is not null
),
last_count as (
    select distinct on (lot_id, place, uom) lot_id, place, uom, counted, time
    from stock_counts where lot_id = any(lot_ids)
    order by lot_id, place, uom, time desc, event_id desc
),
places as (
    select lot_id, place, uom from moves union select lot_id, place, uom from last_count
),
counted as (
    select p.lot_id, p.place, p.uom,
           coalesce(c.counted, 0) + coalesce(sum(m.quantity), 0) as quantity,
           coalesce(c.time, min(m.time) filter (where m.quantity > 0), min(m.time)) as since
    from places p
    left join last_count c using (lot_id, place, uom)
    left join moves m on m.lot_id = p.lot_id and m.place = p.place and m.uom = p.uom
        and (c.time is null or m.time > c.time)
    group by p.lot_id, p.place, p.uom, c.counted, c.time
)
insert into place_stock (lot_id, place, uom, quantity, since)
select lot_id, place, uom, quantity, since from counted
where abs(quantity) > 1e-9 and since is not null
$$;

-- A pick of a lot while an older (FIFO) or sooner-expiring (FEFO) lot of the same product
-- lay in the same warehouse.
-- Its kind, fifo_broken, is admitted by the alerts' kind check of migration 0030 (any
-- snake_case kind): no constraint is changed here, so the order migrations run in on an
-- existing database cannot narrow it again.
