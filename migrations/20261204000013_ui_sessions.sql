-- Sessions of the web console (/ui). A browser logs in with an API token once and then
-- carries only a random session id in an HttpOnly cookie. Only the SHA-256 of that id
-- is stored, so a leaked database holds no usable session; the CSRF secret is compared
-- with the hidden field of every form. A session lives until expires_at (judged by
-- Postgres' now()) and ends with its token: a revoked token's sessions stop working at
-- once (the lookup joins the live token) and go when the token row goes. Written only by
-- `worker/src/ui/session.rs`.
CREATE TABLE highway.ui_sessions (
    id_sha256   text PRIMARY KEY CHECK (id_sha256 ~ '^[0-9a-f]{64}$'),
    token_id    uuid NOT NULL REFERENCES highway.api_tokens (id) ON DELETE CASCADE,
    csrf_secret text NOT NULL CHECK (csrf_secret ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires_idx ON highway.ui_sessions (expires_at);
CREATE INDEX ui_sessions_token_idx ON highway.ui_sessions (token_id);
