"""A site's URLconf that forgot ``include("customersync.urls")``."""

urlpatterns: list = []
