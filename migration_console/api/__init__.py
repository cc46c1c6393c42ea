"""The JSON API (SPEC: JSON API): status, run and history under /admin/migrations/.

Views only translate HTTP to service calls; ``endpoint.api_endpoint`` does the
rest (rate limit, method, authentication, CSRF, access, audit of denials,
errors as JSON), so a new endpoint is a short function.
"""
