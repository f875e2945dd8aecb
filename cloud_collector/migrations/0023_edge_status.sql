-- The latest status of every edge, from their retained status messages
-- (cloud_collector/edge_status.py; GET /api/v1/edges). One row per registered edge that
-- has sent a status, or one that could not be read.
create table edge_status (
    edge_id      text primary key,
    state        text check (state in ('online', 'offline')),
    -- The connection the state belongs to (the time in the edge's last will): orders a
    -- will against statuses of the same and later connections. Null from older edges.
    session      timestamptz,
    -- The edge's clock for the status it sent; the collector's for when it arrived.
    status_time  timestamptz,
    received_at  timestamptz,
    -- When the collector saw the state change; null when it was so when first seen (a
    -- retained message read at the collector's start).
    state_since  timestamptz,
    -- The last status the edge published as online (its will carries nothing more), as
    -- the contract read it: never text the contract refused.
    status       jsonb,
    -- Statuses of this edge the contract refused (malformed, oversized, another edge's id),
    -- and the last reason: the bytes themselves are in dead_letters.
    refused      bigint not null default 0,
    last_refused_at     timestamptz,
    last_refused_reason text,
    check ((state is null) = (status is null)),
    check ((state is null) = (received_at is null))
);
