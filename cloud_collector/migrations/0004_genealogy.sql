-- Lot genealogy projected from trace events (and ERP imports): lots, the units that belong
-- to them, the links a batch makes from its input lots to its output lots, receipts,
-- shipments, locations and QC results. Trace queries walk lot_links.

create table products (
    gtin  text primary key,
    name  text not null,
    uom   text
);

create table lots (
    lot_id       bigint generated always as identity primary key,
    gtin         text not null default '',  -- '' when the product is not known
    lot_code     text not null,
    quantity     double precision,
    uom          text,
    origin       text not null default 'unknown'
                 check (origin in ('supplier', 'own', 'unknown')),
    batch_id     text,                       -- the own batch that produced it
    supplier     text,
    supplier_lot text,                       -- the supplier's own lot code, searchable
    first_seen   timestamptz not null default now(),
    unique (gtin, lot_code)
);
create index lots_code on lots (lot_code);
create index lots_supplier_lot on lots (supplier_lot) where supplier_lot is not null;
create index lots_batch on lots (batch_id) where batch_id is not null;

-- A physical unit (pallet SSCC, case or item SGTIN) and, once known, its lot.
create table units (
    epc      text primary key,  -- as captured: EPC URN or GS1 Digital Link URI
    sscc     text,
    gtin     text,
    serial   text,
    lot_id   bigint references lots
);
create index units_sscc on units (sscc) where sscc is not null;
create index units_lot on units (lot_id);

create table lot_links (
    input_lot  bigint not null references lots,
    output_lot bigint not null references lots,
    batch_id   text not null,
    event_id   text not null,
    quantity   double precision,  -- of the input consumed
    uom        text,
    primary key (event_id, input_lot, output_lot)
);
create index lot_links_output on lot_links (output_lot, input_lot);
create index lot_links_input on lot_links (input_lot, output_lot);

create table receipts (
    event_id   text not null,
    position   integer not null,
    lot_id     bigint references lots,
    epc        text,
    document   text,   -- purchase order
    supplier   text,
    quantity   double precision,
    uom        text,
    time       timestamptz not null,
    location   text,
    primary key (event_id, position)
);
create index receipts_lot on receipts (lot_id);

create table shipment_lines (
    event_id   text not null,
    position   integer not null,
    lot_id     bigint references lots,
    epc        text,
    shipment   text,   -- the despatch advice / shipment document id
    quantity   double precision,
    uom        text,
    time       timestamptz not null,
    location   text,
    primary key (event_id, position)
);
create index shipment_lines_lot on shipment_lines (lot_id);

-- From the ERP: who a shipment went to, under which order, by which carrier.
create table customers (
    customer_id text primary key,
    name        text not null,
    address     text
);
create table shipments (
    shipment   text primary key,
    order_id   text,
    customer_id text references customers,
    ship_to    text,
    carrier    text
);

create table lot_locations (
    lot_id   bigint references lots,
    epc      text,
    location text not null,
    time     timestamptz not null,
    event_id text not null
);
create index lot_locations_lot on lot_locations (lot_id, time);

create table qc_results (
    id        bigint generated always as identity primary key,
    batch_id  text,
    lot_id    bigint references lots,
    kind      text not null check (kind in ('IPQC', 'FQC', 'incoming')),
    check_name text not null,
    value     double precision,
    unit      text,
    passed    boolean not null,
    inspector text,
    time      timestamptz not null
);
create index qc_results_batch on qc_results (batch_id);
create index qc_results_lot on qc_results (lot_id);

-- Spec limits of each device tag, as the edges' profiles declare them.
create table tag_specs (
    device text not null,
    tag    text not null,
    unit   text,
    low    double precision,
    high   double precision,
    updated_at timestamptz not null default now(),
    primary key (device, tag)
);
