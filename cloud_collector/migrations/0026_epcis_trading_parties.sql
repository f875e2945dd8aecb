-- Trading parties of captured EPCIS events: each entry of an event's sourceList and
-- destinationList (cloud_collector/epcis/parties.py), so that a receipt has a supplier and
-- a shipment a customer when no ERP document says so (cloud_collector/trace/walk.py).
create table event_parties (
    event_id  text not null references trace_events (event_id) on delete cascade,
    side      text not null check (side in ('source', 'destination')),
    position  int not null,
    -- The CBV source/destination type as a bare word (owning_party, possessing_party,
    -- location), or a private type's URI as sent.
    type      text not null,
    party     text not null,  -- the identifier as sent (URN or Digital Link)
    gln       text,           -- its GLN (PGLN, SGLN or GLN), when a GS1 key
    extension text,           -- an SGLN's extension; null for the whole GLN
    key       text,           -- the GS1 key as an element string, (417)... or (414)...(254)...
    primary key (event_id, side, position)
);
create index event_parties_gln on event_parties (gln) where gln is not null;

-- A party is named from the locations that master data or the ERP describe by its GLN.
create index if not exists locations_gln on locations (gln) where gln is not null;
