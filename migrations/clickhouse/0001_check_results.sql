-- Every check result. ReplacingMergeTree on the sort key (which ends in check_id) folds a
-- redelivered result into the row it repeats; queries read with FINAL so a duplicate waiting
-- for a merge never counts twice. Partitioned by day for cheap TTL drops; sorted for
-- per-monitor time ranges. Retention: 400 days, enough for yearly SLA reports.
CREATE TABLE IF NOT EXISTS check_results
(
    check_id      String,
    monitor_id    String,
    region        LowCardinality(String),
    scheduled     DateTime64(3, 'UTC'),
    started       DateTime64(3, 'UTC'),
    finished      DateTime64(3, 'UTC'),
    outcome       Enum8('up' = 1, 'down' = 2, 'degraded' = 3, 'error' = 4, 'expired' = 5),
    latency_ms    Nullable(Float32),
    dns_ms        Nullable(Float32),
    connect_ms    Nullable(Float32),
    tls_ms        Nullable(Float32),
    first_byte_ms Nullable(Float32),
    status_code   Nullable(UInt16),
    error_kind    LowCardinality(String),
    error         String,
    tls_expiry    Nullable(DateTime('UTC')),
    executor      LowCardinality(String),
    deliveries    UInt16,
    inserted      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted)
PARTITION BY toDate(scheduled)
ORDER BY (monitor_id, scheduled, check_id)
TTL toDateTime(scheduled) + INTERVAL 400 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
