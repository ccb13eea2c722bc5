"""Fill the admin change form the way a browser does: from the rendered page."""

from __future__ import annotations

from html.parser import HTMLParser

from django.urls import reverse


class _FormParser(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id, self.inside, self.data = form_id, False, {}
        self._textarea = self._select = None
        self._multiple = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = attrs.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self.data[name] = attrs.get("value", "on")
            elif kind not in ("submit", "button", "file"):
                self.data[name] = attrs.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self._select, self._multiple = name, "multiple" in attrs
            self.data.setdefault(name, [] if self._multiple else "")
        elif tag == "option" and self._select and "selected" in attrs:
            if self._multiple:
                self.data[self._select].append(attrs.get("value", ""))
            else:
                self.data[self._select] = attrs.get("value", "")

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data.removeprefix("\n") if not self.data[self._textarea] else data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            if self._multiple and not self.data[self._select]:
                del self.data[self._select]  # a browser sends nothing for an empty multiple select
            self._select, self._multiple = None, False
        elif tag == "form" and self.inside:
            self.inside = False


def change_url(customer) -> str:
    return reverse("admin:customersync_customer_change", args=[customer.pk])


def form_data(client, customer) -> dict[str, str]:
    """The change form's fields as the page renders them."""
    return form_data_at(client, change_url(customer), "customer_form")


def form_data_at(client, url: str, form_id: str) -> dict:
    """The fields of the form ``form_id`` on the page at ``url``, as a browser would send them."""
    page = client.get(url).content.decode()
    parser = _FormParser(form_id)
    parser.feed(page)
    return parser.data


def set_rows(data: dict, name: str, columns: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    a, b = columns
    for key in [k for k in data if k.startswith(f"{name}_") and k.endswith((f"_{a}", f"_{b}"))]:
        data[key] = ""
    for i, (first, second) in enumerate(rows):
        data[f"{name}_{i}_{a}"], data[f"{name}_{i}_{b}"] = first, second


def set_metadata(data: dict, metadata: dict[str, str]) -> None:
    set_rows(data, "metadata", ("key", "value"), list(metadata.items()))


def set_custom_fields(data: dict, fields: list[tuple[str, str]]) -> None:
    set_rows(data, "invoice_custom_fields", ("name", "value"), fields)


def set_parts(data: dict, name: str, parts: dict[str, str | None]) -> None:
    for part, value in parts.items():
        data[f"{name}_{part}"] = value or ""


def set_locales(data: dict, locales: list[str]) -> None:
    for i in range(5):
        data[f"preferred_locales_{i}"] = locales[i] if i < len(locales) else ""


def post(client, customer, data: dict):
    return client.post(change_url(customer), data)


def edit(client, customer, *, metadata=None, address=None, shipping=None, custom_fields=None, locales=None, **fields):
    """GET the change form, change what is given, POST it; returns the response."""
    data = form_data(client, customer)
    if metadata is not None:
        set_metadata(data, metadata)
    if address is not None:
        set_parts(data, "address", address)
    if shipping is not None:
        set_parts(data, "shipping", shipping)
    if custom_fields is not None:
        set_custom_fields(data, custom_fields)
    if locales is not None:
        set_locales(data, locales)
    for name, value in fields.items():
        if value is True:
            data[name] = "on"
        elif value is False:
            data.pop(name, None)
        else:
            data[name] = "" if value is None else str(value)
    return post(client, customer, data)
