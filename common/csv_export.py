"""Streaming CSV exports for the admin: rows are written as the database hands them over, never all in memory.

Times are written on the operators' clock (TIME_ZONE, with the offset), so a spreadsheet shows what the admin
showed. A cell that a spreadsheet would run as a formula (=, @, or + / - not followed by a plain number) is
prefixed with an apostrophe; phone numbers like +5561… stay as they are.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

Column = tuple[str, Callable[[Any], Any]]
_FORMULA_START = ("=", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-][\d\s().,-]*$")


class _Echo:
    """The file-like object csv.writer needs: it hands each formatted line back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat(timespec="seconds") if timezone.is_aware(value) else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if text.startswith(_FORMULA_START) or (text[:1] in "+-" and not _PLAIN_NUMBER.match(text)):
        return "'" + text
    return text


def csv_stream(*, header: Sequence[str], rows: Iterable[Sequence[Any]], language: str | None = None
               ) -> Iterator[str]:
    """The lines of the file. The rows are read while the server sends the response, after the view returned:
    the request's language is kept for the labels they contain."""
    writer = csv.writer(_Echo())
    with translation.override(language):
        yield "\ufeff"  # a BOM: spreadsheets then read the file as UTF-8 (accents in names and reasons)
        yield writer.writerow([str(h) for h in header])
        for row in rows:
            yield writer.writerow([csv_cell(v) for v in row])


def csv_response(*, filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    stream = csv_stream(header=header, rows=rows, language=translation.get_language())
    response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_export_action(columns: Sequence[Column], *, basename: str):
    """An admin action that streams the selected rows (or all of them, with "select all") as CSV.

    Exporting changes nothing, so whoever may see the list may export it (the "view" permission).
    """

    @admin.action(description=_("Export selected to CSV"), permissions=["view"])
    def export_csv(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        rows = ([getter(obj) for _header, getter in columns] for obj in queryset.iterator(chunk_size=2000))
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
        return csv_response(filename=f"{basename}-{stamp}.csv", header=[h for h, _getter in columns], rows=rows)

    return export_csv
