-- The review queue and the operators' views (SQLite): the same tables and views as on
-- Postgres (docs/sql.md); days are the UTC date of the RFC 3339 text, percentiles nearest-rank.
CREATE TABLE IF NOT EXISTS reviews (
    verification_id TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'declined')),
    reason          TEXT,
    reviewer        TEXT,
    resolved_by     TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_tenant_idx ON reviews (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS verifications_review_idx
    ON verifications (tenant_id, id) WHERE decision = 'review';

CREATE VIEW IF NOT EXISTS livegate_daily_decisions AS
WITH ranked AS (
    SELECT v.tenant_id, substr(v.created_at, 1, 10) AS day,
           COALESCE(v.provider, 'none') AS provider, COALESCE(v.decision, 'error') AS decision,
           v.latency_ms, COALESCE(c.credits, 0) AS credits,
           ROW_NUMBER() OVER w AS rn, COUNT(*) OVER w AS n
    FROM verifications v
    LEFT JOIN (SELECT verification_id, -SUM(amount) AS credits FROM credit_ledger
               WHERE kind = 'charge' GROUP BY verification_id) c ON c.verification_id = v.id
    WINDOW w AS (PARTITION BY v.tenant_id, substr(v.created_at, 1, 10),
                 COALESCE(v.provider, 'none'), COALESCE(v.decision, 'error')
                 ORDER BY v.latency_ms ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT tenant_id, day, provider, decision, COUNT(*) AS verifications,
       MIN(CASE WHEN rn >= (n * 50 + 99) / 100 THEN latency_ms END) AS latency_p50_ms,
       MIN(CASE WHEN rn >= (n * 95 + 99) / 100 THEN latency_ms END) AS latency_p95_ms,
       SUM(credits) AS credits
FROM ranked GROUP BY tenant_id, day, provider, decision;

CREATE VIEW IF NOT EXISTS livegate_shadow_pairs AS
SELECT v.id AS verification_id, v.tenant_id, v.created_at, v.threshold,
       p.provider AS primary_provider, s.provider AS shadow_provider,
       p.score AS primary_score, s.score AS shadow_score,
       p.latency_ms AS primary_latency_ms, s.latency_ms AS shadow_latency_ms,
       p.score >= v.threshold AS primary_approved, s.score >= v.threshold AS shadow_approved
FROM verifications v
JOIN verification_attempts p ON p.verification_id = v.id AND NOT p.shadow
     AND p.provider = v.provider AND p.outcome = 'ok' AND p.score IS NOT NULL
JOIN verification_attempts s ON s.verification_id = v.id AND s.shadow
     AND s.outcome = 'ok' AND s.score IS NOT NULL;

CREATE VIEW IF NOT EXISTS livegate_provider_agreement AS
SELECT tenant_id, primary_provider, shadow_provider, substr(created_at, 1, 10) AS day,
       COUNT(*) AS pairs,
       AVG(CASE WHEN primary_approved = shadow_approved THEN 1.0 ELSE 0.0 END) AS agreement,
       AVG(ABS(primary_score - shadow_score)) AS mean_abs_score_diff,
       COUNT(*) FILTER (WHERE primary_approved AND shadow_approved) AS both_approved,
       COUNT(*) FILTER (WHERE primary_approved AND NOT shadow_approved)
           AS primary_approved_shadow_declined,
       COUNT(*) FILTER (WHERE NOT primary_approved AND shadow_approved)
           AS primary_declined_shadow_approved,
       COUNT(*) FILTER (WHERE NOT primary_approved AND NOT shadow_approved) AS both_declined
FROM livegate_shadow_pairs
GROUP BY tenant_id, primary_provider, shadow_provider, substr(created_at, 1, 10);

CREATE VIEW IF NOT EXISTS livegate_attempt_errors AS
SELECT provider, error_code, COUNT(*) AS attempts, MAX(created_at) AS last_seen
FROM verification_attempts WHERE outcome = 'error'
GROUP BY provider, error_code;

CREATE VIEW IF NOT EXISTS livegate_review_queue AS
SELECT v.id AS verification_id, v.tenant_id, v.created_at, v.provider, v.score, v.threshold,
       v.warnings,
       CASE WHEN r.verification_id IS NULL THEN 'open' ELSE r.decision END AS status,
       r.reviewer, r.reason, r.resolved_by, r.created_at AS resolved_at
FROM verifications v LEFT JOIN reviews r ON r.verification_id = v.id
WHERE v.decision = 'review';
