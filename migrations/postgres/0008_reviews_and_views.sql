-- The review queue and the operators' views (docs/sql.md).

-- The resolution of a `review` decision: one row per verification, written once and never
-- updated (an erasure empties `reason` and `reviewer`). A `review` verification without one
-- is open.
CREATE TABLE IF NOT EXISTS reviews (
    verification_id UUID PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'declined')),
    reason          TEXT,
    -- Free text: who the reviewer says they are.
    reviewer        TEXT,
    -- `admin sha256:<16 hex>` or `tenant sha256:<16 hex>`: the key's id, never the key.
    resolved_by     TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_tenant_idx ON reviews (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS verifications_review_idx
    ON verifications (tenant_id, id) WHERE decision = 'review';

-- Verifications per tenant, UTC day, deciding provider and decision (`error` when none was
-- reached), with nearest-rank latency percentiles and the credits charged.
CREATE OR REPLACE VIEW livegate_daily_decisions AS
SELECT v.tenant_id,
       (v.created_at AT TIME ZONE 'UTC')::date AS day,
       COALESCE(v.provider, 'none') AS provider,
       COALESCE(v.decision, 'error') AS decision,
       COUNT(*) AS verifications,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY v.latency_ms) AS latency_p50_ms,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY v.latency_ms) AS latency_p95_ms,
       COALESCE(SUM(c.credits), 0)::bigint AS credits
FROM verifications v
LEFT JOIN (SELECT verification_id, -SUM(amount) AS credits FROM credit_ledger
           WHERE kind = 'charge' GROUP BY verification_id) c ON c.verification_id = v.id
GROUP BY 1, 2, 3, 4;

-- Each verification a shadow provider also scored: the deciding provider's answer and the
-- shadow's, each judged against the verification's threshold.
CREATE OR REPLACE VIEW livegate_shadow_pairs AS
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

-- How two providers agree on a tenant's own traffic, per UTC day.
CREATE OR REPLACE VIEW livegate_provider_agreement AS
SELECT tenant_id, primary_provider, shadow_provider,
       (created_at AT TIME ZONE 'UTC')::date AS day,
       COUNT(*) AS pairs,
       AVG(CASE WHEN primary_approved = shadow_approved THEN 1.0 ELSE 0.0 END)::double precision
           AS agreement,
       AVG(ABS(primary_score - shadow_score)) AS mean_abs_score_diff,
       COUNT(*) FILTER (WHERE primary_approved AND shadow_approved) AS both_approved,
       COUNT(*) FILTER (WHERE primary_approved AND NOT shadow_approved)
           AS primary_approved_shadow_declined,
       COUNT(*) FILTER (WHERE NOT primary_approved AND shadow_approved)
           AS primary_declined_shadow_approved,
       COUNT(*) FILTER (WHERE NOT primary_approved AND NOT shadow_approved) AS both_declined
FROM livegate_shadow_pairs
GROUP BY 1, 2, 3, 4;

-- Failed provider calls by provider and error code.
CREATE OR REPLACE VIEW livegate_attempt_errors AS
SELECT provider, error_code, COUNT(*) AS attempts, MAX(created_at) AS last_seen
FROM verification_attempts WHERE outcome = 'error'
GROUP BY provider, error_code;

-- Every `review` decision with its resolution, if any.
CREATE OR REPLACE VIEW livegate_review_queue AS
SELECT v.id AS verification_id, v.tenant_id, v.created_at, v.provider, v.score, v.threshold,
       v.warnings,
       CASE WHEN r.verification_id IS NULL THEN 'open' ELSE r.decision END AS status,
       r.reviewer, r.reason, r.resolved_by, r.created_at AS resolved_at
FROM verifications v LEFT JOIN reviews r ON r.verification_id = v.id
WHERE v.decision = 'review';
