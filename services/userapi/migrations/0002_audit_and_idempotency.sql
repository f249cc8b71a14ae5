-- Who changed what, when, through which request. Never secrets or passwords: only field names.
CREATE TABLE IF NOT EXISTS audit_log (
    id             TEXT PRIMARY KEY,
    occurred_at    TIMESTAMPTZ NOT NULL,
    actor          TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    action         TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    changed_fields JSONB NOT NULL DEFAULT '[]',
    request_id     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target_user_id, occurred_at);

-- Idempotency-Key records of create-user: the stored response is replayed on a retry; a
-- record left 'pending' with an Auth0 user id is finished by the next retry.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    endpoint        TEXT NOT NULL,
    actor           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    locked_until    TIMESTAMPTZ NOT NULL,
    auth0_user_id   TEXT,
    response_status INTEGER,
    response_body   JSONB,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (endpoint, actor, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
