"""The rollout in the admin, for Rollout operators (docs/architecture.md §7): the flags with their state and
percentage;
one-click stages (Internal → Beta → 25 % → 50 % → 100 %) with a mandatory reason; a cohort preview and a
confirmation before any change is saved (and an explicit one for a stage skip); the kill switch; an
"explain" view; the flag's history from the audit log; reshuffling the salt; retiring.

Every write goes through ``flags.services`` with the version the operator's page was built from: a save
that raced another operator's gets a message and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.actors import Actor

from .exceptions import FlagConflict, FlagError
from .forms import FlagForm, ReasonForm, StageForm, percentage_of
from .models import Flag
from .services import (
    flag_cohort_preview,
    flag_explain,
    flag_history,
    flag_reshuffle_salt,
    flag_retire,
    flag_retirement,
    flag_set_stage,
    flag_stage_index,
    flag_stage_skips,
    flag_state,
    flag_trip_kill_switch,
    flag_update,
    stage_changes,
)
from .stages import BY_KEY, STAGES, next_stage

HISTORY_ON_PAGE = 20


def _state(flag: Flag) -> str:
    if flag.retired:
        return "Retired (on for everyone)"
    if flag.kill_switch:
        return "KILLED"
    return "On" if flag.enabled else "Off"


def _stage_label(flag: Flag) -> str:
    index = flag_stage_index(flag)
    if index < 0:
        return "—"
    stage = STAGES[index]
    exact = stage_changes(stage)["rollout_basis_points"] == flag.rollout_basis_points
    return stage.label if exact and stage.beta == flag.beta_enabled else f"{stage.label}+"


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    list_display = ("name", "state", "rollout", "stage", "changed_by", "changed_at", "version")
    list_display_links = ("name",)
    search_fields = ("name", "description")
    actions = None

    @admin.display(description="State")
    def state(self, flag: Flag) -> str:
        return format_html('<span class="flag-state">{}</span>', _state(flag))

    @admin.display(description="Rollout", ordering="rollout_basis_points")
    def rollout(self, flag: Flag) -> str:
        return f"{percentage_of(flag.rollout_basis_points)} %"

    @admin.display(description="Stage")
    def stage(self, flag: Flag) -> str:
        return _stage_label(flag)

    # Flags come with migrations; they are changed and retired here, never added or deleted.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/stage/<str:stage>/", view(self.stage_view), name="flags_flag_stage"),
            path("<path:object_id>/kill/", view(self.kill_view), name="flags_flag_kill"),
            path("<path:object_id>/reshuffle/", view(self.reshuffle_view), name="flags_flag_reshuffle"),
            path("<path:object_id>/retire/", view(self.retire_view), name="flags_flag_retire"),
            path("<path:object_id>/explain/", view(self.explain_view), name="flags_flag_explain"),
            *super().get_urls(),
        ]

    # --- shared -----------------------------------------------------------------------------------

    def _flag(self, request: HttpRequest, object_id: str, *, change: bool) -> Flag:
        flag = get_object_or_404(Flag.objects.select_related("changed_by"), pk=object_id)
        allowed = (
            self.has_change_permission(request, flag) if change else self.has_view_permission(request, flag)
        )
        if not allowed:
            raise PermissionDenied
        return flag

    def _context(self, request: HttpRequest, flag: Flag, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "flag": flag,
            "title": title,
            "flag_state": _state(flag),
            "flag_stage": _stage_label(flag),
            "flag_percentage": percentage_of(flag.rollout_basis_points),
            "has_change_permission": self.has_change_permission(request, flag),
            **extra,
        }

    def _change_url(self, flag: Flag) -> str:
        return reverse("admin:flags_flag_change", args=[flag.pk])

    def _write(self, request: HttpRequest, flag: Flag, call: Any, done: str) -> HttpResponse | None:
        """Run a service call; on success a message and a redirect, on a refusal a message and ``None``."""
        try:
            updated = call()
        except FlagConflict as exc:
            messages.error(request, exc.detail)
            return HttpResponseRedirect(self._change_url(flag))
        except FlagError as exc:
            messages.error(request, exc.detail)
            return None
        messages.success(request, f"{done} {updated.name} is now at version {updated.version}.")
        return HttpResponseRedirect(self._change_url(flag))

    def _actor(self, request: HttpRequest) -> dict[str, Any]:
        return {"actor": Actor.for_user(request.user), "user": request.user, "request": request}

    # --- the change page: form, review (preview + confirmation), save -----------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        flag = self._flag(request, object_id, change=request.method == "POST")
        can_change = self.has_change_permission(request, flag) and not flag.retired
        review = None
        if request.method == "POST" and can_change:
            form = FlagForm(request.POST)
            if form.is_valid():
                changes = form.changes(flag)
                if not changes:
                    messages.info(request, "Nothing changed.")
                    return HttpResponseRedirect(self._change_url(flag))
                token = _token(changes, form.cleaned_data["version"])
                skips = flag_stage_skips(flag, changes)
                confirmed = form.cleaned_data["confirm"] == token
                skip_refused = confirmed and bool(skips) and not form.cleaned_data["confirm_skip"]
                confirmed = confirmed and not skip_refused
                if confirmed:
                    response = self._write(
                        request,
                        flag,
                        lambda: flag_update(
                            name=flag.name,
                            expected_version=form.cleaned_data["version"],
                            changes=changes,
                            reason=form.cleaned_data["reason"],
                            **self._actor(request),
                        ),
                        "Saved:",
                    )
                    if response is not None:
                        return response
                else:
                    try:
                        preview = flag_cohort_preview(flag, changes)
                    except FlagError as exc:
                        form.add_error(None, exc.detail)
                    else:
                        data = request.POST.copy()
                        data["confirm"] = token
                        form = FlagForm(data)
                        form.is_valid()
                        if skip_refused:
                            form.add_error(
                                "confirm_skip", "This change skips stages: confirm the skip to save it."
                            )
                        review = {
                            "changes": _readable(flag, changes),
                            "preview": preview,
                            "skips": [s.label for s in skips],
                        }
        else:
            form = FlagForm(initial=FlagForm.initial_for(flag))
        current = flag_stage_index(flag)
        context = self._context(
            request,
            flag,
            f"Rollout: {flag.name}",
            form=form,
            review=review,
            can_change=can_change,
            stages=[
                {"stage": s, "current": i == current, "next": i == current + 1, "skip": i > current + 1}
                for i, s in enumerate(STAGES)
            ],
            next_stage=next_stage(current),
            retirement=flag_retirement(flag),
            history=list(flag_history(flag)[:HISTORY_ON_PAGE]),
            **(extra_context or {}),
        )
        return TemplateResponse(request, "admin/flags/flag/change.html", context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        flag = self._flag(request, object_id, change=False)
        context = self._context(
            request, flag, f"History: {flag.name}", history=list(flag_history(flag)[:500])
        )
        return TemplateResponse(request, "admin/flags/flag/history.html", context)

    # --- stage, kill switch, reshuffle, retire ----------------------------------------------------

    def stage_view(self, request: HttpRequest, object_id: str, stage: str) -> HttpResponse:
        flag = self._flag(request, object_id, change=True)
        target = BY_KEY.get(stage)
        if target is None:
            raise Http404("No such stage.")
        changes = stage_changes(target)
        skips = flag_stage_skips(flag, changes)
        form = StageForm(request.POST or None, initial={"version": flag.version})
        if request.method == "POST" and form.is_valid():
            if skips and not form.cleaned_data["confirm_skip"]:
                form.add_error("confirm_skip", "This move skips stages: confirm the skip to make it.")
            else:
                response = self._write(
                    request,
                    flag,
                    lambda: flag_set_stage(
                        name=flag.name,
                        stage=target.key,
                        expected_version=form.cleaned_data["version"],
                        reason=form.cleaned_data["reason"],
                        confirm_skip=bool(skips),
                        **self._actor(request),
                    ),
                    f"Moved to {target.label}:",
                )
                if response is not None:
                    return response
        context = self._context(
            request,
            flag,
            f"Move {flag.name} to {target.label}",
            form=form,
            target=target,
            preview=flag_cohort_preview(flag, changes),
            skips=[s.label for s in skips],
            hold_hours=target.hold_hours,
            action="stage",
        )
        return TemplateResponse(request, "admin/flags/flag/action.html", context)

    def kill_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        flag = self._flag(request, object_id, change=True)
        return self._simple_action(
            request,
            flag,
            title=f"Kill switch: {flag.name}",
            action="kill",
            call=lambda form: flag_trip_kill_switch(
                name=flag.name, reason=form.cleaned_data["reason"], **self._actor(request)
            ),
            done="Kill switch on:",
        )

    def reshuffle_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        flag = self._flag(request, object_id, change=True)
        return self._simple_action(
            request,
            flag,
            title=f"Reshuffle the cohort of {flag.name}",
            action="reshuffle",
            call=lambda form: flag_reshuffle_salt(
                name=flag.name,
                expected_version=form.cleaned_data["version"],
                reason=form.cleaned_data["reason"],
                **self._actor(request),
            ),
            done="New salt:",
        )

    def retire_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        flag = self._flag(request, object_id, change=True)
        return self._simple_action(
            request,
            flag,
            title=f"Retire {flag.name}",
            action="retire",
            call=lambda form: flag_retire(
                name=flag.name,
                expected_version=form.cleaned_data["version"],
                reason=form.cleaned_data["reason"],
                **self._actor(request),
            ),
            done="Retired:",
            retirement=flag_retirement(flag),
        )

    def _simple_action(
        self, request: HttpRequest, flag: Flag, *, title: str, action: str, call: Any, done: str, **extra: Any
    ) -> HttpResponse:
        form = ReasonForm(request.POST or None, initial={"version": flag.version})
        if request.method == "POST" and form.is_valid():
            response = self._write(request, flag, lambda: call(form), done)
            if response is not None:
                return response
        context = self._context(request, flag, title, form=form, action=action, **extra)
        return TemplateResponse(request, "admin/flags/flag/action.html", context)

    # --- explain ----------------------------------------------------------------------------------

    def explain_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        flag = self._flag(request, object_id, change=False)
        username = request.GET.get("user", "").strip()
        decision = subject = None
        error = ""
        if username:
            user_model = get_user_model()
            subject = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
            if subject is None:
                error = f"No user named {username!r}."
            else:
                decision = flag_explain(flag.name, subject)
        context = self._context(
            request,
            flag,
            f"Explain: {flag.name}",
            username=username,
            subject=subject,
            decision=decision,
            error=error,
        )
        return TemplateResponse(request, "admin/flags/flag/explain.html", context)


def _token(changes: dict[str, Any], version: int) -> str:
    """Names the exact change a review page showed: saving needs the same change from the same version."""
    payload = json.dumps({"changes": changes, "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _readable(flag: Flag, changes: dict[str, Any]) -> list[dict[str, Any]]:
    state = flag_state(flag)
    rows = []
    for key, new in changes.items():
        old = state[key]
        if key == "rollout_basis_points":
            key, old, new = "rollout", f"{percentage_of(old)} %", f"{percentage_of(new)} %"
        rows.append({"field": key.replace("_", " "), "old": old, "new": new})
    return rows
