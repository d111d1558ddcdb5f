"""Production settings: secrets only from the environment, HTTPS everywhere."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import LOGGING, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics"]
# Webhooks never go to private addresses; a consumer inside our network is named in WEBHOOK_ALLOWED_HOSTS.
WEBHOOK_ALLOW_PRIVATE_TARGETS = False

# One JSON object per line for the log collector, unless LOG_FORMAT=plain says otherwise.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
if LOG_FORMAT not in LOGGING["formatters"]:
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
