from django.apps import AppConfig


class PersistenceConfig(AppConfig):
    name = "persistence"
