from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChipfarmConfig(AppConfig):
    name = "chipfarm"
    verbose_name = _("Pool")
