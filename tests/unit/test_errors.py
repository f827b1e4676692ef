"""One error root: every error for people is a ShopfloorError with problems and a user message,
the hub APIs answer with it the same way, and panels show its user message (never a guess from
the class of the error)."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from shopfloor.apps.client import AppsError
from shopfloor.apps.model import AppInputError, AppNotFound
from shopfloor.errors import CHANGE_LEAD, ShopfloorError
from shopfloor.finetune.catalog import CARD_FILE, ModelCatalog
from shopfloor.finetune.datasets import DataError, ProblemsError
from shopfloor.finetune.recipe import RecipeError
from shopfloor.resources import RequestError
from shopfloor.session.batch import BatchError
from shopfloor.session.hubapi import HubError
from shopfloor.session.services import ServiceError
from shopfloor.session.sessions import SessionError
from shopfloor.slurm.seam import SlurmError
from shopfloor.widgets import FineTuneWizard, PublishPanel
from shopfloor.widgets.common import plain_message
from shopfloor.widgets.workshops_trainer import TrainerPanel
from shopfloor.workshops.client import WorkshopError
from shopfloor.workshops.model import WorkshopInputError

ROOT = Path(__file__).parents[2]

#: Every error class that reports fields, made the way its callers make it.
FIELD_ERRORS: list[tuple[type[ShopfloorError], Any]] = [
    (RequestError, lambda p: RequestError(p)),
    (AppInputError, lambda p: AppInputError(p)),
    (WorkshopInputError, lambda p: WorkshopInputError(p)),
    (ProblemsError, lambda p: ProblemsError(p)),
    (DataError, lambda p: DataError(p)),
    (RecipeError, lambda p: RecipeError(p)),
    (ServiceError, lambda p: ServiceError(str(RequestError(p)), p, 400)),
    (AppsError, lambda p: AppsError(str(RequestError(p)), p, 400)),
    (WorkshopError, lambda p: WorkshopError(str(RequestError(p)), p, 400)),
]
#: Errors whose message is already written for people (no fields).
MESSAGE_ERRORS: list[ShopfloorError] = [
    HubError("The hub refused this: log in again (403).", 403),
    BatchError("There is no notebook at /home/alice/x.ipynb"),
    SessionError("'A B' is not a session name you can use"),
    AppNotFound("no app alice/wave"),
    WorkshopError("Only the trainers of 'intro' may do this.", status=403),
]


@pytest.mark.parametrize(("cls", "make"), FIELD_ERRORS, ids=lambda v: getattr(v, "__name__", ""))
def test_field_errors_are_shopfloor_errors_naming_the_field(cls: type, make: Any) -> None:
    error = make({"partition": "choose one of cpu, gpu"})
    assert isinstance(error, ShopfloorError) and isinstance(error, cls)
    assert error.problems == {"partition": "choose one of cpu, gpu"}
    assert error.user_message == "Please change: partition: choose one of cpu, gpu"


@pytest.mark.parametrize("error", MESSAGE_ERRORS, ids=lambda e: str(e)[:20])
def test_message_errors_show_their_own_words(error: ShopfloorError) -> None:
    assert isinstance(error, ShopfloorError) and error.problems == {}
    assert error.user_message == str(error)


def test_builtin_bases_and_str_stay_as_callers_expect() -> None:
    # Callers catch ValueError/RuntimeError/LookupError and log str(): both are unchanged.
    assert isinstance(RequestError({}), ValueError)
    assert isinstance(DataError({}), ValueError) and isinstance(RecipeError({}), ProblemsError)
    assert isinstance(HubError("x"), RuntimeError) and isinstance(BatchError("x"), RuntimeError)
    assert isinstance(AppNotFound("x"), LookupError) and isinstance(SessionError("x"), ValueError)
    assert isinstance(WorkshopError("x"), ServiceError) and isinstance(AppsError("x"), ServiceError)
    assert str(RequestError({"cpus": "at most 8", "gpus": "none here"})) == \
        "cpus: at most 8; gpus: none here"
    assert str(DataError({"data": "empty", "label_column": "missing"})) == \
        "data: empty\nlabel_column: missing"
    assert HubError("x", 503).status == 503 and WorkshopError("x", None, 409).status == 409


def test_several_problems_are_listed_one_per_line() -> None:
    error = AppInputError({"title": "may use letters", "slug": "lowercase only"})
    assert error.user_message == "Please change:\n• title: may use letters\n• slug: lowercase only"


def test_setting_names_read_as_words_for_data_and_recipes() -> None:
    assert DataError({"label_column": "choose the column"}).user_message == \
        "Please change: label column: choose the column"
    assert RequestError({"memory_gb": "at most 64"}).user_message == \
        "Please change: memory_gb: at most 64"  # what the form and the API call the field


def test_a_message_of_its_own_leads_and_a_repeated_one_is_not_shown_twice() -> None:
    own = ShopfloorError("Cannot publish this notebook.", {"title": "may use letters"})
    assert own.user_message == "Cannot publish this notebook.\n• title: may use letters"
    # A service sends str() of its error back as the message: it only repeats the problems.
    served = WorkshopInputError({"name": "taken", "capacity": "1 to 50"})
    client_side = WorkshopError(str(served), served.problems, 400)
    assert client_side.user_message == served.user_message
    assert client_side.user_message.count("taken") == 1
    data = DataError({"data": "empty", "delimiter": "use commas"})
    assert ShopfloorError(str(data), data.problems).user_message.startswith(CHANGE_LEAD)


def test_as_json_is_the_one_answer_of_the_hub_apis_and_services() -> None:
    error = RequestError({"cmd": "is not a setting you can send"})
    assert error.as_json() == {"status": 400, "message": "cmd: is not a setting you can send",
                               "problems": {"cmd": "is not a setting you can send"}}
    assert json.loads(json.dumps(error.as_json())) == error.as_json()
    assert AppNotFound("no app a/b").as_json()["status"] == 404 == AppNotFound.http_status
    # what a session client reads back from that answer words the same for its user
    body = error.as_json()
    assert AppsError(body["message"], body["problems"], 400).user_message == error.user_message


@pytest.mark.parametrize("error", [
    RequestError({"cpus": "at most 8"}), DataError({"label_column": "missing"}),
    RecipeError({"name": "taken"}), HubError("down", 503), WorkshopError("x", {"a": "b"}, 400),
], ids=lambda e: type(e).__qualname__)
def test_errors_survive_pickling(error: ShopfloorError) -> None:
    # Ray and job runners send errors between processes.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert copy.problems == error.problems and copy.user_message == error.user_message
    assert copy.__dict__ == error.__dict__


# -- panels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [make({"cpus": "at most 8"}) for _, make in FIELD_ERRORS]
                         + MESSAGE_ERRORS, ids=lambda e: type(e).__qualname__)
def test_plain_message_is_the_user_message(error: ShopfloorError) -> None:
    assert plain_message(error) == error.user_message


def test_plain_message_for_slurm_and_the_unexpected() -> None:
    refused = SlurmError(["sbatch"], 1, "", "sbatch: error: Invalid account")
    assert plain_message(refused) == "Slurm said: Invalid account"
    assert plain_message(KeyError("x")) == \
        "Something went wrong: 'x'. Try again; if it keeps happening, tell your admin."
    assert "ValueError()" in plain_message(ValueError())  # no words: still something to report


class _PublishClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def publish(self, notebook: str, **kw: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize("error", [
    AppsError("title: may use letters; slug: lowercase only",
              {"title": "may use letters", "slug": "lowercase only"}, 400),
    AppsError("cannot reach the apps service at http://x: refused"),
])
def test_publish_panel_shows_the_user_message(error: AppsError) -> None:
    panel = PublishPanel("app.ipynb", client=_PublishClient(error))  # type: ignore[arg-type]
    panel.publish()
    assert "sf-error" in panel.status.value
    shown = re.sub(r"<[^>]+>", "", panel.status.value)
    assert shown == error.user_message.replace("'", "&#x27;")


class _TrainerClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def status(self, name: str) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize("error", [
    WorkshopError("capacity: must be between 1 and 50", {"capacity": "must be between 1 and 50"},
                  400),
    WorkshopError("Only the trainers of 'intro' may do this.", status=403),
])
def test_trainer_panel_shows_the_user_message(error: WorkshopError) -> None:
    panel = TrainerPanel("intro", _TrainerClient(error), auto_refresh=False)  # type: ignore[arg-type]
    shown = re.sub(r"<[^>]+>", "", panel.status.value).replace("&#x27;", "'")
    assert "sf-error" in panel.status.value and shown == error.user_message


def test_finetune_wizard_shows_the_user_message(tmp_path: Path) -> None:
    folder = tmp_path / "catalog" / "enc"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / CARD_FILE).write_text(json.dumps({
        "name": "enc", "task": "classification", "licence": "MIT",
        "description": "a small encoder", "parameters": 1000}))
    wizard = FineTuneWizard(catalog=ModelCatalog(folder.parent), runs=tmp_path / "runs",
                            my_models=tmp_path / "my-models", clusters=lambda: [])
    for error in (RecipeError({"label_column": "choose the column", "epochs": "1 to 100"}),
                  DataError({"data": "reviews.csv is empty (0 bytes)."}),
                  HubError("The hub had a problem: down. Try again in a minute.", 500)):
        def fail(error: Exception = error) -> None:
            raise error
        assert not wizard.attempt(fail)
        assert wizard.message == error.user_message


def test_no_view_sorts_errors_by_class_name() -> None:
    """Panels ask an error for its user message; they never compare class-name strings."""
    name_compare = re.compile(r"__name__\s*(==|!=|in\b|not in\b)|\b\w+\.__name__\s*\)\s*in\b")
    name_strings = re.compile(r"[\"'][A-Z]\w*(Error|Exception)[\"']")
    offenders = []
    for path in sorted((ROOT / "widgets").rglob("*.py")):
        text = path.read_text()
        for pattern in (name_compare, name_strings, re.compile(r"type\(\w+\)\.__name__")):
            offenders += [f"{path.name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert offenders == []
