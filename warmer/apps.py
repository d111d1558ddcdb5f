from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WarmerConfig(AppConfig):
    name = "warmer"
    verbose_name = _("Warming")

    def ready(self) -> None:
        # A warming chip's caps are its phase's plan: the router (instances, below) reads them through a provider.
        from instances import caps
        from warmer.services import phase_caps

        caps.register_phase_caps(phase_caps)
