-- Which partner captured an EPCIS event, on the event itself (null for our edges' events and
-- for captures with our own keys, importer or admin). A partner's events extend the
-- genealogy (its transformations, its onward shipments) but never decide what it may see:
-- only shipment lines we recorded do (auth.VISIBLE_LOTS_SQL); and a partner sees of the
-- rest only what it captured itself (epcis/query.py).
alter table trace_events add column partner_id text references partners;
update trace_events t set partner_id = j.partner_id
from epcis_capture_jobs j
where j.capture_id = t.capture_id and j.partner_id is not null;
create index trace_events_partner on trace_events (partner_id) where partner_id is not null;

-- Written, never read: whether the eventID was the GS1 hash we computed.
alter table trace_events drop column event_id_assigned;

-- A capture job exists only for a document accepted and committed whole (capture is
-- synchronous, all or nothing): running, success, error behaviour and errors were the same
-- for every job, and the REST binding's answer says so without storing them; the counts of
-- events sent and stored were never read (what a capture stored: trace_events.capture_id).
-- captured_by stays: the credential that sent the document, for an operator's audit.
alter table epcis_capture_jobs
    drop column running,
    drop column success,
    drop column error_behaviour,
    drop column errors,
    drop column events,
    drop column stored;
