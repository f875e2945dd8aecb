-- How much of each lot has been shipped, kept on the lot next to where it was last seen: a
-- recall lists what is left of every lot it reaches, and summing shipment lines per lot at
-- half a million lots costs a pass of its own. shipment_lines keeps the detail.
alter table lots add column shipped_quantity double precision;  -- null: no quantity shipped

update lots l set shipped_quantity = s.quantity
from (select lot_id, sum(quantity) as quantity from shipment_lines
      where lot_id is not null group by lot_id) s
where s.lot_id = l.lot_id;
