from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InstancesConfig(AppConfig):
    verbose_name = _("Sending and sessions")
    name = "instances"

    def ready(self) -> None:
        # The chip API shows the caps in effect; chips cannot import instances, so instances registers them.
        from chips import selectors
        from instances.caps import capacity_summary

        selectors.register_detail_section("capacity", capacity_summary)
