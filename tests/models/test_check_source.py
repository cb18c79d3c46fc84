"""model.path / model.reference / eval.reference: a value that is neither a model directory nor a hub id is one
line naming the field and the value, never a hub library's traceback."""

import pytest

from alignctl.errors import UsageError
from alignctl.models.loading import check_source


@pytest.mark.parametrize("value", ["modèle", "two words", "a/b/c/d", "-dash"])
def test_a_value_that_is_no_directory_and_no_hub_id_is_one_line(value):
    with pytest.raises(UsageError, match=f"model.path={value} is not a local directory, nor a hub id"):
        check_source("model.path", value)


def test_a_directory_without_config_json_is_named(tmp_path):
    with pytest.raises(UsageError, match=f"model.path={tmp_path} is not a Hugging Face model directory"):
        check_source("model.path", str(tmp_path))


def test_a_model_directory_is_taken_as_it_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert check_source("model.path", str(tmp_path)) == str(tmp_path)
