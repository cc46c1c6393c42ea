from django.http import HttpResponse, JsonResponse


def ratelimited(request, exception=None):
    """django-ratelimit's answer (RATELIMIT_VIEW): 429, JSON on API paths."""
    if request.path.startswith("/admin/migrations/"):
        return JsonResponse(
            {"error": "rate limited", "message": "too many requests; slow down"}, status=429
        )
    return HttpResponse("Too many requests; slow down.", status=429, content_type="text/plain")
