-- Refresh-token sessions, expired by a periodic job.
CREATE TABLE sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject_id    uuid NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    refresh_hash  text NOT NULL UNIQUE,
    user_agent    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
