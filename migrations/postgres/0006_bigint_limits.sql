-- Intervals up to a year: past what an integer holds in milliseconds (24.8 days), which made
-- `interval: 30d` an out-of-range error on insert. timeout_ms (at most an hour) fits.
ALTER TABLE monitors ALTER COLUMN interval_ms TYPE bigint;

-- Whether the public status page may show a monitor's probe details (error text, snippets);
-- off unless its definition says so.
ALTER TABLE monitors ADD COLUMN public_details boolean NOT NULL DEFAULT false;

-- The longest text in an array, for the per-element limits below.
CREATE FUNCTION vigil_longest(items text[]) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(max(char_length(item)), 0) FROM unnest(items) AS item
$$;

-- The model's limits (engine/monitors.py), checked again by the table for any write that does
-- not go through the model. NOT VALID: rows written before these limits existed stay as they
-- are and cannot fail the upgrade; every insert and update from now on is checked, and the
-- model refuses such a row on its next write anyway.
ALTER TABLE monitors
    ADD CONSTRAINT monitors_interval_ms_max CHECK (interval_ms <= 31536000000) NOT VALID,
    ADD CONSTRAINT monitors_timeout_ms_range CHECK (timeout_ms BETWEEN 100 AND 3600000) NOT VALID,
    ADD CONSTRAINT monitors_id_length CHECK (char_length(id) BETWEEN 1 AND 128) NOT VALID,
    ADD CONSTRAINT monitors_name_length CHECK (char_length(name) <= 200) NOT VALID,
    ADD CONSTRAINT monitors_regions_count CHECK (cardinality(regions) BETWEEN 1 AND 16) NOT VALID,
    ADD CONSTRAINT monitors_regions_length CHECK (vigil_longest(regions) <= 32) NOT VALID,
    ADD CONSTRAINT monitors_tags_count CHECK (cardinality(tags) <= 32) NOT VALID,
    ADD CONSTRAINT monitors_tags_length CHECK (vigil_longest(tags) <= 64) NOT VALID;
