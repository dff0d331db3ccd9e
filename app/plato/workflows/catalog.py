"""Every workflow type of the platform: what the CPU workers register and what replay knows."""

from __future__ import annotations

from app.plato.workflows.chunks import ChunkRangeWorkflow
from app.plato.workflows.encode import EncodeWorkflow
from app.plato.workflows.inspect import InspectWorkflow
from app.plato.workflows.ladder import LadderWorkflow
from app.plato.workflows.pipeline import FanoutBatchWorkflow, PipelineWorkflow
from app.plato.workflows.quality import QualityWorkflow
from app.plato.workflows.segment import EncodeSegmentWorkflow
from app.plato.workflows.webhooks import WebhookWorkflow

WORKFLOWS: tuple[type, ...] = (
    EncodeWorkflow,
    ChunkRangeWorkflow,
    InspectWorkflow,
    PipelineWorkflow,
    FanoutBatchWorkflow,
    EncodeSegmentWorkflow,
    QualityWorkflow,
    LadderWorkflow,
    WebhookWorkflow,
)
