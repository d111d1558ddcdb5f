from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChipfarmConfig(AppConfig):
    name = "chipfarm"
    verbose_name = _("Pool")

    def ready(self) -> None:
        # The lifecycle guards (chips) read the operator's thresholds from the pool configuration.
        from chipfarm.brain import chip_health_summary
        from chipfarm.pool import pool_limits
        from chipfarm.provisioning import chip_release_summary
        from chips import policy, selectors

        policy.register_provider(pool_limits)
        selectors.register_detail_section("release", chip_release_summary)
        selectors.register_detail_section("health", chip_health_summary)
