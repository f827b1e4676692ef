"""Site datasets in the fine-tuning wizard, and the catalog's licence and group rules.

The wizard and the recipe check talk over real HTTP to :class:`fakes.FakeHub`, which answers
the catalog calls with the hub's own functions (:mod:`shopfloor.extensions.catalog_api`); the
real hub answers them in tests/integration/test_finetune_access.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import TOKEN, FakeHub
from test_finetune_wizard import REVIEWS, ReplayJob

from shopfloor.extensions.catalog_api import CatalogCheckError, path_verdicts
from shopfloor.finetune.access import SiteCatalog, check_access
from shopfloor.finetune.catalog import CARD_FILE, ModelCatalog
from shopfloor.finetune.recipe import FineTuneJob, Recipe, RecipeError
from shopfloor.resources import UserContext
from shopfloor.session.hubapi import Hub
from shopfloor.site import parse_site
from shopfloor.widgets import FineTuneWizard

ALICE = UserContext("alice", frozenset({"staff"}))


def entry(location: Path, **more: Any) -> dict[str, Any]:
    return {"description": f"{location.stem} data", "task": "classification",
            "licence": "CC0-1.0", "size": "16 kB", "location": str(location), **more}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    models = tmp_path / "catalog"
    for name in ("enc", "secret-enc"):
        (models / name).mkdir(parents=True)
        (models / name / "config.json").write_text("{}")
        (models / name / CARD_FILE).write_text(json.dumps({
            "name": name, "task": "classification", "licence": "MIT",
            "description": f"{name} encoder", "parameters": 1000}))
    data = tmp_path / "datasets"
    data.mkdir()
    for name in ("open", "licensed", "secret"):
        shutil.copy(REVIEWS, data / f"{name}.csv")
    site = parse_site({"partitions": {"cpu": {}}, "catalog": {
        "models": {"enc": {**entry(models / "enc"), "size": "1 kB"},
                   "secret-enc": {**entry(models / "secret-enc"), "groups": ["doctors"]}},
        "datasets": {"open": entry(data / "open.csv"),
                     "licensed": entry(data / "licensed.csv", licence="Custom-1.0",
                                       accept_licence=True),
                     "secret": entry(data / "secret.csv", groups=["doctors"]),
                     "replies": entry(data / "replies.jsonl", task="causal-lm")}}})
    hub = FakeHub()
    hub.catalog = (site, ALICE)
    catalog = SiteCatalog(Hub(hub.url, TOKEN, "alice"))
    wizard = FineTuneWizard(catalog=ModelCatalog(models), runs=tmp_path / "runs",
                            my_models=tmp_path / "my-models", clusters=lambda: [],
                            job_factory=ReplayJob, site_catalog=catalog)
    try:
        yield {"hub": hub, "site": site, "catalog": catalog, "wizard": wizard, "data": data,
               "models": models, "tmp": tmp_path}
    finally:
        hub.close()


def offered(wizard: FineTuneWizard) -> list[str]:
    return [value for _, value in wizard.site_dataset.options if value]


def test_wizard_offers_the_site_datasets_alice_may_use(setup: dict[str, Any]) -> None:
    wizard: FineTuneWizard = setup["wizard"]
    assert offered(wizard) == ["open", "licensed"]  # not secret (doctors), not causal-lm
    wizard.task.value = "causal-lm"
    assert offered(wizard) == ["replies"]
    wizard.task.value = "classification"
    assert not wizard.attempt(lambda: wizard.choose_site_dataset("secret"))
    assert "no classification dataset called 'secret'" in wizard.message
    wizard.choose_site_dataset("open")
    assert wizard.data_path.value == str(setup["data"] / "open.csv")
    assert "320 rows" in wizard.preview.value and "CC0-1.0" in wizard.licence.value
    assert wizard.accept_licence.layout.display == "none"
    assert wizard.attempt(wizard.next), wizard.message
    assert wizard.step == "model"
    assert [v for _, v in wizard.model.options] == ["enc"], "secret-enc is not offered"


def test_licence_must_be_accepted_before_training(setup: dict[str, Any]) -> None:
    wizard: FineTuneWizard = setup["wizard"]
    wizard.choose_site_dataset("licensed")
    assert wizard.accept_licence.layout.display == ""
    assert "Custom-1.0" in wizard.licence.value and "must accept" in wizard.licence.value
    assert not wizard.attempt(wizard.next)
    assert wizard.step == "data"
    assert "licensed is under the licence Custom-1.0" in wizard.message
    wizard.accept_licence.value = True
    for _ in range(4):  # data, model, method, compute
        assert wizard.attempt(wizard.next), wizard.message
    # Unticked after the checks passed: training itself is refused.
    wizard.go("data")
    wizard.accept_licence.value = False
    wizard.go("train")
    assert not wizard.attempt(wizard.start_training)
    assert "you must accept before training" in wizard.message and wizard.job is None
    wizard.go("data")
    wizard.accept_licence.value = True
    wizard.go("train")
    assert wizard.attempt(wizard.start_training), wizard.message
    result = wizard.wait(timeout=30)
    assert result.recipe.accepted_licences == ["licensed"]
    saved = json.loads((result.run_dir / "recipe.json").read_text())
    assert saved["accepted_licences"] == ["licensed"], "the acceptance is on record"


def test_the_recipe_check_refuses_without_the_view(setup: dict[str, Any]) -> None:
    catalog: SiteCatalog = setup["catalog"]
    data: Path = setup["data"]

    def check(**changes: Any) -> None:
        recipe = Recipe(**{"name": "r", "data": str(data / "open.csv"), "model": "enc",
                           "catalog_dir": str(setup["models"]), "runs_dir": str(setup["tmp"]),
                           **changes})
        FineTuneJob(recipe, site_catalog=catalog).check()

    check()
    with pytest.raises(RecipeError) as err:
        check(data=str(data / "licensed.csv"))
    assert "accepted_licences=['licensed']" in err.value.problems["licence"]
    check(data=str(data / "licensed.csv"), accepted_licences=["licensed"])
    with pytest.raises(RecipeError) as err:
        check(data=str(data / "licensed.csv"), accepted_licences=["open"])
    assert "licence" in err.value.problems
    # Named by path, through a link, or through "..": refused all the same.
    link = setup["tmp"] / "mine.csv"
    link.symlink_to(data / "secret.csv")
    for path in (data / "secret.csv", link, data / "x" / ".." / "secret.csv"):
        with pytest.raises(RecipeError) as err:
            check(data=str(path))
        assert "your groups may not use" in err.value.problems["data"], path
        if path == link:  # the restricted entry's name and location are not told
            assert "secret" not in err.value.problems["data"]
    with pytest.raises(RecipeError) as err:
        check(model="secret-enc")
    assert "site model your groups may not use" in err.value.problems["model"]


def test_wizard_refuses_a_restricted_dataset_typed_as_a_path(setup: dict[str, Any]) -> None:
    wizard: FineTuneWizard = setup["wizard"]
    wizard.data_path.value = str(setup["data"] / "secret.csv")
    assert not wizard.attempt(wizard.next)
    assert wizard.step == "data" and "your groups may not use" in wizard.message


def test_a_hub_that_cannot_answer_refuses(setup: dict[str, Any]) -> None:
    setup["hub"].fail["/shopfloor/catalog/check"] = (500, "boom")
    problems = check_access(setup["catalog"], data=setup["data"] / "open.csv", model=None)
    assert "cannot check the site catalog's permissions" in problems["data"]


@pytest.mark.parametrize("body,field", [
    ({}, "paths"), ([], "paths"), ({"paths": []}, "paths"), ({"paths": "/x"}, "paths"),
    ({"paths": ["/x"] * 51}, "paths"), ({"paths": ["relative.csv"]}, "paths.0"),
    ({"paths": ["/ok", 3]}, "paths.1"), ({"paths": ["/a\x00b"]}, "paths.0"),
    ({"paths": ["/" + "a" * 5000]}, "paths.0"),
])
def test_check_requests_are_validated(setup: dict[str, Any], body: Any, field: str) -> None:
    with pytest.raises(CatalogCheckError) as err:
        path_verdicts(setup["site"], ALICE, body)
    assert field in err.value.problems


def test_verdicts_compare_paths_and_never_name_restricted_entries(
        setup: dict[str, Any]) -> None:
    data, models, site = setup["data"], setup["models"], setup["site"]
    paths = [str(data / "open.csv"), str(data / "secret.csv"),
             str(models / "secret-enc" / "model.safetensors"), "/etc/passwd",
             str(data / "open.csv.bak")]
    verdicts = path_verdicts(site, ALICE, {"paths": paths})["paths"]
    assert verdicts[paths[0]] == {"kind": "dataset", "name": "open", "usable": True,
                                  "licence": "CC0-1.0", "accept_licence": False}
    assert verdicts[paths[1]] == {"kind": "dataset", "name": None, "usable": False}
    assert verdicts[paths[2]] == {"kind": "model", "name": None, "usable": False}
    assert verdicts[paths[3]]["kind"] is None and verdicts[paths[4]]["kind"] is None
    doctor = UserContext("dora", frozenset({"doctors"}))
    assert path_verdicts(site, doctor, {"paths": paths[1:2]})["paths"][paths[1]]["usable"]
