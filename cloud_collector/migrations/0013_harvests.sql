-- Initial packing of a raw agricultural commodity (21 CFR 1.1330): the harvest and cooling
-- Key Data Elements come from the grower (through the ERP), not from the floor.

-- What the grower said of a harvested lot, by the lot as our receipts name it (gtin '' when
-- the bins carry no GTIN, as lots.gtin). Places are rows of locations.
create table harvests (
    gtin             text not null default '',
    lot_code         text not null,
    commodity        text not null,  -- § 1.1330(a)(1), and the variety if applicable
    variety          text,
    farm             text,  -- (a)(4) the farm where the food was harvested
    growing_area     text,  -- (a)(5)/(6) field, growing area or container, in the grower's name
    harvester        text,  -- (a)(7) business name and phone number of the harvester
    harvest_date     date,  -- (a)(8)
    cooling_location text,  -- (a)(9)/(10) where and when it was cooled, if it was
    cooling_date     date,
    primary key (gtin, lot_code)
);

-- A place whose transformations are initial packing (a packing line, a packhouse): its
-- batches assign the first traceability lot code to the food harvested.
alter table locations add column initial_packing boolean not null default false;
