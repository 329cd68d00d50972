"""Stages as pure functions of (params, inputs), their content-addressed cache, and a local resolver."""

from raygrid.pipeline.cache import StageCache
from raygrid.pipeline.resolve import LocalResolver, StageLedger
from raygrid.pipeline.spec import StageContext, StageSpec, stage

__all__ = ["LocalResolver", "StageCache", "StageContext", "StageLedger", "StageSpec", "stage"]
