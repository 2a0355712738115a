"""dotenv parsing against compose-go's fixtures and rules (expectations from its godotenv_test.go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackd.errors import SpecError
from stackd.spec.dotenv import parse_dotenv, read_dotenv
from stackd.spec.environment import build_environment

FIXTURES = Path(__file__).parents[3].parent / "shared/corpus/compose-go/dotenv/fixtures"

FIXTURE_VALUES = {
    "plain.env": {"OPTION_A": "1", "OPTION_B": "2", "OPTION_C": "3", "OPTION_D": "4", "OPTION_E": "5",
                  "OPTION_F": "", "OPTION_G": "", "OPTION_H": "my string"},
    "exported.env": {"OPTION_A": "2", "OPTION_B": "\\n"},
    "equals.env": {"OPTION_A": "postgres://localhost:5432/database?sslmode=disable"},
    "quoted.env": {"OPTION_A": "1", "OPTION_B": "2", "OPTION_C": "", "OPTION_D": "\\n", "OPTION_E": "1",
                   "OPTION_F": "2", "OPTION_G": "", "OPTION_H": "\n", "OPTION_I": "echo 'asd'",
                   "OPTION_J": "first line\nsecond line\nthird line\nand so on", "OPTION_K": "Let's go!",
                   "OPTION_Z": "last value"},
    "unquoted.env": {"OPTION_A": "some quoted phrase", "OPTION_B": "first one with an unquoted phrase",
                     "OPTION_C": "then another one with an unquoted phrase",
                     "OPTION_D": "then another one with an unquoted phrase special è char",
                     "OPTION_E": "then another one quoted phrase"},
    "substitutions.env": {"OPTION_A": "1", "OPTION_B": "1", "OPTION_C": "1", "OPTION_D": "1_1", "OPTION_E": ""},
    "utf8-bom.env": {"OPTION_A": "1", "OPTION_B": "2", "OPTION_C": "3", "OPTION_D": "4", "OPTION_E": "5"},
    "special.env": {"VAR-WITH-DASHES": "dashes", "VAR.WITH.DOTS": "dots", "VAR_WITH_UNDERSCORES": "underscores"},
}


@pytest.mark.parametrize("name", sorted(FIXTURE_VALUES))
def test_fixture_values(name: str) -> None:
    got = read_dotenv(str(FIXTURES / name))
    got = {k: v.replace("\r\n", "\n") for k, v in got.items()}
    for key, value in FIXTURE_VALUES[name].items():
        assert got[key] == value, key


def test_plain_has_exactly_its_keys() -> None:
    # like compose-go's GetEnvFromFile (project .env), a key starting with a digit is kept
    assert read_dotenv(str(FIXTURES / "plain.env")) == {**FIXTURE_VALUES["plain.env"], "456": "ABC"}


def test_substitutions_with_lookup_precedence() -> None:
    env = {"OPTION_A": "5"}
    got = read_dotenv(str(FIXTURES / "substitutions.env"), env.get)
    assert got == {"OPTION_A": "1", "OPTION_B": "5", "OPTION_C": "5", "OPTION_D": "5_5", "OPTION_E": ""}
    got = read_dotenv(str(FIXTURES / "substitutions-default.env"), env.get)
    assert got == {"OPTION_A": "5", "OPTION_B": "5", "OPTION_C": "5", "OPTION_D": "5_5", "OPTION_E": ""}
    got = read_dotenv(str(FIXTURES / "substitutions-default.env"))
    assert got == {"OPTION_A": "1", "OPTION_B": "1", "OPTION_C": "1", "OPTION_D": "1_1", "OPTION_E": ""}


def test_inherited() -> None:
    env = {"VAR_TO_BE_LOADED_FROM_OS_ENV": "SOME_RANDOM_VALUE"}
    assert read_dotenv(str(FIXTURES / "inherited-multi-var.env"), env.get) == {
        "VAR_TO_BE_LOADED_FROM_OS_ENV": "SOME_RANDOM_VALUE", "foo": "bar", "bar": "baz"}
    assert read_dotenv(str(FIXTURES / "inherited-single-var.env"), env.get) == env
    assert "VARIABLE_NOT_FOUND" not in read_dotenv(str(FIXTURES / "inherited-not-found.env"))


def test_invalid_fixture_names_the_line() -> None:
    with pytest.raises(SpecError) as err:
        read_dotenv(str(FIXTURES / "invalid1.env"))
    assert err.value.position is not None and err.value.position.line == 7
    assert "cannot contain a space" in err.value.message


PARSING = [
    ("FOO=bar", "FOO", "bar"), ("FOO =bar", "FOO", "bar"), ("FOO= bar", "FOO", "bar"),
    ('FOO="bar"', "FOO", "bar"), ("FOO='bar'", "FOO", "bar"),
    ('FOO="escaped\\"bar"', "FOO", 'escaped"bar'), ('FOO="\\"quoted\\""', "FOO", '"quoted"'),
    ("FOO=\"'d'\"", "FOO", "'d'"), ("OPTION_A: 1", "OPTION_A", "1"), ("OPTION_A: Foo=bar", "OPTION_A", "Foo=bar"),
    ("OPTION_A=1:B", "OPTION_A", "1:B"), ("export OPTION_A=2", "OPTION_A", "2"),
    ("export OPTION_B='\\n'", "OPTION_B", "\\n"), ("export exportFoo=2", "exportFoo", "2"),
    ("exportFOO=2", "exportFOO", "2"), ("export_FOO =2", "export_FOO", "2"), ("export.FOO= 2", "export.FOO", "2"),
    ("export\tOPTION_A=2", "OPTION_A", "2"), ("  export OPTION_A=2", "OPTION_A", "2"),
    ('export OPTION_A="export A"', "OPTION_A", "export A"), ('FOO="bar\\nbaz"', "FOO", "bar\nbaz"),
    ("FOO=a\\tb", "FOO", "a\\tb"), ('FOO="a\\tb"', "FOO", "a\tb"),
    ('KEY="Z\\aZ\\bZ\\fZ\\nZ\\rZ\\tZ\\vZ\\\\Z\\0123Z"', "KEY", "Z\aZ\bZ\fZ\nZ\rZ\tZ\vZ\\ZSZ"),
    ("FOO.BAR=foobar", "FOO.BAR", "foobar"), ("FOO=foobar=", "FOO", "foobar="), ("FOO=bar ", "FOO", "bar"),
    ("FOO=bar # this is foo", "FOO", "bar"), ("FOO=bar #", "FOO", "bar"),
    ("FOO=123#not-an-inline-comment", "FOO", "123#not-an-inline-comment"),
    ('FOO="bar#baz" # comment', "FOO", "bar#baz"), ("FOO='bar#baz' # comment", "FOO", "bar#baz"),
    ('FOO="bar\\n\\ b\\az"', "FOO", "bar\n\\ b\az"), ('FOO="bar\\\\\\n\\ b\\az"', "FOO", "bar\\\n\\ b\az"),
    ('FOO="bar\\nbaz\\\\"', "FOO", "bar\nbaz\\"), ('="value"', "", "value"), (" KEY =value", "KEY", "value"),
    ('KEY="\\0123"', "KEY", "S"), ('KEY="\\x07"', "KEY", "\\x07"), ('KEY="\\u12e4"', "KEY", "\\u12e4"),
    ("FOO=test\nBAR=${FOO}bar", "BAR", "testbar"), ("BAR=$FOO", "BAR", ""),
    ("BAR='quote $FOO'", "BAR", "quote $FOO"), ('FOO="foo\\$BAR"', "FOO", "foo$BAR"),
    ('FOO=test\nBAR="foo\\${FOO} ${FOO}"', "BAR", "foo${FOO} test"),
    ('U="a:3333\nb:443"', "U", "a:3333\nb:443"), ("A=${X:-dflt}", "A", "dflt"),
]


@pytest.mark.parametrize(("text", "key", "value"), PARSING)
def test_parsing(text: str, key: str, value: str) -> None:
    assert parse_dotenv(text)[key] == value


@pytest.mark.parametrize("text", ['KEY="', 'KEY="value', 'KEY="value\\"', "KEY='value\"", "KEY='value\\'"])
def test_unterminated(text: str) -> None:
    with pytest.raises(SpecError, match="unterminated quoted value"):
        parse_dotenv(text)


def test_bad_line_message() -> None:
    with pytest.raises(SpecError) as err:
        parse_dotenv("A=1\nlol$wut\n", "x.env")
    assert str(err.value) == "x.env:2:4: unexpected character '$' in variable name 'lol$wut'"


def test_multiple_files_and_environ_precedence(tmp_path: Path) -> None:
    base, over = tmp_path / "base.env", tmp_path / "override.env"
    base.write_text('ENV_HOSTNAME=localhost\nENV_MY_URL="http://${ENV_HOSTNAME}"\n')
    over.write_text('ENV_HOSTNAME=dev.my-company.com\nENV_MY_URL="http://${ENV_HOSTNAME}"\n')
    files = [str(base), str(over)]
    assert build_environment({}, files) == {"ENV_HOSTNAME": "dev.my-company.com", "ENV_MY_URL": "http://dev.my-company.com"}
    env = build_environment({"ENV_HOSTNAME": "host.local"}, files)
    assert env == {"ENV_HOSTNAME": "host.local", "ENV_MY_URL": "http://host.local"}


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a directory"):
        build_environment({}, [str(tmp_path)])
