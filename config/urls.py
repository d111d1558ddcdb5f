from django.contrib import admin
from django.urls import path

from config import views
from config.api import api

urlpatterns = [
    path("health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
