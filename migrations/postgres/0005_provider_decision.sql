-- The provider's own decision (approved, declined, review) next to livegate's.
ALTER TABLE verifications ADD COLUMN provider_decision TEXT;
