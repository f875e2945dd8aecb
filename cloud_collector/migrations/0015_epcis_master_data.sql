-- EPCIS master data (epcisHeader.epcisMasterData.vocabularyList of a captured document):
-- kept as captured, and what the FSMA 204 exports need of it (location descriptions,
-- product names) merged into locations and products (cloud_collector/epcis/master_data.py).

-- Every vocabulary element of every accepted capture, as sent: the audit of who said what
-- of a place or a product. Stored in the capture's transaction (a refused document stores
-- nothing), after its job.
create table epcis_vocabulary_elements (
    capture_id      text not null references epcis_capture_jobs,
    position        integer not null,  -- the element's order in the document
    vocabulary_type text not null,     -- urn:epcglobal:epcis:vtype:BusinessLocation, ...
    element_id      text not null,
    attributes      jsonb not null default '[]',  -- [{"id", "attribute"}] as captured
    children        jsonb not null default '[]',
    context         jsonb,             -- the document's inline @context prefixes
    partner_id      text references partners,  -- set when a partner's key captured it
    primary key (capture_id, position)
);
create index epcis_vocabulary_elements_element
    on epcis_vocabulary_elements (vocabulary_type, element_id);

-- Where a location's or a product's description came from, for precedence: both null is
-- the ERP import (or anything else written straight to the table); capture_id set is EPCIS
-- master data, with partner_id the partner whose key captured it (null: our own importer
-- or admin key). The ERP import clears both. Ranking: ERP > our master data > a partner's.
alter table locations
    add column capture_id text,
    add column partner_id text references partners;
alter table products
    add column capture_id text,
    add column partner_id text references partners;
