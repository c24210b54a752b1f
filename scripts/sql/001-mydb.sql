-- The tables of the two jobs vigil was born from, in database mydb.
-- Run by scripts/stack up (native) and by the init step of
-- docker-compose.yml. Idempotent: safe to run on every start.

-- The CDC walkthrough table.
CREATE TABLE IF NOT EXISTS activity (
    id    INT PRIMARY KEY,
    name  TEXT,
    email TEXT
);

-- Fraud detection input. Debezium keys this table's records by user_id
-- (message.key.columns), so a user's rows share a Kafka partition.
CREATE TABLE IF NOT EXISTS transactions (
    id         BIGSERIAL PRIMARY KEY,
    user_id    INT NOT NULL,
    amount     NUMERIC(10, 2) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    merchant   TEXT,
    country    TEXT
);
-- FULL: a delete's "before" image carries user_id too, so the connector
-- can still key it by user.
ALTER TABLE transactions REPLICA IDENTITY FULL;

-- Temperature batch job input: one reading a minute per sensor.
CREATE TABLE IF NOT EXISTS temperature_readings (
    id          BIGSERIAL PRIMARY KEY,
    sensor_id   TEXT NOT NULL,
    temperature DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS temperature_readings_recorded_at
    ON temperature_readings (recorded_at);
