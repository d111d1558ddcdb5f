"""Test settings: the same real PostgreSQL and Redis, isolated by database and key prefix."""

from .base import *  # noqa: F403
from .base import CACHES, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES["default"]["LOCATION"] = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/14")
CACHES["default"]["KEY_PREFIX"] = "chipfarm-test"
CELERY_BROKER_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/14")
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
LANGUAGE_CODE = "en"
# The test consumers listen on loopback.
WEBHOOK_ALLOW_PRIVATE_TARGETS = True
# Static files are not collected for tests; whitenoise would warn on every request.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]  # noqa: F405
# No background vacuum of the capacity table (its own connection would outlive a test and hold the test database
# open at teardown); the test of it turns it on.
CAPACITY_VACUUM_EVERY = 0
