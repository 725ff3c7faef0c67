-- The plant's system of record (PostgreSQL >= 12): one database, one role for the nodes.
-- Every node applies the schema migrations itself at start (serialised by an advisory
-- lock, so nodes may start together); predictions.node says which node recorded a row.
--   sudo -u postgres psql -f examples/plant/postgresql.sql
CREATE ROLE defectnet LOGIN PASSWORD 'change-me';
CREATE DATABASE defectnet OWNER defectnet;
-- synchronous_commit stays on (the default): a prediction is acknowledged to the
-- camera's broker only after its commit is durable.
