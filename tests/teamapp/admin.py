"""The site's own admin of its team: the mixin in the bases and the profile as an inline."""

from django.contrib import admin

from customersync.admin.owner import OwnerAdminMixin

from .models import Team, TeamProfile


class TeamProfileInline(admin.StackedInline):
    model = TeamProfile
    can_delete = False


@admin.register(Team)
class TeamAdmin(OwnerAdminMixin, admin.ModelAdmin):
    list_display = ("name", "plan")
    inlines = [TeamProfileInline]
