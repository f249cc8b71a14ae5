-- The app's own row per Auth0 user. Written in the SQL both PostgreSQL and SQLite accept
-- (SQLite maps the JSONB / TIMESTAMPTZ names to converters in adapters/database.py).
CREATE TABLE IF NOT EXISTS accounts (
    user_id     TEXT PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 255),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    plan        TEXT NOT NULL DEFAULT 'free' CHECK (length(plan) BETWEEN 1 AND 64),
    preferences JSONB NOT NULL DEFAULT '{}'
);
