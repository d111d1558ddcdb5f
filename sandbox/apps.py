from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """The fake providers (Evolution, Salvy, the activator, Slack, a demo consumer) for the demo and the tests.

    Installed only where its requirements (requirements-sandbox.txt) are: no product app imports it.
    """

    name = "sandbox"
    verbose_name = "Sandbox"
