-- Triggers on syncsvc's own tables (the capture triggers on application tables belong to
-- each target: syncsvc/statements.py).

CREATE OR REPLACE TRIGGER query_request_key BEFORE INSERT OR UPDATE ON syncsvc.query_requests FOR EACH ROW EXECUTE FUNCTION syncsvc.query_request_key();

CREATE OR REPLACE TRIGGER forget_inbox AFTER DELETE ON syncsvc.targets REFERENCING OLD TABLE AS old_targets FOR EACH STATEMENT EXECUTE FUNCTION syncsvc.forget_inbox();
