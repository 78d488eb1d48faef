-- Tender documents uploaded through the application (one row per stored file).
CREATE TABLE tender_document (
    id          bigserial PRIMARY KEY,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    name        text        NOT NULL,
    size        bigint      NOT NULL CHECK (size >= 0),
    sha256      char(64)    NOT NULL,
    path        text        NOT NULL UNIQUE
);
CREATE INDEX tender_document_uploaded_at ON tender_document (uploaded_at);
-- The health check inserts here and rolls back: proof the database accepts writes.
CREATE TABLE health_probe (at timestamptz NOT NULL);
