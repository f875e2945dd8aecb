-- Recall cases and mock-recall drills (cloud_collector/recall_cases/; /api/v1/recall-cases).

-- A case: opened from a lot or from a process condition, by someone, at a time; closed with
-- a summary. A drill is a case opened to rehearse: the same record, marked, so that a real
-- recall's list never mixes with rehearsals.
create table recall_cases (
    case_id        bigint generated always as identity primary key,
    title          text not null check (length(title) between 1 and 200),
    drill          boolean not null default false,
    origin         text not null check (origin in ('lot', 'condition')),
    origin_lot     bigint references lots,
    -- The recall by condition's request as given (tag, device, condition, limit, from, to).
    condition      jsonb,
    opened_by      text not null,
    opened_at      timestamptz not null default now(),
    -- The gaps the last recomputation of the affected set met, and when it ran.
    gaps           jsonb not null default '[]',
    checked_at     timestamptz not null default now(),
    closed_at      timestamptz,
    closed_by      text,
    summary        text,
    check ((origin = 'lot') = (origin_lot is not null)),
    check ((origin = 'condition') = (condition is not null)),
    check ((closed_at is null) = (closed_by is null) and (closed_at is null) = (summary is null))
);
create index recall_cases_opened on recall_cases (opened_at);

-- What a case affects: its lots, shipment lines, customers and on-hand places. Rows are
-- only ever added: a member the recomputed set no longer holds stays, marked
-- `in_current = false`, so a case never loses what it once said was affected. `found_at` is
-- when the case first saw it (its opening for the set it started from).
create table recall_case_members (
    case_id          bigint not null references recall_cases,
    kind             text not null check (kind in ('lot', 'shipment', 'customer', 'place')),
    key              text not null,
    lot_id           bigint references lots,
    gtin             text,
    lot_code         text,
    shipment         text,
    order_id         text,
    customer_key     text,
    customer         text,
    place            text,
    status           text,
    -- As found, and as the last recomputation says (a place's stock goes down as it ships).
    quantity         float8,
    current_quantity float8,
    uom              text,
    found_at         timestamptz not null default now(),
    at_opening       boolean not null,
    in_current       boolean not null default true,
    checked_at       timestamptz not null default now(),
    primary key (case_id, kind, key)
);

-- Everything done on a case, who recorded it and when, in one log: the opening, each
-- recomputation that found something new, each customer told, each return, each quantity
-- held or destroyed at a place, the case's lots put on hold, each export, the closing.
-- `happened_at` is when it happened in the world (a customer phoned yesterday), `at` when
-- it was recorded here.
create table recall_case_actions (
    action_id    bigint generated always as identity primary key,
    case_id      bigint not null references recall_cases,
    kind         text not null check (kind in (
                     'opened', 'refreshed', 'notified', 'returned', 'held', 'destroyed',
                     'lots_held', 'exported', 'closed')),
    at           timestamptz not null default now(),
    by           text not null,
    happened_at  timestamptz,
    customer_key text,
    place        text,
    lot_id       bigint references lots,
    quantity     float8 check (quantity is null or quantity >= 0),
    uom          text,
    method       text,
    contact      text,
    note         text check (note is null or length(note) <= 2000),
    detail       jsonb not null default '{}'
);
create index recall_case_actions_case on recall_case_actions (case_id, action_id);
-- The drills' list reads each drill's first export.
create index recall_case_actions_exports on recall_case_actions (case_id, at)
    where kind = 'exported';
