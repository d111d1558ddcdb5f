from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


def _outbox_alert(kind: str, severity: str, message: str, dedup_key: str) -> None:
    """The outbox's alerts (a consumer endpoint disabled) become pool alerts: it cannot import chips."""
    from chips.services import alert_raise

    alert_raise(kind=kind, severity=severity, message=message, dedup_key=dedup_key)


class ChipsConfig(AppConfig):
    name = "chips"
    verbose_name = _("Chips")

    def ready(self) -> None:
        from outbox.services import register_alert_hook

        register_alert_hook(_outbox_alert)
