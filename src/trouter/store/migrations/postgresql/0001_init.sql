-- trouter store, version 1: decisions, feedback events, background labels.
-- Times are UNIX seconds (UTC); JSON columns hold text.
CREATE TABLE decisions (
    request_id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    router TEXT NOT NULL,
    router_version TEXT,
    pool TEXT,
    policy TEXT,
    weights TEXT,
    cell INTEGER,
    features TEXT,
    utilities TEXT,
    model TEXT NOT NULL,
    propensity DOUBLE PRECISION NOT NULL,
    explored INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    predicted_cost_usd DOUBLE PRECISION,
    cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    upstream_status INTEGER,
    fallbacks INTEGER NOT NULL DEFAULT 0,
    query_hash TEXT,
    query_text TEXT
);
CREATE INDEX decisions_created ON decisions (created_at);
CREATE INDEX decisions_expires ON decisions (expires_at);

CREATE TABLE feedback (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX feedback_request ON feedback (request_id);
CREATE INDEX feedback_created ON feedback (created_at);

CREATE TABLE labels (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    request_id TEXT,
    scores TEXT NOT NULL,
    costs TEXT,
    judge TEXT,
    spend_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX labels_created ON labels (created_at);
