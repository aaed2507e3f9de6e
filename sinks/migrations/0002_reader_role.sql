-- Least privilege for readers: the gateway and the reports connect as `desktrace_reader`, which may only
-- SELECT. The role itself is created by whoever runs PostgreSQL (CloudNativePG's managed roles in
-- deploy/k8s/base/postgres.yaml, or `CREATE ROLE desktrace_reader LOGIN PASSWORD ...`); when it exists, this
-- grants it read access to every table and to those the sinks create later (day partitions included).
-- A migration runs once: create the role before the first `desktrace-sink migrate`, or later run the three
-- statements below by hand.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'desktrace_reader') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO desktrace_reader';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO desktrace_reader';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO desktrace_reader';
    END IF;
END
$$;
