from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ActivationConfig(AppConfig):
    verbose_name = _("Activation")
    name = "activation"
