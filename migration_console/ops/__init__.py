"""Operations: health and readiness probes, Prometheus metrics, webhook notifications,
start-up behaviour (SKIP_MIGRATIONS, REDIS_URL) and the Content-Security-Policy header."""
