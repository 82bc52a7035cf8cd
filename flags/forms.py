"""The admin's flag forms: the percentage is entered and shown as 0–100 with up to two decimals, users by
username; every change carries a reason."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from .bucketing import BUCKETS
from .models import Flag
from .services import flag_state


def percentage_of(basis_points: int) -> Decimal:
    return (Decimal(basis_points) / 100).quantize(Decimal("0.01"))


class UsernamesField(forms.Field):
    widget = forms.Textarea(attrs={"rows": 2, "cols": 60})

    def to_python(self, value: Any) -> list[str]:
        text = str(value or "").strip()
        return sorted({name for name in re.split(r"[\s,]+", text) if name})

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def validate(self, value: list[str]) -> None:
        user_model = get_user_model()
        known = set(
            user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": value}).values_list(
                user_model.USERNAME_FIELD, flat=True
            )
        )
        missing = [name for name in value if name not in known]
        if missing:
            raise forms.ValidationError(f"No such user(s): {', '.join(missing)}.", code="unknown_user")


class ReasonForm(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(
        max_length=500,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Why: recorded in the audit log with the change.",
    )


class StageForm(ReasonForm):
    confirm_skip = forms.BooleanField(required=False, label="Yes, skip the stages listed above")


class FlagForm(ReasonForm):
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    enabled = forms.BooleanField(required=False)
    kill_switch = forms.BooleanField(required=False, help_text="Switches the feature off for everyone (503).")
    percentage = forms.DecimalField(
        min_value=0,
        max_value=100,
        max_digits=5,
        decimal_places=2,
        label="Rollout (%)",
        help_text="Share of all users included by bucket: 0–100 with up to two decimals (12.34).",
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0", "max": "100"}),
    )
    internal_group = forms.ModelChoiceField(Group.objects.order_by("name"), required=False)
    beta_group = forms.ModelChoiceField(Group.objects.order_by("name"), required=False)
    beta_enabled = forms.BooleanField(required=False, label="Beta group included")
    allow_users = UsernamesField(required=False, help_text="Usernames always included (after the deny list).")
    deny_users = UsernamesField(required=False, help_text="Usernames never included.")
    confirm = forms.CharField(required=False, widget=forms.HiddenInput)
    confirm_skip = forms.BooleanField(required=False, label="Yes, skip the stages listed above")

    field_order = [
        "description",
        "enabled",
        "kill_switch",
        "percentage",
        "internal_group",
        "beta_group",
        "beta_enabled",
        "allow_users",
        "deny_users",
        "reason",
        "version",
        "confirm",
        "confirm_skip",
    ]

    @classmethod
    def initial_for(cls, flag: Flag) -> dict[str, Any]:
        state = flag_state(flag)
        return {
            **{k: state[k] for k in ("description", "enabled", "kill_switch", "beta_enabled")},
            "percentage": percentage_of(flag.rollout_basis_points),
            "internal_group": flag.internal_group_id,
            "beta_group": flag.beta_group_id,
            "allow_users": state["allow_users"],
            "deny_users": state["deny_users"],
            "version": flag.version,
        }

    def changes(self, flag: Flag) -> dict[str, Any]:
        """The fields whose submitted value differs from the flag's (groups by name, users by username)."""
        data = self.cleaned_data
        state = flag_state(flag)
        proposed: dict[str, Any] = {
            "description": data["description"],
            "enabled": data["enabled"],
            "kill_switch": data["kill_switch"],
            "beta_enabled": data["beta_enabled"],
            "rollout_basis_points": int(data["percentage"] * 100),
            "internal_group": data["internal_group"].name if data["internal_group"] else None,
            "beta_group": data["beta_group"].name if data["beta_group"] else None,
            "allow_users": data["allow_users"],
            "deny_users": data["deny_users"],
        }
        assert 0 <= proposed["rollout_basis_points"] <= BUCKETS  # the field's bounds
        return {key: value for key, value in proposed.items() if state[key] != value}
