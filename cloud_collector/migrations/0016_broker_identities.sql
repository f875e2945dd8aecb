-- Who may connect to the MQTT broker (cloud_collector/broker_identities.py): one identity
-- per edge agent and per collector process. The broker's password file and ACL file are
-- rendered from this table; only the Mosquitto-compatible PBKDF2 hash of a password is
-- kept, never the password.
create table broker_identities (
    identity_id   bigint generated always as identity primary key,
    -- The MQTT username, and for an edge its edge id: a topic level and a password-file
    -- field, so no '/', '+', '#', ':' or space.
    name          text not null check (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    kind          text not null check (kind in ('edge', 'collector')),
    password_hash text not null check (password_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$'),
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz,
    comment       text
);
-- A name is one broker username among the identities in force, whatever their kind;
-- revoked ones stay for the record.
create unique index broker_identities_active_name on broker_identities (name)
    where revoked_at is null;
create index broker_identities_edges on broker_identities (name) where kind = 'edge';
