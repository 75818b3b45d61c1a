"""The request path, in one direction: the only place that calls the stages in order.

identity -> statement analysis -> policy decision (views seen through) ->
audit (decision record, durable) -> pool for the decision's ``(target,
db_user)`` -> execution (in flight, so a revocation can cancel it) -> audit
(outcome record) -> reply. ``authorize.Authorizer`` analyses, decides and
records the decision; ``core.Pipeline`` authenticates and runs buffered
statements, transactions and streams; ``stream.Stream`` frames a streamed
statement and records how it ended. Every stage fails closed.
"""

from gateway.pipeline.authorize import StatementRequest
from gateway.pipeline.core import Pipeline
from gateway.pipeline.stream import Stream, StreamBroken

__all__ = ["Pipeline", "StatementRequest", "Stream", "StreamBroken"]
