"""One params mechanism for every check: a pydantic model per check type (``Params`` on the
class, a subclass of :class:`CheckParams`) that rejects unknown keys, validated when the check is
built, so a typo (``min_speedp``) is an error at config load, never a silently ignored key."""
from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from ..suggest import did_you_mean


class CheckParamError(ValueError):
    """A check's ``params`` are wrong; ``key`` is the param's name (the suite and config loaders
    add the file and the check's position)."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"params.{key}: {problem}")


class CheckParams(BaseModel):
    """Base of every check's params model: unknown keys are rejected. A field validator raising
    ``ValueError("must be ...")`` becomes ``CheckParamError(field, "must be ...")``; a model
    validator's ValueError (a problem of several fields, or worded as ``params.<key> ...``) is
    raised as it is."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def parse_params(model: type[CheckParams], raw: Mapping[str, Any] | None, *, check_type: str,
                 check_name: str) -> dict[str, Any]:
    """``raw`` validated by ``model``, defaults filled in, as a plain dict."""
    try:
        return model.model_validate(dict(raw or {})).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:
            raise ValueError(msg) from None
        if err.get("type") == "missing":
            raise CheckParamError(".".join(loc), "required") from None
        if err.get("type") == "extra_forbidden":
            hint = did_you_mean(loc[-1], sorted(model.model_fields), listing="known")
            where = f", in check {check_name!r}" if check_name != check_type else ""
            raise CheckParamError(loc[0], f"unknown param for check type {check_type!r}{hint}{where}") from None
        raise CheckParamError(".".join(loc), msg) from None
