from django.urls import path

from bench import views
from langrun.urls import handler404  # noqa: F401 - the product's 404 handler
from langrun.urls import urlpatterns as product_urlpatterns

urlpatterns = [path("bench/baseline", views.baseline, name="bench-baseline"), *product_urlpatterns]
