"""One formatter for validation errors, one URL redactor: every front end says
the same thing the same way."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from runyard.settings import redact_url
from runyard.validation import describe


class Input(BaseModel):
    count: int
    name: str


def errors_of(raw: object) -> ValidationError:
    try:
        Input.model_validate(raw)
    except ValidationError as exc:
        return exc
    raise AssertionError("valid")


def test_describe_names_where_and_why_then_how_many_more() -> None:
    exc = errors_of({"count": "x"})
    assert describe(exc.errors(), root="input") == (
        "count: Input should be a valid integer, unable to parse string as an integer; name: Field required"
    )
    assert describe(exc.errors(), limit=1).endswith("(and 1 more)")


def test_describe_names_the_whole_value_by_its_root_and_drops_fastapis_sources() -> None:
    assert describe(errors_of([1]).errors(), root="input").startswith("input: ")
    assert describe([{"loc": ("body", "a", 0), "msg": "Value error, too big"}]) == "a.0: too big"


def test_redact_url_hides_passwords_and_keeps_everything_else() -> None:
    assert redact_url("postgresql://u:s3cret@db:5432/x?pool_max=4") == "postgresql://u:***@db:5432/x?pool_max=4"
    assert redact_url("postgresql://u@db/x?password=s3cret") == "postgresql://u@db/x?password=***"
    assert redact_url("redis://:p@ss@cache:6379/0") == "redis://:***@cache:6379/0"
    for plain in ("memory://", "sqlite:///./runyard.db", "redis://127.0.0.1:6379/0?prefix=a:"):
        assert redact_url(plain) == plain
