DROP TABLE IF EXISTS auth_events;
