-- The request id the server made, beside request_id (the caller's X-Request-Id when it sent
-- one): a row never identifies its request by an id the caller chose. NULL on rows written
-- before this column existed, whose request_id may be the caller's.
ALTER TABLE audit_log ADD COLUMN server_request_id TEXT;
