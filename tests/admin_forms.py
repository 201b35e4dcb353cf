"""Helpers for tests that submit Django admin forms."""

from __future__ import annotations


def form_data(response) -> dict:
    """The POST data of an admin change form as it was rendered, inlines included."""
    context = response.context
    forms = [context["adminform"].form]
    for inline in context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data: dict = {}
    for form in forms:
        for field in form:
            value = field.value()
            if value is None:
                value = ""
            if isinstance(value, bool):
                if value:
                    data[field.html_name] = "on"
                continue
            data[field.html_name] = value
    return data
