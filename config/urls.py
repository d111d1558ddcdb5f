from django.contrib import admin
from django.urls import path

from config import views
from config.api import api
from instances.views import evolution_webhook

urlpatterns = [
    path("health", views.health, name="health"),
    path("health/chips", views.health_chips, name="health-chips"),
    path("health/instances", views.health_instances, name="health-instances"),
    path("webhooks/evolution", evolution_webhook, name="webhook-evolution"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
