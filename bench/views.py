from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bench.models import BaselineRow


@csrf_exempt
@require_POST
def baseline(request):
    """Insert one row and answer 202: the floor that the webhook is compared with."""
    row = BaselineRow.objects.create(body=request.body.decode("utf-8", "replace"))
    return JsonResponse({"id": row.pk}, status=202)
