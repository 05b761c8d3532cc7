"""Issue 12's corpus: models nobody on the team wrote load, list named layers (module paths
where the file records them), and run the gradient-free analyses with finite numbers;
activation maximisation runs where the input is continuous.

Each check that fails today is marked ``xfail(strict=True)`` with its failure class and
error (``tests/corpus/expected.py``): the test stays green, documents the gap, and turns
red when a fix lands, so that the marker is removed.
"""

from __future__ import annotations

import builtins

import pytest

from layerlens import errors
from tests.corpus import checks
from tests.corpus.builders import CASE_IDS, Case
from tests.corpus.expected import EXPORT_FAILURES, KNOWN

pytestmark = pytest.mark.slow
ANALYSED = [case_id for case_id in CASE_IDS if case_id not in EXPORT_FAILURES]


def _error_type(reason: str) -> type[BaseException]:
    """The exception a known failure raises: ``issue 12 class N: <Type>: ...``. A failure of
    another type (a refusal turned crash) is not the known one and fails the test."""
    name = reason.split(": ")[1]
    found = getattr(errors, name, None) or getattr(builtins, name)
    assert isinstance(found, type) and issubclass(found, BaseException), reason
    return found


def _cases(check: str) -> list[object]:
    def marks(case_id: str) -> list[pytest.MarkDecorator]:
        reason = KNOWN.get((check, case_id))
        return [] if reason is None else [
            pytest.mark.xfail(strict=True, raises=_error_type(reason), reason=reason)]
    return [pytest.param(case_id, id=case_id, marks=marks(case_id)) for case_id in ANALYSED]


def _case(corpus: dict[str, Case], case_id: str) -> Case:
    case = corpus[case_id]
    assert case.model is not None, f"torch could not export {case_id}: {case.export_error}"
    return case


def test_torch_fails_only_the_exports_it_is_known_to_fail(corpus):
    """An export torch cannot make is not layerlens's failure, but it is not silently
    dropped either: when torch or transformers start making it, it joins the corpus."""
    failed = {case.id: case.export_error for case in corpus.values() if case.model is None}
    assert set(failed) == set(EXPORT_FAILURES), failed


@pytest.mark.parametrize("case_id", _cases("load"))
def test_loads_with_named_layers(corpus, case_id):
    case = _case(corpus, case_id)
    checks.check_layers(case, checks.load(case))


@pytest.mark.parametrize("case_id", _cases("analyses"))
def test_gradient_free_analyses(corpus, case_id, tmp_path):
    case = _case(corpus, case_id)
    names = [layer.name for layer in checks.load(case).layers]
    report = checks.run(case, tmp_path, checks.GRADIENT_FREE,
                        layers=checks.spread(names, checks.TEST_LAYERS),
                        max_samples=checks.TEST_SAMPLES)
    checks.check_gradient_free(case, report)


@pytest.mark.parametrize("case_id", _cases("act_max"))
def test_activation_maximization(corpus, case_id, tmp_path):
    case = _case(corpus, case_id)
    names = [layer.name for layer in checks.load(case).layers]
    report = checks.run(case, tmp_path, checks.ACT_MAX,
                        layers=checks.spread(names, checks.ACT_MAX_LAYERS),
                        max_samples=checks.TEST_SAMPLES)
    checks.check_act_max(case, report)
