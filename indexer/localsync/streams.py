"""Stream records read with the DynamoDB Streams API, reshaped as Lambda delivers them (the
shaping lives in indexer/lambdashape.py, which the Lambda package ships too)."""

from __future__ import annotations

from ..lambdashape import json_safe, lambda_record

__all__ = ["json_safe", "lambda_record"]
