-- The provisioning registry (cloud_collector/provisioning.py): device profiles and each
-- edge's site configuration in versions, and the audit of every change, push, apply,
-- refusal and rollback. A version is never changed or deleted: a rollback is a new version
-- with an earlier one's content.
create table device_profile_versions (
    name       text not null check (name ~ '^[A-Za-z0-9._:-]{1,64}$'),
    version    integer not null check (version >= 1),
    -- The canonical JSON (device_profiles/sites.py: canonical_json) and its SHA-256: the
    -- hash names the exact bytes stored and pushed.
    content    text not null,
    sha256     text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    author     text not null,
    comment    text not null default '',
    created_at timestamptz not null default now(),
    primary key (name, version)
);

create table site_versions (
    -- The edge (a broker identity of kind edge; not a foreign key: an identity may be
    -- revoked and issued again under its name, its versions stay).
    edge_id    text not null check (edge_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    version    integer not null check (version >= 1),
    content    text not null,
    sha256     text not null check (sha256 ~ '^[0-9a-f]{64}$'),
    author     text not null,
    comment    text not null default '',
    created_at timestamptz not null default now(),
    -- The version whose content this one restores (a rollback), if any.
    restores   integer,
    -- When the collector last published it to the edge (retained), null: never pushed.
    pushed_at  timestamptz,
    primary key (edge_id, version)
);

create table provisioning_audit (
    id        bigint generated always as identity primary key,
    at        timestamptz not null default now(),
    -- Who: an API credential's name, or the edge itself for what it reports.
    actor     text not null,
    action    text not null check (action in (
        'profile_created', 'site_created', 'rolled_back', 'pushed', 'applied', 'refused',
        'probed')),
    subject   text not null check (subject in ('profile', 'site')),
    -- The profile's name, or the edge id.
    name      text not null,
    version   integer,
    detail    text not null default ''
);
create index provisioning_audit_by_name on provisioning_audit (subject, name, id);
-- An edge reports the version it runs (or refused) in every status: one row per report.
create unique index provisioning_audit_edge_reports on provisioning_audit (name, version, action)
    where action in ('applied', 'refused');
