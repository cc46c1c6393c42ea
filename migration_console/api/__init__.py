"""The JSON API (SPEC: JSON API): status, run and history under /admin/migrations/.

A django-ninja ``NinjaAPI`` (``service.api``) routes and validates each operation
and generates the OpenAPI document from its schemas (``schemas``); the guard
``endpoint.guarded`` runs first (rate limit, method, authentication, CSRF, access,
audit of denials, errors as JSON), so an operation is a short function.
"""
