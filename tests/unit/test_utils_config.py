from dataclasses import dataclass, field

import pytest

from pykaldi2.utils.config import ConfigMixin, check_keys, read_yaml_mapping
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
