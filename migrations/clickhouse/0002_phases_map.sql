-- Every phase a check reports (ICMP rtt_min/rtt_max, probe query times ...), not only the
-- four HTTP phases that have their own columns.
ALTER TABLE check_results ADD COLUMN IF NOT EXISTS phases Map(LowCardinality(String), Float32)
