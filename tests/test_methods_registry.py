import pytest

from studylib import methods
from studylib.methods import Method, MethodError


class _Scale(Method):
    name = "test-scale"
    family = "test"
    defaults = {"factor": 2.0}

    def check(self):
        if not 0 < self.params["factor"] < 10:
            raise MethodError("factor must be in (0, 10)")

    def apply(self, model, tokenizer, calibration=None):
        self.info["applied"] = True
        return model * self.params["factor"]


@pytest.fixture(autouse=True)
def scale_method():
    methods.REGISTRY["test-scale"] = _Scale
    yield
    methods.REGISTRY.pop("test-scale", None)


def test_build_checks_names_and_parameters_before_anything_runs():
    with pytest.raises(MethodError, match="unknown method 'nope'; known:.*test-scale"):
        methods.build("nope")
    with pytest.raises(MethodError, match="has no parameter bits"):
        methods.build("test-scale", bits=4)
    with pytest.raises(MethodError, match="factor"):
        methods.build("test-scale", factor=20)


def test_recipes_compose_in_order():
    recipe = methods.build_recipe([{"method": "test-scale"}, {"method": "test-scale", "factor": 3.0}])
    out, described = methods.apply_recipe(1.0, None, recipe)
    assert out == 6.0
    assert [d["params"]["factor"] for d in described] == [2.0, 3.0]
    assert all(d["applied"] and d["seconds"] >= 0 for d in described)
    for bad in ([], [{"factor": 2}], ["test-scale"]):
        with pytest.raises(MethodError):
            methods.build_recipe(bad)
