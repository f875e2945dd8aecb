-- Alert rules, raising alerts from data at ingest, and their durable delivery
-- (cloud_collector/alerts/; /api/v1/alert-rules, /api/v1/alert-targets,
-- /api/v1/alert-deliveries, /api/v1/alerts).

-- Alerts of any kind: other parts insert kinds of their own (a FIFO break, a recall case)
-- and get them listed and delivered with no change here. A kind is a short snake_case word.
alter table alerts drop constraint alerts_kind_check;
alter table alerts add constraint alerts_kind_check check (kind ~ '^[a-z][a-z0-9_]{0,63}$');

-- What the admin asks to be told about. `params` is the condition's parameters as
-- cloud_collector/alerts/rules.py validates them (lines, devices, tags, edges, minutes...).
create table alert_rules (
    rule_id    bigint generated always as identity primary key,
    name       text not null unique check (length(name) between 1 and 200),
    kind       text not null check (kind in
                   ('excursion', 'qc_failed', 'device_offline', 'outbox_alarm', 'gap_found')),
    params     jsonb not null default '{}',
    enabled    boolean not null default true,
    created_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index alert_rules_kind on alert_rules (kind) where enabled;

-- `subject`: what the alert is about within its kind (a batch's tag, a QC result, an edge);
-- one open alert per kind and subject is the deduplication: a condition seen again while
-- its alert is open raises nothing. `cleared_at`: the condition ended (an edge back
-- online); the next occurrence is a new alert. Alerts of a single event never clear.
alter table alerts
    add column rule_id         bigint references alert_rules on delete set null,
    add column subject         text,
    add column line_id         text,
    add column summary         text,
    add column detail          jsonb not null default '{}',
    add column cleared_at      timestamptz,
    add column acknowledged_at timestamptz,
    add column acknowledged_by text,
    add column acknowledge_note text;
create unique index alerts_open_subject on alerts (kind, subject)
    where subject is not null and cleared_at is null;
create index alerts_unacknowledged on alerts (raised_at) where acknowledged_at is null;

-- A value out of its tag's spec limits in a batch that was running: once per batch, device
-- and tag (the rollup row's first excursion), in the transaction that commits the reading.
-- Only rows that just got their first excursion pay for it (the triggers' WHEN).
create function alert_excursion() returns trigger language plpgsql as $$
declare
    line  text;
    ended timestamptz;
begin
    select b.line_id, b.ended_at into line, ended from batches b where b.batch_id = new.batch_id;
    if ended is not null and new.excursion_first > ended then
        return null;  -- a reading after the batch's end: not an excursion of the batch
    end if;
    insert into alerts (kind, rule_id, subject, line_id, event_time, summary, detail)
    select 'excursion', r.rule_id, new.batch_id || '/' || new.device || '/' || new.tag, line,
           new.excursion_first,
           format('%s %s of batch %s out of spec [%s, %s]: %s', new.device, new.tag,
                  new.batch_id, coalesce(new.low::text, '-'), coalesce(new.high::text, '-'),
                  case when new.above > 0 then new.excursion_max else new.excursion_min end),
           jsonb_build_object('batch_id', new.batch_id, 'device', new.device, 'tag', new.tag,
                              'unit', new.unit, 'low', new.low, 'high', new.high,
                              'below', new.below, 'above', new.above,
                              'min', new.excursion_min, 'max', new.excursion_max,
                              'first_time', new.excursion_first)
    from alert_rules r
    where r.kind = 'excursion' and r.enabled
      and (r.params->'lines' is null or r.params->'lines' ? line)
      and (r.params->'devices' is null or r.params->'devices' ? new.device)
      and (r.params->'tags' is null or r.params->'tags' ? new.tag)
    order by r.rule_id limit 1
    on conflict (kind, subject) where subject is not null and cleared_at is null do nothing;
    return null;
end
$$;
create trigger batch_tag_stats_excursion_new after insert on batch_tag_stats
    for each row when (new.below + new.above > 0) execute function alert_excursion();
create trigger batch_tag_stats_excursion_first after update on batch_tag_stats
    for each row when (new.below + new.above > 0 and old.below + old.above = 0)
    execute function alert_excursion();

-- A failed QC check, once per result, in the transaction that imports it.
create function alert_qc_failed() returns trigger language plpgsql as $$
declare
    line text;
begin
    select b.line_id into line from batches b where b.batch_id = new.batch_id;
    insert into alerts (kind, rule_id, subject, line_id, event_time, summary, detail)
    select 'qc_failed', r.rule_id, 'qc/' || new.id, line, new.time,
           format('%s check %s failed%s%s', new.kind, new.check_name,
                  coalesce(' on batch ' || new.batch_id, ''),
                  coalesce(': ' || new.value::text || coalesce(' ' || new.unit, ''), '')),
           jsonb_build_object('qc_result_id', new.id, 'batch_id', new.batch_id,
                              'lot_id', new.lot_id, 'check_kind', new.kind,
                              'check_name', new.check_name, 'value', new.value,
                              'unit', new.unit, 'inspector', new.inspector)
    from alert_rules r
    where r.kind = 'qc_failed' and r.enabled
      and (r.params->'lines' is null or r.params->'lines' ? line)
      and (r.params->'checks' is null or r.params->'checks' ? new.kind)
    order by r.rule_id limit 1
    on conflict (kind, subject) where subject is not null and cleared_at is null do nothing;
    return null;
end
$$;
create trigger qc_results_failed_alert after insert on qc_results
    for each row when (not new.passed) execute function alert_qc_failed();

-- When the collector first recorded each sequence gap: the gap rule waits a grace period
-- before it calls a gap found (an edge resending fills most within seconds).
alter table sequence_gaps add column found_at timestamptz not null default now();

-- Where alerts go: a webhook (its body signed with `secret`) or e-mail addresses; `kinds`
-- and `lines` narrow what it gets (null: everything).
create table alert_targets (
    target_id    bigint generated always as identity primary key,
    name         text not null unique check (length(name) between 1 and 200),
    channel      text not null check (channel in ('webhook', 'email')),
    url          text,
    secret       text,
    email_to     text[],
    kinds        text[],
    lines        text[],
    max_attempts integer not null default 8 check (max_attempts between 1 and 100),
    enabled      boolean not null default true,
    created_by   text not null,
    created_at   timestamptz not null default now(),
    check ((channel = 'webhook') = (url is not null and secret is not null)),
    check ((channel = 'email') = (email_to is not null))
);

-- The delivery queue: one row per alert and target, written in the transaction that raises
-- the alert, so an alert is never raised without its deliveries and a collector's restart
-- loses none. `dead`: given up after max_attempts (the dead letters; redeliverable).
create table alert_deliveries (
    delivery_id     bigint generated always as identity primary key,
    alert_id        bigint not null references alerts on delete cascade,
    target_id       bigint not null references alert_targets on delete cascade,
    state           text not null default 'pending'
                        check (state in ('pending', 'delivered', 'dead')),
    attempts        integer not null default 0,
    max_attempts    integer not null,
    next_attempt_at timestamptz not null default now(),
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz not null default now(),
    unique (alert_id, target_id)
);
create index alert_deliveries_due on alert_deliveries (next_attempt_at) where state = 'pending';
create index alert_deliveries_target on alert_deliveries (target_id, created_at);

create function alert_enqueue() returns trigger language plpgsql as $$
begin
    insert into alert_deliveries (alert_id, target_id, max_attempts)
    select new.alert_id, t.target_id, t.max_attempts from alert_targets t
    where t.enabled
      and (t.kinds is null or new.kind = any(t.kinds))
      and (t.lines is null or new.line_id = any(t.lines));
    if found then
        perform pg_notify('alert_deliveries', '');  -- wakes the senders at commit
    end if;
    return null;
end
$$;
create trigger alerts_enqueue after insert on alerts
    for each row execute function alert_enqueue();
