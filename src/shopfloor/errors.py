"""The one error root: what went wrong, per field, in words a user can act on.

Every error Shopfloor raises for a person to fix (a resource request, an app to publish, a
workshop setting, training data, a recipe, a refusal from the hub or one of its services)
is a :class:`ShopfloorError`. It carries

* ``problems``: field → what is allowed there (empty when the error is not about fields);
* ``user_message``: plain words for people that name each bad field, which is what panels
  show (they never look at the class of an error);
* ``http_status``: the status a hub API or service answers with, and :meth:`as_json`, the one
  body they send (``message`` and ``problems``, which the session clients read back).

``str(error)`` stays the short admin/log text (``field: message; ...``). Subclasses keep their
builtin bases (``ValueError``, ``RuntimeError``, ``LookupError``) so existing ``except``
clauses keep working. This module is core: it imports nothing from Shopfloor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

#: What leads the list of fields to change when the error has no message of its own.
CHANGE_LEAD = "Please change:"


class ShopfloorError(Exception):
    """Something a user asked for or gave cannot be used as it is.

    ``message`` is a sentence for people (optional when ``problems`` says it all);
    ``problems`` maps each bad field to what is allowed there.
    """

    #: The HTTP status a hub API or service answers this error with.
    http_status: ClassVar[int] = 400
    #: How ``str()`` joins the problems when there is no message (data errors read better
    #: one per line in a terminal).
    problems_separator: ClassVar[str] = "; "

    def __init__(self, message: str = "", problems: Mapping[str, str] | None = None) -> None:
        self.problems: dict[str, str] = {str(k): str(v) for k, v in (problems or {}).items()}
        self.message = message
        super().__init__(message or self.problems_separator.join(self._problem_lines()))

    def field_label(self, field: str) -> str:
        """How a field is named to people; subclasses may word their field names."""
        return field

    def _problem_lines(self, labelled: bool = False) -> list[str]:
        name = self.field_label if labelled else str
        return [f"{name(field)}: {text}" for field, text in self.problems.items()]

    def _repeats_problems(self) -> bool:
        """True when the message only repeats the problems (as services send them back)."""
        lines = self._problem_lines()
        return self.message.replace("\n", "; ") in ("; ".join(lines), "")

    @property
    def user_message(self) -> str:
        """What a person reads: the message, and each field to change with what is allowed.

        One problem stays on one line (``Please change: cpus: at most 8``); several, or a
        message of the error's own, are listed one per line under it.
        """
        if not self.problems:
            return str(self)
        lines = self._problem_lines(labelled=True)
        if self._repeats_problems():
            if len(lines) == 1:
                return f"{CHANGE_LEAD} {lines[0]}"
            lead = CHANGE_LEAD
        else:
            lead = self.message
        return "\n".join([lead, *(f"• {line}" for line in lines)])

    def as_json(self) -> dict[str, Any]:
        """The body every hub API and service answers with for this error."""
        return {"status": self.http_status, "message": str(self), "problems": self.problems}

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross processes (Ray tasks, job runners); rebuild them from their state, not
        # by calling ``__init__`` with ``args``, which subclasses define differently.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[ShopfloorError], args: tuple[Any, ...],
             state: dict[str, Any]) -> ShopfloorError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


__all__ = ["CHANGE_LEAD", "ShopfloorError"]
