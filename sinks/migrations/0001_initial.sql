-- desktrace schema, version 0001: raw events (partitioned by day of event time) and sessions.
-- Applied once by sinks.migrations.apply_migrations under an advisory lock; never edit an applied
-- migration, add a new NNNN_name.sql instead (the runner refuses a changed checksum).

-- Raw events: the envelope of shared/spec/events.md as columns, the type-specific rest as jsonb.
-- Range-partitioned by UTC day on ts; partitions are named raw_events_pYYYYMMDD and created by
-- raw_events_ensure_partition (ahead of time and on demand). There is deliberately no DEFAULT partition:
-- see sinks/README.md.
CREATE TABLE raw_events (
    agent_id        text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 0),
    ts              timestamptz NOT NULL,
    type            text        NOT NULL,
    category        text        NOT NULL CHECK (category IN ('ui', 'hid', 'presence')),
    input           text        NOT NULL CHECK (input IN ('hardware', 'injected', 'none')),
    user_key        text        NOT NULL,
    "user"          text        NOT NULL,
    domain          text        NOT NULL,
    host            text        NOT NULL,
    host_domain     text        NOT NULL DEFAULT '',
    tz              text        NOT NULL DEFAULT 'UTC',
    utc_offset_min  integer     NOT NULL DEFAULT 0,
    agent_version   text        NOT NULL DEFAULT '',
    app             text,
    url_domain      text,
    last_input_ts   timestamptz,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT raw_events_event_key UNIQUE (agent_id, seq, ts)
) PARTITION BY RANGE (ts);

COMMENT ON TABLE raw_events IS
    'Raw desktrace events (events.md), one row per (agent_id, seq, ts); written by desktrace-sink raw';
COMMENT ON COLUMN raw_events.user_key IS 'domain\login lower-cased (proto.keys.user_key)';
COMMENT ON COLUMN raw_events.category IS 'ui, hid or presence: the raw topic the event came from';
COMMENT ON COLUMN raw_events.url_domain IS 'host name of the url field (UI/HID events), lower-cased';
COMMENT ON COLUMN raw_events.last_input_ts IS 'Heartbeat.last_input_ts (null for other types)';
COMMENT ON COLUMN raw_events.details IS 'every other field of the event (window context, heartbeat counters...)';

CREATE INDEX raw_events_user_key_ts ON raw_events (user_key, ts);

-- Creates the partition of one UTC day when missing; true when it created it. Safe to call
-- concurrently (transaction-level advisory lock) and cheap when the partition exists.
CREATE FUNCTION raw_events_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'raw_events_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('desktrace.raw_events.partitions'));
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF raw_events FOR VALUES FROM (%L) TO (%L)',
        part,
        to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
        to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00'
    );
    RETURN true;
END
$fn$;

-- Sessions of shared/spec/sessions.md, upserted from desktrace.sessions.v1; a retraction deletes the row.
CREATE TABLE sessions (
    session_id  text             PRIMARY KEY,
    user_key    text             NOT NULL,
    kind        text             NOT NULL CHECK (kind IN ('active', 'inactive')),
    reason      text             CHECK (reason IN ('idle', 'locked')),
    started_at  timestamptz      NOT NULL,
    ended_at    timestamptz      NOT NULL,
    duration_s  double precision NOT NULL CHECK (duration_s >= 0),
    hosts       text[]           NOT NULL DEFAULT '{}',
    tz          text             NOT NULL DEFAULT 'UTC',
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT sessions_end_not_before_start CHECK (ended_at >= started_at),
    CONSTRAINT sessions_reason_matches_kind CHECK ((kind = 'active') = (reason IS NULL))
);

COMMENT ON TABLE sessions IS
    'Activity/inactivity sessions (sessions.md), upserted by desktrace-sink sessions';
COMMENT ON COLUMN sessions.tz IS 'the session record''s tz: IANA zone of the user''s latest event in it';
COMMENT ON COLUMN sessions.updated_at IS 'when the sink last wrote this row';

CREATE INDEX sessions_user_key_started_at ON sessions (user_key, started_at);
