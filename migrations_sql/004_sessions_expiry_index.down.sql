-- migrate:no-transaction
DROP INDEX CONCURRENTLY IF EXISTS sessions_expires_at_idx;
