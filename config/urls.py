from django.contrib import admin
from django.urls import path

from activation.views import health_chip_activator, salvy_webhook
from chipfarm.views import slack_command
from config import views
from config.api import api
from config.metrics import metrics
from instances.views import activation_link, evolution_webhook

urlpatterns = [
    path("health", views.health, name="health"),
    path("health/deep", views.health_deep, name="health-deep"),
    path("health/chips", views.health_chips, name="health-chips"),
    path("health/instances", views.health_instances, name="health-instances"),
    path("health/chip-activator", health_chip_activator, name="health-chip-activator"),
    path("metrics", metrics, name="metrics"),
    path("webhooks/evolution", evolution_webhook, name="webhook-evolution"),
    path("webhooks/salvy", salvy_webhook, name="webhook-salvy"),
    path("webhooks/slack/commands", slack_command, name="webhook-slack-commands"),
    path("activation/link/<str:token>", activation_link, name="activation-link"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
