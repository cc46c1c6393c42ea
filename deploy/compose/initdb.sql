-- The console's own database (users, tokens, runs, audit); `app` is the target.
CREATE DATABASE console;
