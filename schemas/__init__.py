"""Pandera data contracts, one per hand-over between pipeline stages."""

from schemas.clean_transactions import CleanTransactions
from schemas.customer_features import CustomerFeatures
from schemas.raw_transactions import RawTransactions
from schemas.segment_assignments import SegmentAssignments

__all__ = ["RawTransactions", "CleanTransactions", "CustomerFeatures", "SegmentAssignments"]
