-- Password hashes and API keys; secrets are stored hashed only.
CREATE TABLE credentials (
    subject_id     uuid PRIMARY KEY REFERENCES subjects (id) ON DELETE CASCADE,
    password_hash  text NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_id   uuid NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    prefix       text NOT NULL UNIQUE,
    key_hash     text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
