"""The corpus, built once per session into a temporary folder."""

from __future__ import annotations

import pytest

from tests.corpus.builders import Case, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))
