-- Credentials of the HTTP API (cloud_collector/auth.py): API keys stored only as the
-- SHA-256 of the key, each with a role; and the partners (distributors) a `partner` key
-- stands for: the ERP customer ids their shipments go to, and the locations (GLN, SGLN,
-- read point ids) where they may capture events.

create table partners (
    partner_id text primary key,
    name       text,
    created_at timestamptz not null default now()
);

-- No foreign key to customers: a partner may be set up before the ERP sync brings its
-- customer record; shipments to it become visible as soon as they carry the id.
create table partner_customers (
    partner_id  text not null references partners on delete cascade,
    customer_id text not null,
    primary key (partner_id, customer_id)
);
create index partner_customers_customer on partner_customers (customer_id);

create table partner_locations (
    partner_id text not null references partners on delete cascade,
    location   text not null,  -- a GLN (13 digits), an SGLN URN or Digital Link, a read point id
    primary key (partner_id, location)
);

create table api_credentials (
    credential_id bigint generated always as identity primary key,
    name          text not null,
    role          text not null
                  check (role in ('reader', 'provisioner', 'importer', 'admin', 'partner')),
    key_hash      bytea not null unique,   -- sha256 of the key; the key itself is never stored
    key_prefix    text not null,           -- its first characters, to recognise it in a list
    partner_id    text references partners,
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    check ((role = 'partner') = (partner_id is not null))
);
-- A name is unique among the credentials in force; revoked ones stay for the record.
create unique index api_credentials_active_name on api_credentials (name)
    where revoked_at is null;
