from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChipfarmConfig(AppConfig):
    name = "chipfarm"
    verbose_name = _("Pool")

    def ready(self) -> None:
        # The lifecycle guards (chips) read the operator's thresholds from the pool configuration.
        from chipfarm.pool import pool_limits
        from chips import policy

        policy.register_provider(pool_limits)
