from dataclasses import dataclass, field

import pytest

from pykaldi2.utils.config import ConfigMixin, check_keys, option, read_yaml_mapping
from pykaldi2.utils.errors import DataError, Pykaldi2Error


@dataclass
class _Inner(ConfigMixin):
    sizes: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        self.sizes = tuple(self.sizes)


@dataclass
class _Outer(ConfigMixin):
    beam: float = 13.0
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self) -> None:
        self.build_sections()
        if self.beam <= 0:
            raise Pykaldi2Error("beam must be > 0")


def test_round_trip_nested_and_yaml_safe(tmp_path):
    import yaml

    cfg = _Outer.from_dict({"beam": 5.0, "inner": {"sizes": [3]}})
    assert cfg.inner == _Inner((3,))
    d = cfg.to_dict()
    assert d == {"beam": 5.0, "inner": {"sizes": [3]}}
    yaml.safe_dump(d)  # tuples would make safe_dump fail
    assert _Outer.from_dict(d) == cfg
    assert _Outer.from_dict(None) == _Outer()


def test_unknown_keys_name_them_and_the_valid_ones():
    with pytest.raises(
        DataError, match=r"_Outer: unknown keys bean, x\. Fix: valid keys: beam, inner"
    ):
        _Outer.from_dict({"bean": 1, "x": 2})
    with pytest.raises(DataError, match="inner section: unknown keys size"):
        _Inner.from_dict({"size": 1}, where="inner section")
    with pytest.raises(DataError, match="unknown fbank options foo"):
        check_keys({"foo": 1}, ["bar"], what="fbank options")
    with pytest.raises(DataError, match="expected a mapping"):
        _Outer.from_dict([1, 2])
    with pytest.raises(DataError, match="_Outer.inner: unknown keys size"):
        _Outer.from_dict({"inner": {"size": 1}})


def test_empty_section_means_defaults():
    assert _Outer.from_dict({"inner": None}) == _Outer()
    assert _Outer(inner={"sizes": [4, 5]}).inner.sizes == (4, 5)


def test_errors_name_the_source_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("beam: -1\n")
    with pytest.raises(DataError, match=r"c\.yaml: beam must be > 0"):
        _Outer.from_yaml(p)
    p.write_text("inner: {sizes: 3}\n")  # a TypeError inside the constructor
    with pytest.raises(DataError, match=r"c\.yaml: bad option value"):
        _Outer.from_yaml(p)
    p.write_text("beam: [1\n")
    with pytest.raises(DataError, match=r"c\.yaml: not valid YAML"):
        read_yaml_mapping(p)
    p.write_text("- 1\n")
    with pytest.raises(DataError, match="must be a YAML mapping"):
        read_yaml_mapping(p)
    with pytest.raises(DataError, match="cannot read config"):
        read_yaml_mapping(tmp_path / "missing.yaml")
    p.write_text("")
    assert _Outer.from_yaml(p) == _Outer()
    # without a source, construction errors keep their own type
    with pytest.raises(Pykaldi2Error, match="beam must be > 0") as e:
        _Outer.from_dict({"beam": 0})
    assert not isinstance(e.value, DataError)


# --- typed, range-checked fields (issue 18 item 8) ------------------------------------------
def _config_classes():
    """Every dataclass named *Config / *Options in pykaldi2 (all modules imported)."""
    import dataclasses
    import importlib
    import pkgutil

    import pykaldi2

    found = set()
    for m in pkgutil.walk_packages(pykaldi2.__path__, "pykaldi2."):
        if m.name.endswith("__main__"):
            continue
        for obj in vars(importlib.import_module(m.name)).values():
            if (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == m.name
                and obj.__name__.endswith(("Config", "Options"))
            ):
                found.add(obj)
    return sorted(found, key=lambda c: c.__name__)


def test_every_config_class_checks_the_type_of_every_number_and_flag():
    """One mechanism for all: each config class is a ConfigMixin, and a wrong type for any of
    its int / float / bool fields is a DataError naming Class.field (before, most ended in a
    TypeError from a comparison in __post_init__, or later inside torch)."""
    import dataclasses

    from pykaldi2.utils.config import _field_types

    classes = _config_classes()
    assert len(classes) > 30
    assert not [c.__name__ for c in classes if not issubclass(c, ConfigMixin)]
    checked = 0
    for cls in classes:
        hints = _field_types(cls)
        for f in dataclasses.fields(cls):
            if f.init and hints.get(f.name) in (int, float, bool):
                with pytest.raises(DataError, match=rf"{cls.__name__}\.{f.name}: expected"):
                    cls(**{f.name: "abc"})
                checked += 1
    assert checked > 200


def test_field_types_ranges_and_conversions():
    @dataclass
    class _C(ConfigMixin):
        lr: float = option(0.1, gt=0)
        n: int = option(2, ge=1, le=4)
        mode: str = option("a", choices=("a", "b"))
        dirs: list[str] = field(default_factory=list)
        pair: tuple[float, float] = (0.0, 1.0)
        flag: bool = False
        inner: _Inner = field(default_factory=_Inner)

        def __post_init__(self) -> None:
            self.build_sections()

    assert _C(lr="2e-5").lr == 2e-5  # YAML 1.1 reads 2e-5 as a string
    assert _C.from_dict({"dirs": "one", "pair": [1, 2]}).pair == [1, 2]
    assert _C(inner={"sizes": [3]}).inner.sizes == (3,)
    for kw, msg in [
        ({"lr": 0}, r"_C\.lr must be > 0, got 0"),
        ({"lr": "fast"}, r"_C\.lr: expected a number, got 'fast'"),
        ({"n": 1.5}, r"_C\.n: expected an integer, got 1\.5"),
        ({"n": True}, r"_C\.n: expected an integer"),
        ({"n": 5}, r"_C\.n must be <= 4, got 5"),
        ({"mode": "c"}, r"_C\.mode must be one of 'a', 'b', got 'c'"),
        ({"dirs": [1]}, r"_C\.dirs: expected a list of strings"),
        ({"pair": [1, 2, 3]}, r"_C\.pair: expected a list of 2 numbers"),
        ({"flag": "yes"}, r"_C\.flag: expected true or false"),
        ({"inner": 3}, r"_C\.inner: expected a _Inner section"),
        ({"inner": {"sizes": ["x"]}}, r"_C\.inner\.sizes: expected a list of integers"),
    ]:
        with pytest.raises(DataError, match=msg):
            _C.from_dict(kw)
        if "inner" not in kw or isinstance(kw["inner"], int):
            with pytest.raises(DataError, match=msg.replace(r"_C\.inner\.", r"_Inner\.")):
                _C(**kw)  # direct construction checks too
    with pytest.raises(DataError, match=r"c\.yaml: _C\.lr must be > 0"):
        _C.from_dict({"lr": -1}, source="c.yaml")
