-- A held-lot alert says in one line what happened, as the rules' alerts do (their summary
-- is what an e-mail's subject and a webhook receiver show first): which held lots were
-- shipped, and where. Filled when the alert is stored, whichever trigger raised it
-- (migrations 0027 and 0033), so those triggers stay as they are.
create function summarize_held_lot_alert() returns trigger language plpgsql as $$
declare
    codes text;
    total int := jsonb_array_length(new.lots);
begin
    select string_agg(l ->> 'lot_code', ', ') into codes
    from (select jsonb_array_elements(new.lots) l limit 10) first_ten;
    new.summary := left(format(
        'held lot%s %s%s shipped at %s',
        case when total = 1 then '' else 's' end,
        coalesce(codes, '?'),
        case when total > 10 then format(' and %s more', total - 10) else '' end,
        coalesce(new.biz_location, new.read_point, 'a shipping door')), 500);
    return new;
end
$$;

create trigger alerts_held_lot_summary before insert on alerts
    for each row when (new.kind = 'held_lot_at_door' and new.summary is null)
    execute function summarize_held_lot_alert();
