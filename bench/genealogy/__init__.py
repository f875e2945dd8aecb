"""Genealogy benchmark (issue 5): trace, recall and batch-parameter latencies on a plant-sized
lot genealogy, each set against the bare graph walk (`trace.count_reachable`) over the same
lots.

    make bench-genealogy
    (or: eval "$(bash deploy/services.sh up)"; .venv/bin/python -m bench.genealogy --scale 0.05)

It drops and recreates its own database, `trace_bench`, on the project's cluster, migrates
it, and fills it with binary COPY (not through the event pipeline). At --scale 1:

    supplier lots --receiving--> raw lots --mixing--> intermediates --finishing--> finished
        --packing--> shipped lots --> shipments --> customers
    20,000            80,000          200,000         250,000          450,000  = 1,000,000 lots

Each batch consumes several input lots, oldest first, and makes one to three output lots; a
raw lot feeds about seven mixing batches. Two ingredients are in everything: every mixing
batch takes salt from the silo fill of the day (90 fills a year, from two supplier lots) and
every finishing batch takes the excipient drum of the day (200 drums, four supplier lots).
So one salt supplier lot reaches about half the plant (~500,000 lots) and one silo fill about
10,000. Readings (10,000,000; one fermentation batch holds 1,000,000 of them) go to every
batch, with the edges' sequence numbers and commit records, a few lost messages, bad and
uncertain readings, and excursions outside the tags' spec limits. Everything shrinks with
--scale except the calendar (one year: the hypertable has a chunk per day at any scale).

Each answer runs in a worker process over one autocommit connection, as the API's pool gives
one; a run that overruns --timeout is stopped and reported as such. The output ends with a
markdown table for the README, where the time goes (SQL, row loading, Python; statements per
answer) and EXPLAIN ANALYZE of the statements that cost most.
"""
