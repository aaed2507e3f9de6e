-- raw_events_ensure_partition (0001) was meant to be safe to call concurrently, and was not: a caller
-- that had waited for the advisory lock still missed the partition the lock's holder had just created
-- (taking an advisory lock does not refresh a session's view of the catalog), ran CREATE TABLE, and
-- failed with duplicate_table. Two raw sinks, or two batches of one raw sink written at once, meeting a
-- new day made all but one fail and retry their batch. Now the caller that finds the partition made
-- meanwhile returns false, like one that found it before.
CREATE OR REPLACE FUNCTION raw_events_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'raw_events_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('desktrace.raw_events.partitions'));
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF raw_events FOR VALUES FROM (%L) TO (%L)',
            part,
            to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00'
        );
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;  -- created by another caller since the check above
    END;
    RETURN true;
END
$fn$;
