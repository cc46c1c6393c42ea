"""Two small middlewares.

``ProbeMiddleware`` (first in MIDDLEWARE) answers ``/healthz``, ``/readyz`` and
``/metrics`` before Django validates the Host header or redirects to HTTPS:
kubelet probes, Docker HEALTHCHECK and Prometheus call a pod by IP over plain
HTTP. None of the three builds a URL from the Host header; ``/metrics`` keeps
its own client-IP allowlist.

``ContentSecurityPolicyMiddleware`` puts ``settings.CONTENT_SECURITY_POLICY`` on
every response (Django 5.2 has none built in); a view that sets its own header
keeps it. Everything is served by the console itself (no CDN), so ``'self'`` is
enough; scripts must live in static files, never inline.
"""

from django.conf import settings

HEADER = "Content-Security-Policy"


class ProbeMiddleware:
    def __init__(self, get_response):
        from migration_console.ops import health, metrics

        self.get_response = get_response
        self.views = {
            "/healthz": health.healthz,
            "/readyz": health.readyz,
            "/metrics": metrics.metrics,
        }

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is not None:
            return view(request)
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", "")
        if policy and HEADER not in response:
            response[HEADER] = policy
        return response
