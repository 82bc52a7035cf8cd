from django.apps import AppConfig


class ErphubConfig(AppConfig):
    name = "erphub"
    verbose_name = "ERP Hub"
