"""Ingest benchmark (issue 12): readings per second a plant's fleet gets committed and
acknowledged through the real broker, the real `cloud-collector` process(es) and
TimescaleDB, set against a binary COPY of the same rows measured in the same run.

    make bench-ingest
    (or: eval "$(bash deploy/services.sh up)"; .venv/bin/python -m bench.ingest --runs 1)

A fleet of simulated edges (default 20 lines x 50 tags, one edge per line) publishes the
edge agent's own envelopes of contract `Reading`s with QoS 1, each edge under its own broker
identity, keeps a window of messages in flight, resends on ack timeout, and counts a reading
committed only when the collector's ack says so. Per measurement: a fresh database, the
collector(s) started as `cloud-collector run` with their own identities on a share group
of their own, the fleet flat out, then `select` over `readings` against what the acks said
(missing and doubled must be 0). Loads: collectors x records per message (`--collectors
1,2 --records 500,100`), and at an offered rate (`--latency-rate`) for latency.

Figures: readings/s committed and acked; latency from each reading's time to its ack (p50,
p95, p99); CPU (user+system, % of one core) of each collector, the broker, PostgreSQL (all
its processes) and the generator itself, and the collectors' peak RSS; the COPY (binary,
one connection, into a hypertable of `readings`' shape and indexes) and each rate's ratio
to it. Each figure is printed as its spread over `--runs`; the JSON goes to bench/results/.
"""
