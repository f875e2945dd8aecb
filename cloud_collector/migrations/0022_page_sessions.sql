-- The pages' sign-in sessions (cloud_collector/pages/session.py): a random token in the
-- browser's cookie, stored only as its SHA-256 like an API key, standing for the
-- credential that opened it until it expires or is signed out. Revoking the credential
-- ends its sessions (auth._SESSIONS_BY_HASHES joins it). Sessions ended more than a day ago
-- are deleted at the next sign-in.

create table page_sessions (
    token_hash    bytea primary key,
    credential_id bigint not null references api_credentials on delete cascade,
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    signed_out_at timestamptz
);
create index page_sessions_ended on page_sessions (expires_at);
