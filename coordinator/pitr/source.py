"""Where a point-in-time build and ``history`` read captured changes from: the segments in the vault.

A protocol, so the replay and the history listing depend on what they read,
not on how segments are stored (a directory, S3, age-encrypted).
"""

from __future__ import annotations

from typing import Protocol

from etcdguard.common.capture.segment import Segment, SegmentInfo


class SegmentSource(Protocol):
    def segment_infos(self) -> list[SegmentInfo]:
        """Every stored segment and gap, as their names say (revision and time ranges), in revision order."""
        ...

    def read_segment(self, info: SegmentInfo) -> Segment:
        """One segment, read whole and checked (common/capture/segment.py decode); SegmentError, or the
        vault's backend error, when it cannot be."""
        ...
