-- Master data the FDA's FSMA 204 Key Data Elements need and the floor does not capture:
-- what a place is (a "location description": business name, phone number, physical
-- address, 21 CFR 1.1310) and where a supplier's lot got its traceability lot code.

-- A place as events and the ERP name it: a read point or business location of our own
-- ("dock-1", "line-1", an SGLN), a supplier as a purchase order names it, a ship-to as a
-- shipment names it.
create table locations (
    location_id text primary key,
    name        text not null,  -- business name
    address     text,           -- physical location address, city, state, zip, country
    phone       text,
    gln         text,
    -- What to give instead of the location description when this place assigned a lot's
    -- code (FDA Food Facility Registration Number, a registered GLN, a web address).
    tlc_source_reference text
);

-- The traceability lot code source of a lot we did not make, as the supplier's shipping
-- KDEs said (21 CFR 1.1340(b)): the place that assigned the code, or a reference to it.
create table lot_tlc_sources (
    gtin        text not null,
    lot_code    text not null,
    location_id text,  -- a row of locations
    reference   text,
    primary key (gtin, lot_code),
    check (location_id is not null or reference is not null)
);
