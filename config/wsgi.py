import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
application = get_wsgi_application()

# What the first request would load (the URLconf: every view and the admin), loaded now, and everything the process
# holds so far kept out of the garbage collector's full passes (gc.freeze): a long-lived object is never garbage,
# and a full pass over them all is a pause every request in the process waits out.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
gc.freeze()
