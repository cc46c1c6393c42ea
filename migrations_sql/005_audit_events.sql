-- Login and permission-change events, kept for compliance.
CREATE TABLE auth_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_id  uuid REFERENCES subjects (id) ON DELETE SET NULL,
    event       text NOT NULL,
    client_ip   inet,
    occurred_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX auth_events_tenant_time_idx ON auth_events (tenant_id, occurred_at DESC);
