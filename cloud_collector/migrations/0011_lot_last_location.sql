-- Where each lot was last seen, kept on the lot: a recall lists the place of every lot with
-- stock left, and at half a million lots a probe into lot_locations per lot costs most of
-- a second. lot_locations keeps the history.
alter table lots add column location text;
alter table lots add column located_at timestamptz;

update lots l set location = x.location, located_at = x.time
from (
    select distinct on (lot_id) lot_id, location, time from lot_locations
    where lot_id is not null order by lot_id, time desc
) x
where x.lot_id = l.lot_id;
