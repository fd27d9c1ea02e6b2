-- The usage table: one row per client request (plexus/control/usage.py FIELDS, in that order).
-- Text columns use the "C" collation: byte order, as SQLite compares, so ORDER BY "id" and the
-- summary's group order are the same on both backends (and comparisons are cheaper).
CREATE TABLE plexus_usage (
    "id"                 TEXT COLLATE "C" PRIMARY KEY,
    "time"               DOUBLE PRECISION,
    "key"                TEXT COLLATE "C",
    "client_ip"          TEXT COLLATE "C",
    "dialect"            TEXT COLLATE "C",
    "endpoint"           TEXT COLLATE "C",
    "alias"              TEXT COLLATE "C",
    "attempts"           BIGINT,
    "provider"           TEXT COLLATE "C",
    "model"              TEXT COLLATE "C",
    "provider_type"      TEXT COLLATE "C",
    "stream"             BOOLEAN,
    "passthrough"        BOOLEAN,
    "status"             TEXT COLLATE "C",
    "http_status"        BIGINT,
    "input_tokens"       BIGINT,
    "output_tokens"      BIGINT,
    "cached_tokens"      BIGINT,
    "cache_write_tokens" BIGINT,
    "reasoning_tokens"   BIGINT,
    "cost"               DOUBLE PRECISION,
    "duration_ms"        DOUBLE PRECISION,
    "ttft_ms"            DOUBLE PRECISION,
    "tokens_per_second"  DOUBLE PRECISION,
    "finish_reason"      TEXT COLLATE "C",
    "overhead_ms"        DOUBLE PRECISION,
    "error"              TEXT COLLATE "C",
    "request_id"         TEXT COLLATE "C",
    "bytes"              BIGINT
);

-- Only "time" is indexed: every query is bounded by a time range (and retention deletes by it);
-- each further index costs the writer on every row.
CREATE INDEX plexus_usage_time ON plexus_usage ("time");
