from django.http import HttpResponse, JsonResponse

from accounts.ratelimit import UNAVAILABLE, UNAVAILABLE_MESSAGE


def ratelimited(request, exception=None):
    """django-ratelimit's answer (RATELIMIT_VIEW): 429, JSON on API paths."""
    if request.path.startswith("/admin/migrations/"):
        return JsonResponse(
            {"error": "rate limited", "message": "too many requests; slow down"}, status=429
        )
    return HttpResponse("Too many requests; slow down.", status=429, content_type="text/plain")


def rate_limiter_unavailable(request):
    """503 when a request cannot be counted (accounts.ratelimit): JSON on API paths."""
    if request.path.startswith("/admin/migrations/"):
        return JsonResponse({"error": UNAVAILABLE, "message": UNAVAILABLE_MESSAGE}, status=503)
    return HttpResponse(
        f"Service unavailable: {UNAVAILABLE_MESSAGE}.", status=503, content_type="text/plain"
    )
