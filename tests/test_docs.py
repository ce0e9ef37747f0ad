"""The docs model table is generated from the registry; a stale table fails here (fix: `zoo docs`)."""

from zoo.cli import main


def test_docs_model_table_is_up_to_date(capsys):
    code = main(["docs", "--check"])
    assert code == 0, "docs/index.md is stale: run `zoo docs` and commit the result"
