from django.apps import AppConfig


class WarmerConfig(AppConfig):
    name = "warmer"
