-- trouter store, version 3: a ledger of background spend (each label or judgement job,
-- finished or not), so that the daily background budget is the store's, shared by every
-- worker and replica, and the traffic report shows the judge's spend too.
CREATE TABLE background_spend (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX background_spend_created ON background_spend (created_at);
-- the labels' spend recorded before this version, as ledger rows of the same ids
INSERT INTO background_spend (event_id, kind, usd, created_at, expires_at)
SELECT request_id || ':label', 'label', spend_usd, created_at, expires_at
FROM labels WHERE spend_usd > 0 AND request_id IS NOT NULL;
