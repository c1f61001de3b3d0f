-- Verifications and their attempts in monthly partitions (by `created_at`, UTC months), so a
-- month past every tenant's retention is dropped whole instead of deleted row by row. A
-- partitioned table's keys must hold the partition key: the primary keys gain `created_at`,
-- and the attempts' foreign key goes (the purge deletes attempts with their verification).
-- Rows of a month with no partition yet land in the DEFAULT partition; livegate creates the
-- current and the next two months' partitions at every start and every purge pass.
-- Existing rows are copied into partitions of their months, in this migration's transaction.

CREATE TABLE verifications_p (LIKE verifications INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE verifications_p ADD CONSTRAINT verifications_p_pkey PRIMARY KEY (id, created_at);
CREATE TABLE verifications_default PARTITION OF verifications_p DEFAULT;

CREATE TABLE verification_attempts_p
    (LIKE verification_attempts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE verification_attempts_p ADD CONSTRAINT verification_attempts_p_pkey
    PRIMARY KEY (verification_id, attempt_no, created_at);
CREATE TABLE verification_attempts_default PARTITION OF verification_attempts_p DEFAULT;

DO $$
DECLARE
    m date;
    upto date;
BEGIN
    FOR m IN
        SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM verifications
        UNION
        SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM verification_attempts
        UNION
        SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC'),
                               date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
                               interval '1 month')::date
    LOOP
        upto := (m + interval '1 month')::date;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF verifications_p FOR VALUES FROM (%L) TO (%L)',
            'verifications_' || to_char(m, 'YYYY_MM'),
            to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00', to_char(upto, 'YYYY-MM-DD') || ' 00:00:00+00');
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF verification_attempts_p FOR VALUES FROM (%L) TO (%L)',
            'verification_attempts_' || to_char(m, 'YYYY_MM'),
            to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00', to_char(upto, 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO verifications_p SELECT * FROM verifications;
INSERT INTO verification_attempts_p SELECT * FROM verification_attempts;
DROP TABLE verification_attempts;
DROP TABLE verifications;
ALTER TABLE verifications_p RENAME TO verifications;
ALTER TABLE verifications RENAME CONSTRAINT verifications_p_pkey TO verifications_pkey;
ALTER TABLE verification_attempts_p RENAME TO verification_attempts;
ALTER TABLE verification_attempts
    RENAME CONSTRAINT verification_attempts_p_pkey TO verification_attempts_pkey;

CREATE INDEX verifications_tenant_id_idx ON verifications (tenant_id, id DESC);
CREATE INDEX verifications_tenant_created_idx ON verifications (tenant_id, created_at DESC);
CREATE INDEX verifications_tenant_external_idx
    ON verifications (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX verification_attempts_created_idx
    ON verification_attempts (created_at) WHERE raw_body IS NOT NULL;
