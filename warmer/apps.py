from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WarmerConfig(AppConfig):
    name = "warmer"
    verbose_name = _("Warming")
