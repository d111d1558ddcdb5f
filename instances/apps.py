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

        # A chip saved here (created, or moved into a state that sends) may still lack its capacity row: the next
        # refused reservation looks for such chips at once instead of within ROWS_CHECK_SECONDS.
        from django.db.models.signals import post_save

        from chips.models import Chip
        from instances.models import ChipCapacity
        from instances.pool_full import pool_room_changed
        from instances.reservations import rows_check_soon

        post_save.connect(rows_check_soon, sender=Chip, dispatch_uid="instances.rows_check_soon")
        # A chip or a capacity row saved here (connected, promoted, a cap raised) may give a full pool room: this
        # process's routing stops taking the pool for full at once (instances.pool_full).
        post_save.connect(pool_room_changed, sender=Chip, dispatch_uid="instances.pool_room_changed")
        post_save.connect(pool_room_changed, sender=ChipCapacity, dispatch_uid="instances.pool_room_changed.cap")
