-- A trace balances each batch it meets from all of that batch's links (not only those inside
-- the traced set): found by batch, not by scanning every link.
create index lot_links_batch on lot_links (batch_id);
