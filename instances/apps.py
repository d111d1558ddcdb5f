from django.apps import AppConfig


class InstancesConfig(AppConfig):
    name = "instances"

    def ready(self) -> None:
        # The chip API shows the caps in effect; chips cannot import instances, so instances registers them.
        from chips import selectors
        from instances.caps import capacity_summary

        selectors.register_detail_section("capacity", capacity_summary)
